"""Launch speed: submitting a 30-point sweep (90 jobs) to SLURM, and composing + dispatching one stage.

    python bench/bench_launch.py      # needs a reachable cluster for the sweep rows (scripts/slurm-local.sh)

Sweep jobs are submitted held (`--hold`) and cancelled right after, so nothing runs. Baselines, measured
in the same run: the same 90 jobs submitted one at a time through submitit (one sbatch per job, each
waiting for its predecessor with afterok, one registry update per job); and for dispatch, Hydra alone
printing the config (`--cfg job`) and the import of torch that dispatch avoids.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POINTS = 30
HOLD = {"hold": True}


def _sweep_configs(root: Path):
    from meds1.config.compose import compose

    return [
        compose(["stage=all", "compare_base=false", f"curation.n_samples={n}", f"paths.root={root}"])
        for n in range(1, POINTS + 1)
    ]


def _cancel(job_ids) -> None:
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids if job_id})
    if arrays:
        subprocess.run(["scancel", *arrays], check=True)


def _submit_one_by_one(steps, launcher) -> None:
    """The naive path: one executor, one sbatch per job, one registry update per job."""
    from submitit.slurm.slurm import SlurmExecutor

    from meds1.launch.job import StageJob
    from meds1.store import registry

    executor = SlurmExecutor(steps[0].folder, max_num_timeout=launcher.max_num_timeout)
    for step in steps:
        parameters = dict(step.parameters)
        if step.after is not None:
            parameters["dependency"] = f"afterok:{step.after.job_id}"
        executor.update_parameters(**parameters)
        step.job_id = executor.submit(StageJob(step.cfg, step.stage)).job_id
        job = {"job_id": step.job_id, "state": "queued", "config_hash": step.config_hash}
        registry.record_jobs(step.registry, [(step.slug, step.stage, job)])


def sweep_in_process(root: Path) -> tuple[float, float, int]:
    """(seconds with arrays, seconds one by one, sbatch calls with arrays) for 90 held jobs."""
    from meds1.config.schema import SlurmLauncherConfig
    from meds1.launch.plan import plan
    from meds1.launch.submit import submit

    launcher = SlurmLauncherConfig(additional_parameters=HOLD)
    timings = []
    for name, submitter in (("arrays", submit), ("one_by_one", _submit_one_by_one)):
        configs = _sweep_configs(root / name)
        start = time.perf_counter()
        steps = plan(configs, launcher)
        calls = submitter(steps, launcher)
        timings.append(time.perf_counter() - start)
        assert len(steps) == 3 * POINTS and all(step.job_id for step in steps)
        _cancel(step.job_id for step in steps)
        if name == "arrays":
            array_calls = calls
    return timings[0], timings[1], array_calls


def sweep_command_line(root: Path) -> float:
    """Wall time of the user's command for a 30-point stage=all sweep (compose, plan, submit, record)."""
    from meds1.store import registry

    command = [
        sys.executable,
        "run.py",
        "-m",
        "stage=all",
        "compare_base=false",
        f"curation.n_samples=range(1,{POINTS + 1})",
        "hydra/launcher=slurm",
        "+hydra.launcher.additional_parameters.hold=true",
        f"paths.root={root}",
        f"hydra.sweep.dir={root / 'multirun'}",
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    experiments = registry.load(root / "results.json")["experiments"]
    job_ids = [job["job_id"] for e in experiments.values() for job in e.get("jobs", {}).values()]
    assert len(job_ids) == 3 * POINTS, len(job_ids)
    _cancel(job_ids)
    return elapsed


DISPATCH = """
import contextlib, io, sys, time
start = time.perf_counter()
from meds1.config.compose import compose
from meds1.config.schema import SlurmLauncherConfig
from meds1.launch.submit import launch
cfg = compose(["experiment=med-s1-1k", "stage=curate", "dry_run=true", "paths.root={root}"])
composed = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    launch([cfg], SlurmLauncherConfig())
end = time.perf_counter()
assert "torch" not in sys.modules, "dispatch imported torch"
print(end - start, end - composed, file=sys.stderr)
"""


def _median_wall(command: list[str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dispatch_timings(root: Path) -> tuple[float, float, float, float, float]:
    """Medians: (imports + compose + dispatch in process, dispatch alone, its command line, Hydra's
    --cfg job, `import torch`)."""
    whole, dispatch = [], []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", DISPATCH.format(root=root)],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        total, alone = map(float, done.stderr.split()[-2:])
        whole.append(total)
        dispatch.append(alone)
    run = [sys.executable, "run.py", "experiment=med-s1-1k", "stage=curate", f"paths.root={root}"]
    cli = _median_wall([*run, "hydra/launcher=slurm", "dry_run=true"])
    hydra_only = _median_wall([*run, "--cfg", "job"])
    torch_import = _median_wall([sys.executable, "-c", "import torch"])
    return statistics.median(whole), statistics.median(dispatch), cli, hydra_only, torch_import


def row(figure, ours, baseline, target, unit="s", speedup=False) -> dict:
    """ratio: baseline / ours (how many times faster) with `speedup`, else ours / baseline (a share)."""
    ratio = (baseline / ours if speedup else ours / baseline) if ours and baseline else None
    return {
        "figure": figure,
        "ours": ours,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "unit": unit,
    }


def run() -> list[dict]:
    from meds1.launch.queue import cluster_problem

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        root = Path(tmp)
        in_process, dispatch, cli, hydra_only, torch_import = dispatch_timings(root / "dispatch")
        figure = "imports + compose + dispatch one stage (dry run); baseline: `import torch` alone"
        rows.append(row(figure, in_process, torch_import, "<= 1 s"))
        rows.append(row("dispatch alone: plan + print one stage", dispatch, in_process, "share of the above"))
        figure = "compose + dispatch one stage (dry run), command line; baseline: `--cfg job`"
        rows.append(row(figure, cli, hydra_only, "report"))
        problem = cluster_problem()
        if problem:
            print(f"bench_launch: sweep rows skipped, no SLURM cluster ({problem})", file=sys.stderr)
            return rows
        arrays, one_by_one, calls = sweep_in_process(root / "sweep")
        sweep = f"submit a {POINTS}-point sweep ({3 * POINTS} jobs)"
        baseline = "baseline: one sbatch per job through submitit"
        rows.append(row(f"{sweep}, in process; {baseline}", arrays, one_by_one, "<= 10 s", speedup=True))
        rows.append(row(f"sbatch calls for {3 * POINTS} jobs", calls, 3 * POINTS, "report", unit="calls"))
        command_line = sweep_command_line(root / "cli")
        figure = f"{sweep}, command line; {baseline}"
        rows.append(row(figure, command_line, one_by_one, "<= 10 s", speedup=True))
    return rows


if __name__ == "__main__":
    for result in run():
        print(json.dumps(result))
