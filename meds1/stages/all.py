"""stage=all: the experiment's stages in order (the chain in meds1.pipeline), then the report. Each stage is
logged by its slug, so the points of a sweep say which one runs."""

from __future__ import annotations

import logging

from meds1 import pipeline
from meds1.config.schema import Config
from meds1.store.identity import stage_slug

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    records = {}
    for variant, stage in pipeline.steps(cfg):
        key = stage if variant is cfg else f"{variant.name.removeprefix(cfg.name + '-')}_{stage}"  # base_eval
        log.info("=== %s: stage %s ===", stage_slug(variant, stage), stage)
        records[key] = pipeline.run(variant, stage)
    pipeline.run(cfg, "report")
    return records
