"""The SLURM queue: what it still holds, and bringing the registry's job records up to date.

A job reports `running`, `done` or `failed` itself (`registry.JobState`). A job that never got to
(cancelled, killed for memory or time, never started because the stage it waited for failed) leaves
`queued` or `running` behind; `refresh` settles those once SLURM no longer lists the job: `done` if its
stage's marker was written for this config after the submission, else `failed` with SLURM's last word.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from meds1.errors import UserError
from meds1.store import registry
from meds1.store.registry import JobState, job_state
from meds1.store.workspace import StageDir

log = logging.getLogger(__name__)


def slurm(*command: str, timeout: float = 60) -> str:
    """stdout of a SLURM client command; raises OSError/SubprocessError when it cannot answer."""
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=timeout).stdout


def cluster_problem() -> str | None:
    """Why SLURM cannot be used from here, or None when its controller answers."""
    if shutil.which("sbatch") is None:
        return "sbatch not found on PATH"
    try:
        slurm("squeue", "-h", "--me", "-o", "%i", timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        lines = (getattr(error, "stderr", None) or str(error)).strip().splitlines()
        return f"the SLURM controller does not answer: {lines[-1] if lines else error}"
    return None


def active_jobs() -> dict[str, str] | None:
    """{job id: SLURM state} of this user's pending and running jobs (array tasks as `<id>_<i>`),
    or None when squeue cannot be run."""
    try:
        out = slurm("squeue", "-h", "-r", "--me", "-o", "%i|%T")
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split("|", 1) for line in out.split())


def slurm_state(job_id: str) -> str:
    """SLURM's last word on a job, e.g. `CANCELLED (DependencyNeverSatisfied)`, while it remembers it."""
    try:
        out = slurm("scontrol", "-o", "show", "job", job_id, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "state unknown to SLURM by now"
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    state, reason = fields.get("JobState", "UNKNOWN"), fields.get("Reason", "None")
    return state if reason in ("None", "(null)") else f"{state} ({reason})"


def settled_state(root: Path, slug: str, stage: str, job: dict) -> dict:
    """The final record of a job SLURM no longer lists: done if its stage finished, else failed."""
    if StageDir(root, slug, stage).finished_since(job.get("submitted_at"), job.get("config_hash")):
        return {"job_id": job["job_id"], "state": JobState.done}
    return {
        "job_id": job["job_id"],
        "state": JobState.failed,
        "error": job.get("error") or f"job ended without finishing the stage: {slurm_state(job['job_id'])}",
    }


def active_records(data: dict) -> list[tuple[str, str, dict]]:
    """(slug, stage, job) of every job the registry holds as queued or running."""
    return [
        (slug, stage, job)
        for slug, entry in data.get("experiments", {}).items()
        for stage, job in entry.get("jobs", {}).items()
        if (state := job_state(job)) is not None and state.active
    ]


def refresh(path: Path) -> list[tuple[str, str, dict]]:
    """Settle the registry's queued/running jobs that SLURM no longer lists; returns what changed."""
    if not active_records(registry.load(path)):
        return []
    alive = active_jobs()  # before re-reading the registry: a job that has left the queue has reported
    if alive is None:
        log.warning("squeue cannot be run here: job states in %s are as the jobs last reported them", path)
        return []
    changes = [
        (slug, stage, settled_state(Path(path).parent, slug, stage, job))
        for slug, stage, job in active_records(registry.load(path))
        if job.get("job_id") not in alive
    ]
    if changes:
        registry.record_jobs(path, changes, merge=True)
    return changes


def wait(job_ids: set[str], registries: set[Path], poll_s: float) -> dict[str, dict]:
    """Block until none of `job_ids` is queued or running; returns their final records by job id."""
    from tqdm import tqdm

    with tqdm(total=len(job_ids), desc="jobs finished", unit="job") as bar:
        while True:
            alive = active_jobs()
            if alive is None:
                raise UserError("lost contact with SLURM while waiting (squeue fails); jobs keep running")
            left = job_ids & alive.keys()
            bar.update(len(job_ids) - len(left) - bar.n)
            if not left:
                break
            time.sleep(poll_s)
    records = {}
    for path in registries:
        refresh(path)
        for entry in registry.load(path).get("experiments", {}).values():
            for job in entry.get("jobs", {}).values():
                if job.get("job_id") in job_ids:
                    records[job["job_id"]] = job
    return records
