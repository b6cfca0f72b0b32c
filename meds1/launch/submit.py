"""Submitting a plan to SLURM with plain submitit, and returning once the jobs are queued.

Jobs are submitted stage by stage ("waves"). Within a wave, steps with the same sbatch parameters go
out as one job array: a sweep's 30 trainings are one `sbatch`, each task waiting for its own curation
with `--dependency=aftercorr:<curation array>` (or all for one shared job with `afterok:<id>`). So a
30-point sweep is three sbatch calls, not ninety. Dependent jobs carry `--kill-on-invalid-dep=yes`, so
when a stage fails SLURM cancels the rest of its chain instead of leaving it pending forever.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from meds1 import pipeline
from meds1.config.schema import Config, SlurmLauncherConfig
from meds1.errors import UserError
from meds1.launch import queue
from meds1.launch.plan import QUEUED, SUBMIT, Step, format_plan, plan
from meds1.store import registry

log = logging.getLogger(__name__)


@dataclass
class ArrayGroup:
    """Steps submitted by one sbatch call (a job array when there are several)."""

    steps: list[Step]
    dependency: str | None  # e.g. "afterok:123", "aftercorr:124"


def waves(steps: list[Step]) -> list[list[Step]]:
    """Steps to submit, by how many submitted steps they wait for in a row (0: nothing to wait for)."""
    depth: dict[int, int] = {}
    grouped: dict[int, list[Step]] = defaultdict(list)
    for step in steps:  # plan order: every step comes after the step it waits for
        if step.action != SUBMIT:
            continue
        after = step.after
        depth[id(step)] = depth[id(after)] + 1 if after is not None and after.action == SUBMIT else 0
        grouped[depth[id(step)]].append(step)
    return [grouped[d] for d in sorted(grouped)]


def array_groups(wave: list[Step]) -> Iterator[ArrayGroup]:
    """Split a wave into sbatch calls: same parameters and folder, and a dependency one flag can state."""
    by_parameters: dict[str, list[Step]] = defaultdict(list)
    for step in wave:
        key = json.dumps([str(step.folder), step.parameters], sort_keys=True, default=str)
        by_parameters[key].append(step)
    for same in by_parameters.values():
        fixed: dict[str | None, list[Step]] = defaultdict(list)
        corresponding: dict[str, list[Step]] = defaultdict(list)
        for step in same:
            after_id = step.after.job_id if step.after is not None else None
            if after_id is not None and "_" in after_id:  # a task of a job array
                corresponding[after_id.split("_")[0]].append(step)
            else:
                fixed[after_id].append(step)
        for after_id, steps in fixed.items():
            yield ArrayGroup(steps, f"afterok:{after_id}" if after_id else None)
        for array_id, steps in corresponding.items():
            steps.sort(key=lambda s: int(s.after.job_id.split("_")[1]))
            indices = [int(s.after.job_id.split("_")[1]) for s in steps]
            if len(steps) > 1 and indices == list(range(len(steps))):
                yield ArrayGroup(steps, f"aftercorr:{array_id}")
            else:  # the tasks do not line up with the upstream array's: one job each
                for step in steps:
                    yield ArrayGroup([step], f"afterok:{step.after.job_id}")


def submit_group(group: ArrayGroup, launcher: SlurmLauncherConfig) -> None:
    """One sbatch call for the group's steps; sets each step's job id and log path."""
    from submitit.slurm.slurm import SlurmExecutor

    from meds1.launch.job import StageJob

    first = group.steps[0]
    executor = SlurmExecutor(first.folder, max_num_timeout=launcher.max_num_timeout, python=launcher.python)
    parameters = dict(first.parameters)
    if group.dependency:
        parameters["dependency"] = group.dependency
        parameters["additional_parameters"] = {
            "kill-on-invalid-dep": "yes",
            **parameters.get("additional_parameters", {}),
        }
    executor.update_parameters(**parameters)
    try:  # submitit echoes sbatch's complaint to stderr; it goes into the one-line error instead
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            jobs = [executor.submit(StageJob(step.cfg, step.stage)) for step in group.steps]
    except (subprocess.CalledProcessError, RuntimeError) as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise UserError(f"sbatch refused the {first.stage} job(s): {lines[-1] if lines else error}") from None
    for step, job in zip(group.steps, jobs, strict=True):
        step.job_id = job.job_id
        step.log_path = str(job.paths.stdout)


def submit(steps: list[Step], launcher: SlurmLauncherConfig) -> int:
    """Submit every SUBMIT step (after the steps it waits for), recording each sbatch call's jobs in the
    registry as soon as they exist; returns the number of sbatch calls."""
    calls = 0
    for wave in waves(steps):
        for group in array_groups(wave):
            submitted_at = registry.now()
            try:
                submit_group(group, launcher)
            except UserError as error:
                done = sum(step.job_id is not None for step in steps if step.action == SUBMIT)
                if done:
                    raise UserError(f"{error}; {done} job(s) submitted before it stay queued") from None
                raise
            calls += 1
            by_registry: dict = defaultdict(list)
            for step in group.steps:
                job = {
                    "job_id": step.job_id,
                    "state": registry.JobState.queued,
                    "log_path": step.log_path,
                    "submitted_at": submitted_at,
                    "config_hash": step.config_hash,
                    "after": step.after.job_id if step.after is not None else None,
                }
                by_registry[step.registry].append((step.slug, step.stage, job))
            for path, jobs in by_registry.items():
                registry.record_jobs(path, jobs)
    return calls


def launch(configs: list[Config], launcher: SlurmLauncherConfig) -> list[Step]:
    """Plan the experiments' jobs, then print the plan (dry_run) or submit it; wait=true blocks until done.

    `stage=report` points are not jobs: the report runs here, after the rest is submitted (or waited for).
    """
    dry_run = any(cfg.dry_run for cfg in configs)
    problem = queue.cluster_problem()
    if problem and not dry_run:
        raise UserError(
            f"hydra/launcher=slurm: no SLURM cluster reachable ({problem}); submit from a login node, add "
            "dry_run=true to see the plan, or drop hydra/launcher=slurm to run here"
        )
    active = None if problem else queue.active_jobs()
    steps = plan([cfg for cfg in configs if cfg.stage != "report"], launcher, set(active or ()))
    if dry_run:
        print(f"meds1 dry run: nothing submitted. Plan ({len(steps)} steps):")
        print(format_plan(steps, submitted=False))
        return steps
    calls = submit(steps, launcher)
    print(f"meds1: submitted {sum(s.action == SUBMIT for s in steps)} job(s) in {calls} sbatch call(s):")
    print(format_plan(steps, submitted=True))
    wait = any(cfg.wait for cfg in configs)
    if wait:
        wait_for(steps, launcher)
    else:
        roots = sorted({str(step.cfg.paths.root) for step in steps})
        print("The jobs run on their own: `squeue --me` lists them; for states and results run")
        print("\n".join(f"  python run.py stage=report paths.root={root}" for root in roots))
        print("(or add wait=true to block until they end).")
    reports = [cfg for cfg in configs if cfg.stage == "report" or (wait and cfg.stage == "all")]
    if reports:
        pipeline.run(reports[0], "report")
    failed = [step for step in steps if step.state not in (None, registry.JobState.done)]
    if failed:
        raise UserError(
            f"{len(failed)} of {sum(s.state is not None for s in steps)} job(s) failed: "
            + "; ".join(f"{s.stage} of {s.slug} ({s.error}; log {s.log_path})" for s in failed)
        )
    return steps


def wait_for(steps: list[Step], launcher: SlurmLauncherConfig) -> None:
    """Block until the plan's jobs end; set and print each one's final state."""
    waiting = [step for step in steps if step.action in (SUBMIT, QUEUED)]
    records = queue.wait({s.job_id for s in waiting}, {s.registry for s in waiting}, launcher.poll_s)
    for step in waiting:
        record = records.get(step.job_id, {})
        step.state, step.error = record.get("state", "unknown"), record.get("error")
        step.log_path = step.log_path or record.get("log_path")
        print(f"  {step.stage:<6} {step.slug}: job {step.job_id} {step.state}")
