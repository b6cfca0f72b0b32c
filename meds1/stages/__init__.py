"""One module per stage (see the table in meds1.pipeline); each exposes `run(cfg: Config) -> dict`."""

from __future__ import annotations

import logging
import signal
from typing import NoReturn

from meds1.config.schema import Config
from meds1.errors import Interrupted
from meds1.store import registry
from meds1.store.identity import stage_config, stage_slug
from meds1.store.registry import registry_path
from meds1.store.workspace import StageWorkspace, stage_command
from meds1.training.preemption import Preempted

log = logging.getLogger(__name__)


def record_result(cfg: Config, stage: str, record: dict) -> None:
    """Put a finished stage's record into results.json (`experiments.<slug>.results.<stage>`), with the
    config the stage read."""
    slug, config = stage_slug(cfg, stage), stage_config(cfg, stage)
    registry.update(registry_path(cfg), slug, stage, record, description=cfg.description, config=config)


def completed(cfg: Config, workspace: StageWorkspace, main: bool = True) -> dict | None:
    """The record of the stage if it already finished with this config (skip it), else None. Output
    found under another slug is linked here and (by the `main` process) recorded under this slug too."""
    record = workspace.completed_record()
    if record is not None:
        message = "%s: %s is complete for this config; skipping (force=true reruns it)"
        log.info(message, workspace.stage, workspace.final)
        if workspace.reused_from is not None and main:
            record_result(cfg, workspace.stage, record)
    return record


def stop_training(cfg: Config, workspace: StageWorkspace, stop: Preempted) -> NoReturn:
    """End a training stage (train, rl) that checkpointed on a signal: Ctrl-C is one line naming the
    checkpoint and the command that resumes (exit 130); SIGUSR2/SIGTERM go to the handler before ours
    (submitit's requeue) or exit 128 + the signal."""
    stage = workspace.stage
    if stop.signum == signal.SIGINT:
        checkpoint = workspace.partial / "checkpoints" / f"checkpoint-{stop.step}"
        raise Interrupted(
            f"{stage}: interrupted (Ctrl-C) at step {stop.step}; its checkpoint is kept in {checkpoint}, "
            f"and `{stage_command(cfg, cfg.stage)}` resumes from it"
        ) from None
    log.warning("%s: %s; the next run resumes from it", stage, stop)
    stop.hand_over()
