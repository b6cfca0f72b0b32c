"""stage=all: the experiment's stages in order in this process, then the report."""

from __future__ import annotations

import dataclasses
import importlib
import logging

from meds1.config import Config

log = logging.getLogger(__name__)


def base_variant(cfg: Config) -> Config:
    """The same experiment evaluating the untrained model, recorded as `<name>-base`."""
    return dataclasses.replace(
        cfg, name=f"{cfg.name}-base", stages=["eval"], description=f"{cfg.model.name} without fine-tuning"
    )


def run(cfg: Config) -> dict:
    records = {}
    for stage in cfg.stages:
        log.info("=== %s: stage %s ===", cfg.name, stage)
        records[stage] = importlib.import_module(f"meds1.stages.{stage}").run(cfg)
    if cfg.compare_base:
        log.info("=== %s: eval of the untrained model ===", cfg.name)
        records["base_eval"] = importlib.import_module("meds1.stages.eval").run(base_variant(cfg))
    importlib.import_module("meds1.stages.report").run(cfg)
    return records
