"""The results registry: `<root>/results.json`, shared by every job that writes results.

Shape (med-s1's, with each stage's record under the stage's name)::

    {"experiments": {"<slug>": {"description": ..., "config": {...},
                                "results": {"curate": {...}, "train": {...}, "eval": {...}},
                                "jobs": {"<stage>": {...}}}}}

Older meds1 kept med-s1's names for the records ("curation", "training"); `load` renames them, so
every reader sees stage names and the next update writes them.

Many SLURM jobs finish at once, so every update takes an exclusive file lock, re-reads the file,
changes one stage of one experiment, and atomically replaces the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from meds1 import pipeline
from meds1.errors import UserError
from meds1.store.identity import redacted

if TYPE_CHECKING:
    from meds1.config.schema import Config

# Results keys written by meds1 before they were the stage names (med-s1's), and their stage.
OLD_RESULT_KEYS = {"curation": "curate", "training": "train"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load(path: Path) -> dict:
    """The registry's contents ({"experiments": {}} when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {"experiments": {}}
    return _with_stage_names(json.loads(path.read_text()))


def _with_stage_names(data: Any) -> Any:
    """`data` with each record an older meds1 kept under med-s1's name moved under its stage's name
    (a record already under the stage's name, written later, wins)."""
    entries = data.get("experiments") if isinstance(data, dict) else None
    for entry in entries.values() if isinstance(entries, dict) else ():
        results = entry.get("results") if isinstance(entry, dict) else None
        if isinstance(results, dict):
            for old in sorted(OLD_RESULT_KEYS.keys() & results.keys()):
                results.setdefault(OLD_RESULT_KEYS[old], results.pop(old))
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside `path`, fsync it, and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update(
    path: Path,
    slug: str,
    stage: str,
    record: dict,
    *,
    description: str | None = None,
    config: Any = None,
) -> dict:
    """Set `experiments[slug].results[stage] = record` (under the lock) and return the entry.

    `config` (what the stage read: meds1.store.identity.stage_config) is kept with the record, and is
    the entry's `config` while this stage is the entry's last in pipeline order (entries of older
    registries keep the config they have until a stage records its own).
    """
    pipeline.get(stage)  # an unknown stage fails here, naming the valid ones
    with _locked_entry(path, slug) as entry:
        if description is not None:
            entry["description"] = description
        results = entry.setdefault("results", {})
        results[stage] = redacted({**record, "timestamp": now(), **({"config": config} if config else {})})
        configured = [s for s in pipeline.STAGES if (results.get(s) or {}).get("config")]
        if configured:
            entry["config"] = results[configured[-1]]["config"]
    return entry


def add_experiments(path: Path, entries: dict[str, dict], *, replace: bool = False) -> None:
    """Add whole experiment entries (e.g. imported from med-s1) under the lock.

    A slug the registry already has is an error unless `replace` is set.
    """
    with _locked(path) as data:
        experiments = data.setdefault("experiments", {})
        taken = sorted(set(entries) & set(experiments))
        if taken and not replace:
            raise UserError(f"{path} already has {', '.join(taken)} (replace them with --replace)")
        experiments.update(redacted(entries))


@contextmanager
def _locked(path: Path) -> Iterator[dict]:
    """Lock the registry, re-read it, yield its contents to change, replace the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        data = load(path)
        yield data
        write_json_atomic(path, data)


@contextmanager
def _locked_entry(path: Path, slug: str) -> Iterator[dict]:
    """Lock the registry, re-read it, yield one experiment's entry to change, replace the file."""
    with _locked(path) as data:
        yield data.setdefault("experiments", {}).setdefault(slug, {"results": {}})


class JobState(StrEnum):
    """A scheduler job's state as its registry record holds it (`jobs.<stage>.state`)."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"

    @property
    def active(self) -> bool:
        """Still in the scheduler's hands: it may yet run, or is running."""
        return self in (JobState.queued, JobState.running)


def job_state(job: dict | None) -> JobState | None:
    """The state of a job record (None without a record or with a state meds1 never writes)."""
    state = (job or {}).get("state")
    return JobState(state) if state in JobState.__members__ else None


def record_jobs(path: Path, jobs: list[tuple[str, str, dict]], *, merge: bool = False) -> None:
    """Record many jobs (slug, stage, job) under one lock, e.g. a whole sweep's submission.

    With `merge`, each job's fields update the stage's record, and only while that record is of the same
    job id: a job reporting on itself, or a status refresh, never overwrites a newer submission.
    """
    for _, _, job in jobs:
        if (not merge or "state" in job) and job_state(job) is None:
            raise ValueError(f"unknown job state {job.get('state')!r}; valid: {', '.join(JobState)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        data = load(path)
        for slug, stage, job in jobs:
            entry = data.setdefault("experiments", {}).setdefault(slug, {"results": {}})
            slots = entry.setdefault("jobs", {})
            if merge:
                if slots.get(stage, {}).get("job_id") != job.get("job_id"):
                    continue
                job = {**slots[stage], **job}
            slots[stage] = redacted({**job, "updated_at": now()})
        write_json_atomic(path, data)


def registry_path(cfg: Config) -> Path:
    return Path(cfg.paths.root) / "results.json"
