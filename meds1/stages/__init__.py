"""One module per stage; each exposes `run(cfg: Config) -> dict` (the record it adds to the registry)."""

from __future__ import annotations

from meds1 import registry
from meds1.config import Config
from meds1.paths import registry_path, stage_slug

RESULT_SECTIONS = {"curate": "curation", "train": "training", "eval": "eval"}  # results.json's names


def record_result(cfg: Config, stage: str, record: dict) -> None:
    """Put a finished stage's record into results.json (`experiments.<slug>.results.<section>`)."""
    registry.update(
        registry_path(cfg),
        stage_slug(cfg, stage),
        RESULT_SECTIONS[stage],
        record,
        description=cfg.description,
        config=cfg,
    )
