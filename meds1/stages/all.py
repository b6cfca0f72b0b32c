"""stage=all: the experiment's stages in order, then the report.

`steps(cfg)` is the chain, shared by the local run below and the SLURM launcher (which submits each
step as a job that waits for the step before it with `afterok`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging

from meds1.config import STAGES, Config

log = logging.getLogger(__name__)


def base_variant(cfg: Config) -> Config:
    """The same experiment evaluating the untrained model, recorded as `<name>-base`."""
    return dataclasses.replace(
        cfg, name=f"{cfg.name}-base", stages=["eval"], description=f"{cfg.model.name} without fine-tuning"
    )


def steps(cfg: Config) -> list[tuple[Config, str]]:
    """(config, stage) in run order: the experiment's stages, then the untrained model's eval if asked."""
    chain = [(cfg, stage) for stage in cfg.stages]
    if cfg.compare_base:
        chain.append((base_variant(cfg), "eval"))
    return chain


def upstream(cfg: Config, stage: str) -> str | None:
    """The stage whose output `stage` reads in this experiment (None for its first stage)."""
    order = cfg.stages if stage in cfg.stages else list(STAGES)
    index = order.index(stage)
    return order[index - 1] if index > 0 else None


def run(cfg: Config) -> dict:
    records = {}
    for variant, stage in steps(cfg):
        key = stage if variant is cfg else f"base_{stage}"
        log.info("=== %s: stage %s ===", variant.name, stage)
        records[key] = importlib.import_module(f"meds1.stages.{stage}").run(variant)
    importlib.import_module("meds1.stages.report").run(cfg)
    return records
