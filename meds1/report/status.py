"""Where each experiment's stages stand: not run, queued, running, done or failed.

Evidence, strongest first:
1. a partial directory whose lock a live process holds -> running (here, on this machine);
2. a scheduler job recorded in the registry (`jobs.<stage>`): queued or running as recorded; a job
   that ended is done only if the stage's completion marker was written after it was submitted,
   otherwise failed (a SLURM job can end "COMPLETED" although its Python raised);
3. a completion marker -> done;
4. a partial directory nobody holds -> failed (interrupted; rerunning the stage resumes it);
5. a result in the registry with no output directory here (e.g. imported from med-s1) -> done.

Whether a lock is held is probed with a non-blocking acquire of the stage's `filelock` (see
meds1.workspace.lock_is_held), released at once; a stage starting in that same instant would report
itself busy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.table import Table

from meds1 import pipeline
from meds1.pipeline import STAGES
from meds1.report.experiments import stage_slug_of
from meds1.workspace import MARKER, lock_is_held, lock_path, read_marker

STATE_STYLE = {"not run": "dim", "queued": "cyan", "running": "yellow", "done": "green", "failed": "red"}


@dataclass
class StageStatus:
    experiment: str
    stage: str
    state: str  # not run | queued | running | done | failed
    at: str | None  # when it reached that state (ISO 8601), if known
    path: str | None  # output directory, partial directory or job log
    detail: str = ""


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def _after(finished: str | None, submitted: str | None) -> bool:
    """Whether a marker's finish time is not before a job's submission (unknown times: trust the marker)."""
    try:
        return datetime.fromisoformat(finished) >= datetime.fromisoformat(submitted)
    except (TypeError, ValueError):
        return True


def stage_status(
    root: Path, slug: str, stage: str, entry: dict, experiment: str | None = None
) -> StageStatus:
    """The status of `stage` stored under `<root>/<slug>/`, with `entry` that slug's registry entry."""
    name = experiment or slug
    final = root / slug / stage
    partial = root / slug / f".{stage}.partial"
    marker = read_marker(final)
    job = (entry.get("jobs") or {}).get(stage)
    if partial.exists() and lock_is_held(lock_path(root / slug, stage)):
        detail = f"job {job['job_id']}" if job else "local process"
        return StageStatus(name, stage, "running", _mtime(partial), str(partial), detail)
    if job:
        job_note = f"job {job.get('job_id')}"
        if marker and _after(marker.get("finished_at"), job.get("submitted_at")):
            return StageStatus(name, stage, "done", marker.get("finished_at"), str(final), job_note)
        if job.get("state") in ("queued", "running"):
            return StageStatus(
                name, stage, job["state"], job.get("updated_at"), job.get("log_path"), job_note
            )
        reason = "ended without a completion marker" if job.get("state") == "done" else "failed"
        return StageStatus(
            name, stage, "failed", job.get("updated_at"), job.get("log_path"), f"{job_note} {reason}"
        )
    if marker:
        return StageStatus(name, stage, "done", marker.get("finished_at"), str(final))
    if partial.exists():
        note = "interrupted: partial output, no live process; rerun resumes it"
        return StageStatus(name, stage, "failed", _mtime(partial), str(partial), note)
    recorded = (entry.get("results") or {}).get(pipeline.get(stage).section)
    if recorded:
        paths = [v for k, v in recorded.items() if k.endswith("_path") and isinstance(v, str)]
        note = "recorded in results.json; no output directory here"
        return StageStatus(name, stage, "done", recorded.get("timestamp"), paths[0] if paths else None, note)
    return StageStatus(name, stage, "not run", None, None)


def _has_trace(root: Path, slug: str, stage: str, entry: dict) -> bool:
    return (
        (root / slug / stage / MARKER).exists()
        or (root / slug / f".{stage}.partial").exists()
        or stage in (entry.get("jobs") or {})
        or bool((entry.get("results") or {}).get(pipeline.get(stage).section))
    )


def slugs_on_disk(root: Path) -> set[str]:
    """Experiment directories under `root` holding a finished or partial stage."""
    directories = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    return {d.name for d in directories if any(_has_trace(root, d.name, stage, {}) for stage in STAGES)}


def experiment_status(root: Path, data: dict, slug: str) -> list[StageStatus]:
    """Every stage of one experiment. An upstream stage with no trace under the experiment's own slug
    is looked up where the recorded config puts it (e.g. the curation a learning-rate sweep shares)."""
    entries = data["experiments"]
    entry = entries.get(slug, {})
    config = entry.get("config") or {}
    traced = [stage for stage in STAGES if _has_trace(root, slug, stage, entry)]
    configured = [stage for stage in config.get("stages") or [] if stage in STAGES]
    statuses = []
    for stage in configured or traced or list(STAGES):
        where = slug
        if stage not in traced and any(STAGES.index(s) > STAGES.index(stage) for s in traced):
            where = stage_slug_of(config, stage) or slug
        statuses.append(stage_status(root, where, stage, entries.get(where, {}), experiment=slug))
    return statuses


def statuses(root: Path, data: dict, slugs: list[str]) -> list[StageStatus]:
    return [status for slug in slugs for status in experiment_status(root, data, slug)]


def _short_time(stamp: str | None) -> str:
    try:
        return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return stamp or "-"


def to_rich(rows: list[StageStatus], root: Path) -> Table:
    """The status table; paths under `root` are shown relative to it."""
    table = Table(title=f"Stage status (paths relative to {root})")
    table.add_column("experiment", style="bold", overflow="fold")
    for column in ("stage", "state", "since (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("detail")
    for row in rows:
        path = Path(row.path) if row.path else None
        shown = str(path.relative_to(root)) if path and path.is_relative_to(root) else row.path or "-"
        state = f"[{STATE_STYLE[row.state]}]{row.state}[/]"
        table.add_row(row.experiment, row.stage, state, _short_time(row.at), shown, row.detail)
    return table
