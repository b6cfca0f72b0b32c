import dataclasses
import shlex
from datetime import datetime, timedelta, timezone

import pytest

from meds1.errors import Interrupted, MissingInputError, OutputConflictError, StageBusyError
from meds1.store.identity import config_hash
from meds1.store.workspace import (
    MARKER,
    StageDir,
    StageWorkspace,
    read_marker,
    require_complete,
    stage_command,
)


def test_commit_moves_complete_output_into_place(make_config):
    cfg = make_config("experiment=random-1k")
    with StageWorkspace(cfg, "curate") as ws:
        (ws.path / "data.txt").write_text("rows")
        assert not ws.final.exists()
        ws.commit(record := {"n": 1})
    assert (ws.final / "data.txt").read_text() == "rows"
    assert set(record) == {"n", "provenance", "identity"}  # the record that also goes to results.json
    assert record["identity"] == {"slug": "random-1k", "hash": ws.hash, "input": None}
    assert read_marker(ws.final)["record"] == record
    assert not ws.partial.exists()
    assert StageWorkspace(cfg, "curate").completed_record() == record


def test_force_means_not_complete(make_config):
    cfg = make_config("experiment=random-1k")
    with StageWorkspace(cfg, "curate") as ws:
        ws.commit({"n": 1})
    assert (
        StageWorkspace(make_config("experiment=random-1k", "force=true"), "curate").completed_record() is None
    )


def test_a_complete_output_of_another_config_is_never_replaced(make_config):
    cfg = make_config("experiment=random-1k", "seed=3")
    with StageWorkspace(cfg, "curate") as ws:
        (ws.path / "rows").write_text("first")
        ws.commit({"n": 1})
    changed = make_config("experiment=random-1k", "seed=3")
    changed.curation.long_cot_tokens = 5  # e.g. an edited experiment file: same slug, other config
    workspace = StageWorkspace(changed, "curate")
    said = (
        rf"stage curate: {ws.final} holds a complete output made with another config "
        rf"\(hash {ws.hash}, finished 20\d\d-.*, by experiment=random-1k seed=3\); "
        rf"this run's config hashes to {workspace.hash}\. To replace it add force=true; "
        r"to keep both, give this run another name \(name=random-1k-2\)$"
    )
    with pytest.raises(OutputConflictError, match=said):
        workspace.completed_record()  # what the stages and the SLURM planner ask first
    with pytest.raises(OutputConflictError, match=said), workspace:  # and again under the stage's lock
        pass
    assert (ws.final / "rows").read_text() == "first" and not ws.partial.exists()
    with StageWorkspace(cfg, "curate"):  # the refusal released the lock
        pass
    forced = dataclasses.replace(changed, force=True)
    with StageWorkspace(forced, "curate") as again:
        again.commit({"n": 2})
    assert read_marker(ws.final)["config_hash"] == workspace.hash


def test_an_upstream_output_of_another_config_is_not_read(make_config):
    cfg = make_config("experiment=random-1k", "eval.suite=[a.json,b c.json]", "stage=train")
    with StageWorkspace(cfg, "curate") as ws:
        ws.commit({"n": 1})
    assert require_complete(cfg, "curate", "curated dataset") == ws.final
    edited = dataclasses.replace(cfg, curation=dataclasses.replace(cfg.curation, n_samples=50))
    with pytest.raises(MissingInputError) as refused:
        require_complete(edited, "curate", "curated dataset")
    message = str(refused.value)
    assert "\n" not in message and f"curated dataset at {ws.final} was made with another config" in message
    assert f"(hash {ws.hash}, finished " in message and f"(hash {config_hash(edited, 'curate')})" in message
    command = message.split("remake it with `")[1].rstrip("`")
    assert shlex.split(command)[2:] == [
        "experiment=random-1k",
        "stage=curate",
        "eval.suite=[a.json,b c.json]",
        f"paths.root={cfg.paths.root}",
        f"paths.cache={cfg.paths.cache}",
        "force=true",
    ]  # quoted: the list and the space survive copy and paste into a shell


def test_a_marker_says_which_experiment_made_it_and_when(make_config):
    cfg = make_config("experiment=random-1k", "seed=3", "trainer.learning_rate=1e-3")
    with StageWorkspace(cfg, "curate") as ws:
        ws.commit({"n": 1})
    marker = read_marker(ws.final)
    assert marker["experiment"] == {"name": "random-1k", "overrides": ["seed=3"]}  # not the trainer's
    directory = StageDir.of(cfg, "curate")
    finished = datetime.fromisoformat(marker["finished_at"])
    other = StageWorkspace(make_config("experiment=random-1k", "seed=4"), "curate").identity
    assert directory.complete(ws.identity) and not directory.complete(other)
    assert directory.finished_since(finished - timedelta(seconds=1), ws.hash)
    assert not directory.finished_since(finished + timedelta(seconds=1), ws.hash)
    # Times written with another offset compare as times, not as text.
    west = (finished + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-2))).isoformat()
    assert marker["finished_at"] >= west and not directory.finished_since(west, ws.hash)
    assert not directory.finished_since(None, "other") and directory.finished_since(None)
    assert not directory.running and not directory.interrupted


def test_interrupted_stage_leaves_no_complete_output_and_resumes(make_config):
    cfg = make_config("experiment=random-1k")
    with pytest.raises(RuntimeError), StageWorkspace(cfg, "curate") as ws:
        (ws.path / "chunk-0").write_text("done")
        raise RuntimeError("killed")
    assert not ws.final.exists() and read_marker(ws.final) is None
    with StageWorkspace(cfg, "curate") as again:
        assert (again.path / "chunk-0").read_text() == "done"  # same config: resume
    with StageWorkspace(make_config("experiment=random-1k", "force=true"), "curate") as fresh:
        assert not (fresh.path / "chunk-0").exists()  # force: restart clean


def test_a_stage_that_fails_before_keeping_work_leaves_no_partial_output(make_config):
    """A failed input check: nothing for a rerun to pick up, so no stage looks interrupted."""
    cfg = make_config("experiment=random-1k")
    with pytest.raises(MissingInputError), StageWorkspace(cfg, "curate") as ws:
        (ws.path / "empty-folder").mkdir()
        raise MissingInputError("curation.source.path nope.jsonl does not exist")
    assert not ws.partial.exists() and not StageDir.of(cfg, "curate").interrupted
    with StageWorkspace(cfg, "curate"):  # the lock was released
        pass


def test_ctrl_c_in_a_stage_says_what_it_kept_and_the_command_that_continues(make_config):
    cfg = make_config("experiment=random-1k", "stage=curate")
    command = stage_command(cfg, "curate")
    assert command.startswith("python run.py experiment=random-1k stage=curate paths.root=")
    dry = make_config("experiment=random-1k", "stage=train", "dry_run=true")
    assert "dry_run" not in stage_command(dry, "curate")  # the command that makes it, not another plan
    with pytest.raises(Interrupted) as stopped, StageWorkspace(cfg, "curate") as ws:
        (ws.path / "chunk-0").write_text("done")
        raise KeyboardInterrupt
    assert str(stopped.value) == (
        f"curate: interrupted (Ctrl-C); the work it kept is in {ws.partial}, "
        f"and `{command}` continues from it"
    )
    assert (ws.partial / "chunk-0").exists() and StageDir.of(cfg, "curate").interrupted
    (ws.partial / "chunk-0").unlink()
    with pytest.raises(Interrupted) as stopped, StageWorkspace(cfg, "curate"):
        raise KeyboardInterrupt
    said = f"curate: interrupted (Ctrl-C) before it kept any work; `{command}` reruns it"
    assert str(stopped.value) == said
    assert not ws.partial.exists()


def test_partial_from_another_config_is_discarded(make_config):
    cfg = make_config("experiment=random-1k")
    with pytest.raises(RuntimeError), StageWorkspace(cfg, "curate") as ws:
        (ws.path / "chunk-0").write_text("old")
        raise RuntimeError
    cfg.curation.long_cot_tokens = 5
    with StageWorkspace(cfg, "curate") as ws:
        assert not (ws.path / "chunk-0").exists()


def test_recommit_replaces_previous_output(make_config):
    cfg = make_config("experiment=random-1k", "force=true")
    for n in (1, 2):
        with StageWorkspace(cfg, "curate") as ws:
            (ws.path / f"only-{n}").touch()
            ws.commit({"n": n})
    assert sorted(p.name for p in ws.final.iterdir()) == [MARKER, "only-2"]


def test_second_process_on_same_stage_is_refused(make_config):
    cfg = make_config("experiment=random-1k")
    with StageWorkspace(cfg, "curate"), pytest.raises(StageBusyError), StageWorkspace(cfg, "curate"):
        pass


def test_missing_input_names_the_stage_to_run(make_config):
    cfg = make_config("experiment=random-1k", "curation.n_samples=5", "stage=train")
    with pytest.raises(
        MissingInputError,
        match=r"run `python run.py experiment=random-1k stage=curate "
        r"curation.n_samples=5 paths.root=.*` first",
    ):
        require_complete(cfg, "curate", "curated dataset")


def test_config_hash_ignores_resources_and_paths(make_config):
    a = make_config("experiment=random-1k")
    b = make_config("experiment=random-1k", "trainer.resources.gpus=4", "paths.root=/elsewhere")
    assert config_hash(a, "train") == config_hash(b, "train")
    assert config_hash(a, "train") != config_hash(
        make_config("experiment=random-1k", "trainer.num_epochs=1"), "train"
    )


def test_a_complete_stage_with_the_same_config_is_reused_wherever_it_lives(make_config):
    import dataclasses

    from meds1.launch.plan import COMPLETE, plan
    from meds1.store.workspace import stage_dir

    cfg = make_config("experiment=random-1k")
    with StageWorkspace(cfg, "curate") as ws:
        (ws.path / "rows").write_text("curated")
        ws.commit({"n": 1})
    # The same config under another slug (e.g. one named from other overrides): same hash, other directory.
    other = dataclasses.replace(cfg, overrides=["curation.n_samples=1000"], stage="train")
    assert stage_dir(other, "curate") != stage_dir(cfg, "curate")
    assert config_hash(other, "curate") == config_hash(cfg, "curate")
    assert require_complete(other, "curate", "curated dataset") == stage_dir(cfg, "curate").resolve()
    assert plan([dataclasses.replace(other, stage="all")], None)[0].action == COMPLETE  # plans do not link
    assert not stage_dir(other, "curate").exists()
    workspace = StageWorkspace(other, "curate")
    assert workspace.completed_record()["n"] == 1
    assert workspace.reused_from == stage_dir(cfg, "curate").resolve()
    assert (stage_dir(other, "curate") / "rows").read_text() == "curated"  # linked into its own slug
    forced = StageWorkspace(dataclasses.replace(other, force=True), "curate")
    with forced:
        forced.commit({"n": 2})
    assert read_marker(stage_dir(cfg, "curate"))["record"]["n"] == 1  # the original is left alone
    assert read_marker(stage_dir(other, "curate"))["record"]["n"] == 2
    changed = dataclasses.replace(other, overrides=["seed=3"], seed=3)
    assert StageWorkspace(changed, "curate").completed_record() is None  # another config: not reused


def test_a_stage_run_under_another_slug_reuses_and_records_the_finished_one(make_config, tmp_path):
    import dataclasses

    import pandas as pd

    from meds1.stages import curate
    from meds1.store import registry
    from meds1.store.identity import stage_slug
    from meds1.store.registry import registry_path
    from tests.conftest import REPO

    source = tmp_path / "rows.jsonl"
    pd.read_json(REPO / "meds1/data/demo_sft.jsonl", lines=True).dropna().head(9).to_json(
        source, orient="records", lines=True
    )
    cfg = make_config("experiment=demo", f"curation.source.path={source}")
    first = curate.run(cfg)
    (tmp_path / "out" / stage_slug(cfg, "curate") / "curate" / "curated.parquet").unlink()  # a later run
    other = dataclasses.replace(cfg, name="demo-again")  # same config, another slug
    assert curate.run(other) == first  # not recomputed: it would have written curated.parquet again
    slug = stage_slug(other, "curate")
    assert slug.startswith("demo-again__") and (tmp_path / "out" / slug / "curate").is_symlink()
    assert not (tmp_path / "out" / slug / "curate" / "curated.parquet").exists()
    entry = registry.load(registry_path(other))["experiments"][slug]
    assert entry["results"]["curate"]["stats"] == first["stats"]
