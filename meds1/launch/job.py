"""What a SLURM job runs: one stage of one experiment, reporting its state to the registry.

A job's state comes from its stage's completion marker and its own exit, not from SLURM's state
alone (a submitit job whose Python raised can still end COMPLETED). Train and eval are requeued on
time-out or preemption: SLURM signals the job, the training loop checkpoints at a step boundary,
submitit calls `checkpoint` below and requeues it, and the stage resumes from its partial directory.
"""

from __future__ import annotations

import logging
import sys

import submitit

from meds1 import pipeline
from meds1.config.schema import Config
from meds1.store import registry
from meds1.store.identity import StageIdentity, stage_slug
from meds1.store.registry import JobState, registry_path
from meds1.store.workspace import StageDir

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

log = logging.getLogger(__name__)


def finished(cfg: Config, stage: str) -> bool:
    """Whether `stage` has a completion marker for this config and the files it read."""
    return StageDir.of(cfg, stage).complete(StageIdentity(cfg, stage))


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class StageJob(submitit.helpers.Checkpointable):
    """The pickled callable of one job: `StageJob(cfg, "train")()` runs stage train of `cfg`."""

    def __init__(self, cfg: Config, stage: str):
        self.cfg = cfg
        self.stage = stage
        self.requeued = False  # set while this run hands over to its requeued successor
        self.requeues = 0

    def __call__(self) -> dict:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout, force=True)
        env = submitit.JobEnvironment()
        self.job_id = env.job_id
        self.leader = env.global_rank == 0
        self.requeued = False
        self.report(state=JobState.running, started_at=registry.now(), node=env.hostname)
        try:
            record = pipeline.run(self.cfg, self.stage)
        except BaseException as error:
            if not self.requeued:
                self.report(state=JobState.failed, error=one_line(error))
            raise
        if self.leader and not finished(self.cfg, self.stage):
            message = f"stage {self.stage} returned without its completion marker"
            self.report(state=JobState.failed, error=message)
            raise RuntimeError(message)
        self.report(state=JobState.done)
        return record

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on time-out/preemption: requeue train and eval (they resume), not curate."""
        if not pipeline.get(self.stage).resumable:
            return None
        self.requeued = True
        self.requeues += 1
        log.warning("%s: requeued after time-out or preemption; resumes from its partial output", self.stage)
        self.report(state=JobState.queued, requeues=self.requeues)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def report(self, **fields) -> None:
        """Update this job's registry record (the first task only; others stay quiet)."""
        if not self.leader:
            return
        job = {"job_id": self.job_id, **fields}
        registry.record_jobs(
            registry_path(self.cfg), [(stage_slug(self.cfg, self.stage), self.stage, job)], merge=True
        )
