"""stage=train: fine-tune the model on the curated conversations; save it with its tokenizer."""

from __future__ import annotations

import logging

from meds1 import registry
from meds1.config import Config
from meds1.models import model_path
from meds1.paths import registry_path
from meds1.training.sft import train_sft
from meds1.workspace import StageWorkspace, require_complete

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    workspace = StageWorkspace(cfg, "train")
    if (record := workspace.completed_record()) is not None:
        log.info("train: %s is complete for this config; skipping (force=true reruns it)", workspace.final)
        return record
    curated = require_complete(cfg, "curate", "curated dataset")
    base = model_path(cfg.model, cfg.paths.cache)
    with workspace:
        metrics = train_sft(
            cfg.trainer,
            base,
            cfg.model.revision,
            cfg.model.dtype,
            curated / "formatted",
            workspace.path,
            cfg.seed,
        )
        record = {"model_path": str(workspace.final / "model"), "base_model": base, "metrics": metrics}
        workspace.commit(record)
    registry.update(
        registry_path(cfg), workspace.slug, "training", record, description=cfg.description, config=cfg
    )
    log.info(
        "train: %d steps, loss %.3f -> %.3f, %.0f tokens/s",
        metrics["global_step"],
        metrics["first_loss"] or float("nan"),
        metrics["last_loss"] or float("nan"),
        metrics["tokens_per_second"] or 0,
    )
    return record
