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
meds1.store.workspace.StageDir.running), released at once; a stage starting in that same instant would report
itself busy. The states are a job's (`registry.JobState`) plus "not run".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.table import Table

from meds1.pipeline import STAGES
from meds1.store.identity import recorded_stage_slug
from meds1.store.registry import JobState, job_state
from meds1.store.workspace import StageDir

NOT_RUN = "not run"
STATE_STYLE = {
    NOT_RUN: "dim",
    JobState.queued: "cyan",
    JobState.running: "yellow",
    JobState.done: "green",
    JobState.failed: "red",
}


@dataclass
class StageStatus:
    experiment: str
    stage: str
    state: str  # NOT_RUN or a JobState
    at: str | None  # when it reached that state (ISO 8601), if known
    path: str | None  # output directory, partial directory or job log
    detail: str = ""


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def stage_status(
    root: Path, slug: str, stage: str, entry: dict, experiment: str | None = None
) -> StageStatus:
    """The status of `stage` stored under `<root>/<slug>/`, with `entry` that slug's registry entry."""
    name = experiment or slug
    directory = StageDir(root, slug, stage)
    final, partial = str(directory.final), str(directory.partial)
    marker = directory.marker()
    job = (entry.get("jobs") or {}).get(stage)
    if directory.running:
        detail = f"job {job['job_id']}" if job else "local process"
        return StageStatus(name, stage, JobState.running, _mtime(directory.partial), partial, detail)
    if job:
        job_note = f"job {job.get('job_id')}"
        if directory.finished_since(job.get("submitted_at")):
            return StageStatus(name, stage, JobState.done, marker.get("finished_at"), final, job_note)
        state = job_state(job)
        if state is not None and state.active:
            return StageStatus(name, stage, state, job.get("updated_at"), job.get("log_path"), job_note)
        reason = "ended without a completion marker" if state == JobState.done else "failed"
        return StageStatus(
            name, stage, JobState.failed, job.get("updated_at"), job.get("log_path"), f"{job_note} {reason}"
        )
    if marker:
        return StageStatus(name, stage, JobState.done, marker.get("finished_at"), final)
    if directory.interrupted:
        note = "interrupted: partial output, no live process; rerun resumes it"
        return StageStatus(name, stage, JobState.failed, _mtime(directory.partial), partial, note)
    recorded = (entry.get("results") or {}).get(stage)
    if recorded:
        paths = [v for k, v in recorded.items() if k.endswith("_path") and isinstance(v, str)]
        note = "recorded in results.json; no output directory here"
        return StageStatus(
            name, stage, JobState.done, recorded.get("timestamp"), paths[0] if paths else None, note
        )
    return StageStatus(name, stage, NOT_RUN, None, None)


def _has_trace(root: Path, slug: str, stage: str, entry: dict) -> bool:
    directory = StageDir(root, slug, stage)
    return (
        directory.complete()
        or directory.partial.exists()
        or stage in (entry.get("jobs") or {})
        or bool((entry.get("results") or {}).get(stage))
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
            where = recorded_stage_slug(config, stage) or slug
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
