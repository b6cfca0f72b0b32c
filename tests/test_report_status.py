"""The stage status view on real stage directories, locks held by real processes, and job records."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from filelock import FileLock
from rich.console import Console

from meds1.report.experiments import load_registry
from meds1.report.status import experiment_status, statuses, to_rich
from meds1.stages import report
from meds1.store import registry
from meds1.store.identity import stage_slug
from meds1.store.registry import registry_path
from meds1.store.workspace import StageWorkspace, lock_is_held


def finish(cfg, stage: str) -> None:
    with StageWorkspace(cfg, stage) as workspace:
        workspace.commit({"stage": stage})


def hold_stage(cfg, stage: str, started, release) -> None:
    """A child process running `stage`: holds its lock until told to stop, then dies without committing."""
    with StageWorkspace(cfg, stage):
        started.set()
        release.wait(120)


def states(root: Path, slug: str) -> dict[str, tuple[str, str]]:
    rows = experiment_status(root, load_registry(root / "results.json"), slug)
    return {row.stage: (row.state, row.detail) for row in rows}


def job(state: str, submitted_at: str | None = None) -> dict:
    return {
        "job_id": "4242",
        "state": state,
        "log_path": "/logs/4242.out",
        "submitted_at": submitted_at or registry.now(),
    }


def test_local_states_from_markers_partials_and_live_locks(make_config):
    cfg = make_config("experiment=random-1k")
    root = Path(cfg.paths.root)
    finish(cfg, "curate")
    slug = stage_slug(cfg, "curate")
    assert states(root, slug) == {"curate": ("done", "")}  # no registry entry yet: stages found on disk

    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    child = context.Process(target=hold_stage, args=(cfg, "train", started, release))
    child.start()
    try:
        assert started.wait(120)
        running = states(root, slug)["train"]
        assert running == ("running", "local process")
    finally:
        release.set()
        child.join(60)
    assert child.exitcode == 0
    state, detail = states(root, slug)["train"]
    assert state == "failed" and detail.startswith("interrupted")

    registry.update(registry_path(cfg), slug, "curate", {"stats": {}}, config=cfg)  # now the config is known
    assert states(root, slug)["eval"] == ("not run", "")


def test_scheduler_jobs_reconciled_with_markers(make_config):
    configs = {n: make_config("experiment=random-1k", f"curation.n_samples={n}") for n in (1, 2, 3, 4, 5)}
    root = Path(configs[1].paths.root)
    path = registry_path(configs[1])
    slugs = {n: stage_slug(cfg, "curate") for n, cfg in configs.items()}
    for n, cfg in configs.items():
        registry.update(path, slugs[n], "curate", {"stats": {}}, config=cfg)

    registry.record_jobs(path, [(slugs[1], "curate", job("queued"))])
    registry.record_jobs(path, [(slugs[2], "curate", job("running"))])
    registry.record_jobs(path, [(slugs[3], "curate", job("done"))])  # but no marker: its Python raised
    registry.record_jobs(path, [(slugs[4], "curate", job("done"))])
    finish(configs[4], "curate")
    registry.record_jobs(path, [(slugs[5], "curate", job("failed"))])

    found = {n: states(root, slugs[n])["curate"] for n in configs}
    assert found[1] == ("queued", "job 4242")
    assert found[2] == ("running", "job 4242")
    assert found[3] == ("failed", "job 4242 ended without a completion marker")
    assert found[4] == ("done", "job 4242")
    assert found[5] == ("failed", "job 4242 failed")
    assert states(root, slugs[1])["train"] == ("not run", "")


def test_resubmitted_job_outranks_an_older_marker(make_config):
    cfg = make_config("experiment=random-1k")
    root, slug = Path(cfg.paths.root), stage_slug(cfg, "curate")
    finish(cfg, "curate")
    later = "2999-01-01T00:00:00+00:00"
    registry.record_jobs(registry_path(cfg), [(slug, "curate", job("queued", submitted_at=later))])
    assert states(root, slug)["curate"] == ("queued", "job 4242")


def test_shared_upstream_stage_is_found_where_the_config_puts_it(make_config):
    base = make_config("experiment=random-1k")
    variant = make_config("experiment=random-1k", "trainer.learning_rate=3e-05")
    root = Path(base.paths.root)
    finish(base, "curate")
    registry.update(registry_path(base), stage_slug(base, "curate"), "curate", {}, config=base)
    finish(variant, "train")
    variant_slug = stage_slug(variant, "train")
    registry.update(registry_path(variant), variant_slug, "train", {}, config=variant)
    rows = experiment_status(root, load_registry(root / "results.json"), variant_slug)
    by_stage = {row.stage: row for row in rows}
    assert by_stage["curate"].state == "done"
    assert by_stage["curate"].path == str(root / stage_slug(base, "curate") / "curate")
    assert by_stage["train"].state == "done" and by_stage["eval"].state == "not run"
    assert states(root, stage_slug(base, "curate"))["train"] == ("not run", "")  # downstream: never borrowed


def test_result_without_local_output_is_done_from_the_registry(tmp_path):
    data = {
        "experiments": {"imported": {"results": {"eval": {"outputs_path": "/x/p.json", "timestamp": "t"}}}}
    }
    [row] = statuses(tmp_path, data, ["imported"])
    assert (row.stage, row.state, row.path, row.at) == ("eval", "done", "/x/p.json", "t")


def test_lock_probe_sees_a_lock_held_in_this_process(tmp_path):
    lock_file = tmp_path / ".train.lock"
    assert not lock_is_held(lock_file)
    with FileLock(str(lock_file)):
        assert lock_is_held(lock_file)
    assert not lock_is_held(lock_file)
    assert lock_file.exists()  # probing never removes it


def test_rich_view_names_every_state(make_config):
    cfg = make_config("experiment=random-1k")
    root = Path(cfg.paths.root)
    finish(cfg, "curate")
    slug = stage_slug(cfg, "curate")
    registry.update(registry_path(cfg), slug, "curate", {}, config=cfg)
    registry.record_jobs(registry_path(cfg), [(slug, "train", job("queued"))])
    console = Console(width=120, record=True)
    console.print(to_rich(statuses(root, load_registry(root / "results.json"), [slug]), root))
    text = console.export_text()
    for expected in ("done", "queued", "not run", "random-1k/curate", "/logs/4242.out"):
        assert expected in text


def test_report_shows_a_first_run_before_any_result(make_config, capsys):
    cfg = make_config("experiment=random-1k")
    with pytest.raises(RuntimeError), StageWorkspace(cfg, "curate") as workspace:
        (workspace.path / "chunk-0").write_text("kept")  # work a rerun picks up
        raise RuntimeError("killed")
    assert not (Path(cfg.paths.root) / "results.json").exists()
    result = report.run(make_config("stage=report", "report.outputs=[]"))
    assert result == {"experiments": 0, "files": []}
    shown = capsys.readouterr().out
    assert "No chosen experiment has eval results yet." in shown
    assert "random-1k" in shown and "failed" in shown and "interrupted" in shown
