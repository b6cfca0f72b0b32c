"""One module per stage (see the table in meds1.pipeline); each exposes `run(cfg: Config) -> dict`."""

from __future__ import annotations

from meds1 import pipeline, registry
from meds1.config import Config
from meds1.paths import registry_path, stage_slug


def record_result(cfg: Config, stage: str, record: dict) -> None:
    """Put a finished stage's record into results.json (`experiments.<slug>.results.<section>`)."""
    registry.update(
        registry_path(cfg),
        stage_slug(cfg, stage),
        pipeline.get(stage).section,
        record,
        description=cfg.description,
        config=cfg,
    )
