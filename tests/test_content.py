"""A stage's identity covers the content of the files it reads: digests of files, folders and model folders
(meds1.store.content), which files a config makes each stage read, and what the workspace does when one
of them changed under a complete output."""

import dataclasses
import hashlib
import json
import struct

import pytest

from meds1.errors import MissingInputError, OutputConflictError
from meds1.hub import resolve_data_path
from meds1.store import content
from meds1.store.identity import INPUTS, StageIdentity, config_hash
from meds1.store.workspace import MARKER, StageWorkspace, read_marker, require_complete, write_json_atomic
from tests.conftest import REPO

DEMO_ROWS = REPO / "meds1/data/demo_sft.jsonl"


@pytest.fixture
def rows(tmp_path):
    """A copy of the demo rows, the curation source a user edits."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(DEMO_ROWS.read_bytes())
    return path


def keep_lines(path, n: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))


def test_a_file_is_read_once_per_version(tmp_path, monkeypatch):
    file = tmp_path / "rows.jsonl"
    file.write_text("one\n")
    cache = tmp_path / "cache"
    first = content.file_digest(file, cache)
    assert first == hashlib.sha256(b"one\n").hexdigest()
    content._remembered.clear()  # a new process: the digest comes from the disk cache, the file is not read

    def unread(*args, **kwargs):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(content.hashlib, "file_digest", unread)
    assert content.file_digest(file, cache) == first
    monkeypatch.undo()
    file.write_text("two\n")  # the same size: its change time tells
    assert content.file_digest(file, cache) == hashlib.sha256(b"two\n").hexdigest()


def test_folders_digest_the_files_they_hold(tmp_path):
    folder = tmp_path / "saved"
    (folder / "part").mkdir(parents=True)
    (folder / "state.json").write_text("{}")
    (folder / "part" / "data-0.arrow").write_text("rows")
    before = content.path_digest(folder)
    (folder / ".lock").write_text("x")  # hidden names are not data
    assert content.path_digest(folder) == before
    (folder / "part" / "data-0.arrow").write_text("other rows")
    assert content.path_digest(folder) != before
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "a.json").write_text("[]")
    read = content.path_digest(suite, suffixes=(".json",))
    (suite / "README.md").write_text("notes")  # a suite folder reads its .json/.jsonl/.csv/.parquet only
    assert content.path_digest(suite, suffixes=(".json",)) == read
    (suite / "b.json").write_text("[]")
    assert content.path_digest(suite, suffixes=(".json",)) != read
    assert content.path_digest(tmp_path / "nope") == content.ABSENT


def safetensors(path, shape: tuple[int, ...], fill: bytes) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": list(shape), "data_offsets": [0, 4 * shape[0]]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + fill * shape[0])


def test_a_model_folder_counts_by_its_files_sizes_and_safetensors_headers(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    safetensors(model / "model.safetensors", (4,), b"\0\0\0\0")
    before = content.model_fingerprint(model)
    safetensors(model / "model.safetensors", (4,), b"\1\1\1\1")  # other weights, same tensors: not read
    assert content.model_fingerprint(model) == before
    safetensors(model / "model.safetensors", (5,), b"\0\0\0\0")
    reshaped = content.model_fingerprint(model)
    assert reshaped != before
    (model / "config.json").write_text('{"hidden_size": 32}')
    assert content.model_fingerprint(model) != reshaped


def test_which_files_each_stage_reads(make_config, rows, tmp_path):
    taxonomy = tmp_path / "specialties.txt"
    taxonomy.write_text("Cardiology\nNeurology\n")
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text("{}")
    suite = [str(tmp_path / "eval.json"), "hf://org/bench?split=test"]
    cfg = make_config(
        "experiment=demo",
        f"curation.source.path={rows}",
        "curation.specialty.method=llm",
        "curation.specialty.llm.inference.base_url=http://127.0.0.1:9/v1",
        f"curation.specialty.taxonomy={taxonomy}",
        f"curation.decontamination.suite=[{suite[0]}]",
        f"eval.suite=[{suite[0]},'{suite[1]}']",
        "model=llama3.1-8b",
        f"model.path={model}",
    )
    curate, evaluate = StageIdentity(cfg, "curate"), StageIdentity(cfg, "eval")
    assert curate.paths == {
        "model.path": str(model),
        "curation.source.path": str(rows),
        "curation.decontamination.suite[0]": suite[0],
        "curation.specialty.taxonomy": str(taxonomy),
    }
    assert curate.inputs["curation.decontamination.suite[0]"] == content.ABSENT  # not made yet
    assert evaluate.paths == {
        **curate.paths,
        "eval.suite[0]": suite[0],
    }  # not the hub's: its revision is config
    assert StageIdentity(cfg, "train").inputs == curate.inputs
    base = make_config("experiment=demo", "stages=[eval]")
    assert StageIdentity(base, "eval").paths == {"eval.suite[0]": "pkg://meds1/data/demo_eval.json"}
    shipped = StageIdentity(make_config("experiment=demo"), "curate").inputs["curation.source.path"]
    assert shipped == content.file_digest(resolve_data_path("pkg://meds1/data/demo_sft.jsonl"))


def test_an_edited_file_changes_the_hash_of_every_stage_that_reads_it(make_config, rows):
    cfg = make_config("experiment=demo", f"curation.source.path={rows}")
    before = {stage: config_hash(cfg, stage) for stage in ("curate", "train", "eval")}
    assert {stage: config_hash(cfg, stage) for stage in before} == before
    keep_lines(rows, 60)
    after = {stage: config_hash(cfg, stage) for stage in before}
    assert all(after[stage] != before[stage] for stage in before)
    base = make_config("experiment=demo", "stages=[eval]", f"curation.source.path={rows}")
    assert StageIdentity(base, "eval").paths.keys() == {
        "eval.suite[0]"
    }  # the base model's eval reads no rows


def test_an_output_made_from_an_older_file_is_never_reused_nor_replaced(make_config, rows):
    cfg = make_config("experiment=demo", f"curation.source.path={rows}", "stage=curate")
    with StageWorkspace(cfg, "curate") as ws:
        ws.commit({"rows": 240})
    assert StageWorkspace(cfg, "curate").completed_record()["rows"] == 240  # unchanged: reused
    keep_lines(rows, 60)
    edited = StageWorkspace(cfg, "curate")
    said = (
        rf"^stage curate: {ws.final} was made from another version of curation.source.path \({rows}\) "
        rf"\(hash {ws.hash}, finished .*, by experiment=demo curation.source.path={rows}\)\. To remake it "
        r"from the files as they are now add force=true; to keep both, give this run another name "
        r"\(name=demo-2\)$"
    )
    with pytest.raises(OutputConflictError, match=said):
        edited.completed_record()
    with pytest.raises(OutputConflictError, match=said), edited:
        pass
    trainer = dataclasses.replace(cfg, stage="train")
    with pytest.raises(MissingInputError) as refused:  # train after the edit, curate not rerun
        require_complete(trainer, "curate", "curated dataset")
    assert str(refused.value) == (
        f"curated dataset at {ws.final} was made from another version of curation.source.path ({rows}) "
        f"(hash {ws.hash}, finished {read_marker(ws.final)['finished_at']}, by experiment=demo "
        f"curation.source.path={rows}): remake it with `python run.py experiment=demo stage=curate "
        f"curation.source.path={rows} paths.root={cfg.paths.root} paths.cache={cfg.paths.cache} force=true`"
    )
    with StageWorkspace(dataclasses.replace(cfg, force=True), "curate") as again:
        again.commit({"rows": 60})
    assert require_complete(trainer, "curate", "curated dataset") == ws.final


def test_a_train_made_from_an_older_source_names_the_stage_to_remake_first(make_config, rows):
    cfg = make_config("experiment=demo", f"curation.source.path={rows}", "stage=train")
    with StageWorkspace(cfg, "train") as ws:
        ws.commit({"model": "m"})
    keep_lines(rows, 60)
    with pytest.raises(
        OutputConflictError,
        match=r"; stage curate read it first: remake it with `python run.py "
        r"experiment=demo stage=curate .* force=true`, then this one\. To remake it",
    ):
        StageWorkspace(cfg, "train").completed_record()


def test_an_older_meds1s_output_is_found_and_then_records_its_files(make_config, rows):
    cfg = make_config("experiment=demo", f"curation.source.path={rows}", "stage=curate")
    with StageWorkspace(cfg, "curate") as ws:
        ws.commit({"rows": 240})
    identity = ws.identity
    older = {k: v for k, v in read_marker(ws.final).items() if k != INPUTS}  # as meds1 wrote it before
    write_json_atomic(ws.final / MARKER, {**older, "config_hash": identity.legacy_hash})
    planned = StageWorkspace(cfg, "curate")
    assert planned.completed_record(link=False)["rows"] == 240  # found (a plan changes nothing)...
    assert INPUTS not in read_marker(ws.final)
    assert StageWorkspace(cfg, "curate").completed_record()["rows"] == 240  # ...and adopted by a run
    adopted = read_marker(ws.final)
    assert adopted["config_hash"] == identity.hash and adopted[INPUTS] == identity.inputs
    assert adopted["adopted"] == {"from": identity.legacy_hash}
    keep_lines(rows, 60)  # from now on an edit is caught
    with pytest.raises(OutputConflictError, match="was made from another version of curation.source.path"):
        StageWorkspace(cfg, "curate").completed_record()
    other = make_config("experiment=demo", f"curation.source.path={rows}", "seed=1")
    write_json_atomic(ws.final / MARKER, {**older, "config_hash": StageIdentity(other, "curate").legacy_hash})
    with pytest.raises(OutputConflictError, match="holds a complete output made with another config"):
        StageWorkspace(cfg, "curate").completed_record()


def test_older_outputs_are_found_by_the_endpoint_they_were_made_with(make_config):
    """meds1 hashed endpoint settings before they left identity: an older marker counts for its own."""
    here, there = (
        make_config("experiment=demo", f"curation.trace.llm.inference.base_url=http://{host}:8000/v1")
        for host in ("node-1", "node-2")
    )
    assert StageIdentity(here, "curate").hash == StageIdentity(there, "curate").hash
    assert StageIdentity(here, "curate").legacy_hash != StageIdentity(there, "curate").legacy_hash


def test_stage_all_names_each_step_by_its_slug(make_config, monkeypatch, caplog):
    from meds1 import pipeline
    from meds1.stages import all as chain

    monkeypatch.setattr(pipeline, "run", lambda cfg, stage: {})
    cfg = make_config("experiment=demo", "curation.n_samples=40", "trainer.learning_rate=1e-3")
    with caplog.at_level("INFO"):
        chain.run(cfg)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("===")] == [
        "=== demo__curation.n_samples=40: stage curate ===",
        "=== demo__curation.n_samples=40__trainer.learning_rate=1e-3: stage train ===",
        "=== demo__curation.n_samples=40__trainer.learning_rate=1e-3: stage eval ===",
        "=== demo-base: stage eval ===",
    ]
