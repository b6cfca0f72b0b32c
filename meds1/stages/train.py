"""stage=train: fine-tune the model on the curated conversations; save it with its tokenizer.

Run it as one process, or as one process per GPU (`torchrun --nproc_per_node=N run.py stage=train ...`, or
N SLURM tasks that each call this same `run(cfg)`). Rank 0 alone takes the stage's lock, prepares its
partial directory, commits it and writes the registry; every rank trains. A settings error (batch that
does not divide, unavailable option, missing input) is raised on every rank before any GPU work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil

from meds1.config.schema import Config
from meds1.errors import MissingInputError, UserError
from meds1.models import model_path
from meds1.stages import completed, record_result, stop_training
from meds1.store.workspace import StageWorkspace, require_complete, stage_command
from meds1.training import distributed
from meds1.training.preemption import Preempted
from meds1.training.sft import check_options, train_sft

log = logging.getLogger(__name__)


def load_formatted(cfg: Config):
    """The curated conversations (memory-mapped; training maps them in memory, leaving curate/ untouched)."""
    from datasets import load_from_disk

    directory = require_complete(cfg, "curate", "curated dataset") / "formatted"
    rerun = f"{stage_command(cfg, 'curate')} force=true"
    state = directory / "state.json"
    if not state.exists():
        raise MissingInputError(f"curated dataset {directory} is missing: run `{rerun}`")
    empty = UserError(f"the curated dataset {directory} has no rows: change curation settings, run `{rerun}`")
    # `datasets` saves an empty dataset with no data files, and cannot load that back.
    if not json.loads(state.read_text()).get("_data_files"):
        raise empty
    dataset = load_from_disk(str(directory))
    if len(dataset) == 0:
        raise empty
    if len(dataset) < cfg.trainer.global_batch_size:
        raise UserError(
            f"the curated dataset {directory} has {len(dataset)} rows, fewer than one batch "
            f"(trainer.global_batch_size={cfg.trainer.global_batch_size}): change curation settings "
            f"(curation.n_samples={cfg.curation.n_samples}), run `{rerun}`"
        )
    return dataset


def run(cfg: Config) -> dict:
    env = distributed.detect()
    cfg.trainer.batch_sizes(env.world_size)
    check_options(cfg.trainer, env.world_size)
    workspace = StageWorkspace(cfg, "train")
    if (record := completed(cfg, workspace, main=env.is_main)) is not None:
        return record
    dataset = load_formatted(cfg)
    try:
        with distributed.process_group(env), contextlib.ExitStack() as held:
            base = distributed.on_main(lambda: model_path(cfg.model, cfg.paths.cache), env)
            partial = distributed.on_main(lambda: held.enter_context(workspace).path, env)
            metrics = train_sft(
                cfg.trainer, base, cfg.model.revision, cfg.model.dtype, dataset, partial, cfg.seed, env
            )
            record = {"model_path": str(workspace.final / "model"), "base_model": base, "metrics": metrics}
            distributed.on_main(lambda: _commit(cfg, workspace, record), env)
    except Preempted as stop:
        stop_training(cfg, workspace, stop)
    if env.is_main:
        log.info(
            "train: %d steps, %s, %.0f tokens/s on %d process(es)",
            metrics["global_step"],
            loss_summary(metrics, cfg.trainer.logging_steps),
            metrics["tokens_per_second"] or 0,
            metrics["world_size"],
        )
    return record


def loss_summary(metrics: dict, logging_steps: int) -> str:
    """The losses the record holds, in words: the first and last logged, or the mean when no step was
    logged (a run shorter than the logging interval)."""
    if metrics["first_loss"] is None:
        return (
            f"mean loss {metrics['train_loss']:.3f} (no step logged: the run is shorter than "
            f"trainer.logging_steps={logging_steps})"
        )
    return f"loss {metrics['first_loss']:.3f} -> {metrics['last_loss']:.3f}"


def _commit(cfg: Config, workspace: StageWorkspace, record: dict) -> None:
    final = workspace.commit(record)
    shutil.rmtree(final / "checkpoints", ignore_errors=True)
    record_result(cfg, "train", record)
