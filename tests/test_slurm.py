"""hydra/launcher=slurm against a live slurmctld (`eval "$(scripts/slurm-local.sh start)"`; CI starts it).

The expensive test runs the real demo pipeline once as a chained stage=all; the others hold their jobs
(`--hold`), read them back with `scontrol show job` and cancel them, or fail in the first stage.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meds1.launch.queue import active_jobs, cluster_problem
from tests.conftest import REPO

pytestmark = pytest.mark.slurm

HOLD = "+hydra.launcher.additional_parameters.hold=true"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(f"no SLURM cluster reachable ({problem}); start one with scripts/slurm-local.sh start")


def submit(*args, timeout=600):
    flags = [a for a in args if a.startswith("-")]  # Hydra wants -m before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    result = subprocess.run(
        [sys.executable, "run.py", *flags, "hydra/launcher=slurm", "hydra.launcher.poll_s=1", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def jobs(root: Path) -> dict[tuple[str, str], dict]:
    experiments = json.loads((root / "results.json").read_text())["experiments"]
    return {(slug, stage): job for slug, e in experiments.items() for stage, job in e.get("jobs", {}).items()}


def wait_until(condition, timeout=180):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.5)


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    )
    return dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)


def cancel(records) -> None:
    subprocess.run(["scancel", *{job["job_id"].split("_")[0] for job in records}], check=True)


def test_dry_run_submits_nothing(tmp_path):
    before = active_jobs()
    result = submit("-m", "stage=all", "curation.n_samples=10,20", "dry_run=true", f"paths.root={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "meds1 dry run: nothing submitted. Plan (7 steps):" in result.stdout
    assert result.stdout.count("would submit") == 7
    assert active_jobs() == before
    assert not (tmp_path / "results.json").exists()


def test_sweep_makes_one_chain_per_point_with_each_stages_resources(tmp_path):
    result = submit(
        "-m",
        "stage=all",
        "curation.n_samples=10,20,30",
        "trainer.resources.gpus=2",
        "inference.resources.gpus=1",
        "curation.resources.cpus=3",
        HOLD,
        f"paths.root={tmp_path}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = jobs(tmp_path)
    try:
        assert "submitted 10 job(s) in 4 sbatch call(s)" in result.stdout
        chains = {slug for slug, stage in records if stage == "curate"}
        assert chains == {f"demo__curation.n_samples={n}" for n in (10, 20, 30)}
        for n in (10, 20, 30):
            curate = records[(f"demo__curation.n_samples={n}", "curate")]
            train = records[(f"demo__curation.n_samples={n}", "train")]
            evaluate = records[(f"demo__curation.n_samples={n}", "eval")]
            assert train["after"] == curate["job_id"] and evaluate["after"] == train["job_id"]
            assert all(
                job["state"] == "queued" and job["log_path"].endswith("_0_log.out")
                for job in (curate, train, evaluate)
            )

            curate_job, train_job, eval_job = (scontrol(j["job_id"]) for j in (curate, train, evaluate))
            assert "TresPerNode" not in curate_job and curate_job["NumTasks"] == "1"
            assert curate_job["NumCPUs"] == "3"
            assert train_job["TresPerNode"] == "gres:gpu:2" and train_job["NumTasks"] == "2"
            assert train_job["Dependency"].startswith(f"aftercorr:{curate['job_id'].split('_')[0]}")
            assert eval_job["TresPerNode"] == "gres:gpu:1" and eval_job["NumTasks"] == "1"
            assert eval_job["Dependency"].startswith(f"aftercorr:{train['job_id'].split('_')[0]}")
        assert records[("demo-base", "eval")]["after"] is None  # shared by the three points
    finally:
        cancel(records.values())


def test_a_failing_stage_stops_its_chain_and_is_reported_failed(tmp_path):
    result = submit(
        "stage=all",
        "compare_base=false",
        "curation.source.path=/nonexistent/rows.jsonl",
        "wait=true",
        f"paths.root={tmp_path}",
        timeout=300,
    )
    assert result.returncode == 1
    assert "3 of 3 job(s) failed" in result.stdout
    by_stage = {stage: job for (_, stage), job in jobs(tmp_path).items()}
    curate, train, evaluate = by_stage["curate"], by_stage["train"], by_stage["eval"]
    assert curate["state"] == "failed" and "/nonexistent/rows.jsonl does not exist" in curate["error"]
    for job in (train, evaluate):  # never ran: SLURM cancelled them when the job they waited for failed
        assert job["state"] == "failed" and "DependencyNeverSatisfied" in job["error"]
        assert "started_at" not in job
    assert not (tmp_path / "demo" / "train").exists()


@pytest.mark.slow
def test_demo_pipeline_as_a_chain_completes_into_the_registry(tmp_path):
    shrink = ["trainer.max_steps=8", "eval.max_per_source=4", "eval.max_new_tokens=48"]
    started = time.monotonic()
    queued = submit("stage=all", *shrink, f"paths.root={tmp_path}")
    returned_after = time.monotonic() - started
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert "submitted 4 job(s)" in queued.stdout and "python run.py stage=report" in queued.stdout
    first = jobs(tmp_path)
    assert {job["state"] for job in first.values()} <= {"queued", "running"}, (first, returned_after)

    # Preempt the untrained model's eval while it runs: it checkpoints, is requeued and finishes later.
    base = next(key for key in first if key[0].startswith("demo-base"))
    wait_until(lambda: jobs(tmp_path)[base]["state"] == "running")
    base_job = first[base]["job_id"]
    subprocess.run(["scancel", "--signal=USR2", base_job], check=True)
    wait_until(lambda: jobs(tmp_path)[base].get("requeues") == 1)
    wait_until(lambda: scontrol(base_job)["JobState"] == "PENDING")
    subprocess.run(
        ["scontrol", "update", f"JobId={base_job}", "StartTime=now"], check=True
    )  # skip SLURM's delay

    waited = submit("stage=all", *shrink, "wait=true", f"paths.root={tmp_path}", timeout=900)
    assert waited.returncode == 0, waited.stdout[-3000:] + waited.stderr[-3000:]
    assert "submitted 0 job(s)" in waited.stdout and waited.stdout.count("(already queued)") >= 1
    assert "Strict accuracy" in waited.stdout  # the report table, printed once the chain ended
    records = jobs(tmp_path)
    assert {(slug, stage): job["job_id"] for (slug, stage), job in records.items()} == {
        key: job["job_id"] for key, job in first.items()
    }
    assert all(job["state"] == "done" for job in records.values()), records
    assert records[base]["requeues"] == 1 and scontrol(base_job)["Restarts"] == "1"
    experiments = json.loads((tmp_path / "results.json").read_text())["experiments"]
    trained = next(slug for slug, stage in records if stage == "train")
    evaluated = next(slug for slug, stage in records if stage == "eval" and not slug.startswith("demo-base"))
    assert experiments["demo"]["results"]["curate"]["stats"]["selected_rows"] == 220
    assert experiments[trained]["results"]["train"]["metrics"]["global_step"] == 8
    assert experiments[evaluated]["results"]["eval"]["metrics"]["overall"]["n"] == 12
    for (slug, stage), job in records.items():
        assert (tmp_path / slug / stage / "_COMPLETE.json").exists()
        assert f"{stage}:" in Path(job["log_path"]).read_text()  # the stage's own log lines

    again = submit("stage=all", *shrink, f"paths.root={tmp_path}")
    assert "submitted 0 job(s)" in again.stdout and again.stdout.count("complete, skipped") == 4


def test_a_request_the_cluster_cannot_meet_is_refused_in_one_line(tmp_path):
    result = submit("stage=curate", "curation.resources.gpus=16", f"paths.root={tmp_path}")
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert (
        "sbatch refused the curate job(s)" in lines[0] and "node configuration is not available" in lines[0]
    )


def test_a_partial_submission_says_which_jobs_stay_queued(tmp_path):
    """sbatch refuses a job after others were queued: the line says so and how many stay queued, and the
    registry holds those (so `stage=report` shows them and a rerun does not submit them twice)."""
    refused = "+hydra.launcher.per_stage.train.partition=no-such-partition"
    result = submit("stage=all", HOLD, refused, f"paths.root={tmp_path}")
    recorded = jobs(tmp_path)
    try:
        assert result.returncode == 1
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "sbatch refused the train job(s)" in lines[0]
        # Before train: the curation, and the untrained model's eval (the demo compares with it).
        assert sorted(stage for _, stage in recorded) == ["curate", "eval"]
        assert lines[0].endswith("; 2 job(s) submitted before it stay queued")
        for job in recorded.values():
            assert job["state"] == "queued" and scontrol(job["job_id"])["JobState"] == "PENDING"
    finally:
        cancel(recorded.values())
