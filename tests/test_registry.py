import json
import multiprocessing

import pytest

from meds1.pipeline import STAGES
from meds1.store import registry


def _writer(path, slug, stage, index):
    registry.update(path, slug, stage, {"index": index, "stats": {"n": index}})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "results.json"
    jobs = [(path, f"exp-{i % 8}", STAGES[i % 3], i) for i in range(24)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=job) for job in jobs]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    written = {
        (slug, stage): record["index"]
        for slug, entry in data["experiments"].items()
        for stage, record in entry["results"].items()
    }
    assert written == {(slug, stage): i for _, slug, stage, i in jobs}
    assert not list(tmp_path.glob(".results.json.*.tmp"))


def test_update_keeps_other_stages_and_experiments(tmp_path):
    path = tmp_path / "results.json"
    registry.update(path, "a", "curate", {"stats": 1}, description="first", config={"seed": 1})
    registry.update(path, "a", "train", {"metrics": 2})
    registry.update(path, "b", "eval", {"metrics": 3})
    data = registry.load(path)
    entry = data["experiments"]["a"]
    assert entry["description"] == "first" and entry["config"] == {"seed": 1}
    assert set(entry["results"]) == {"curate", "train"}
    assert "timestamp" in entry["results"]["train"]
    assert set(data["experiments"]) == {"a", "b"}


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'training'; valid: curate, train, rl, eval"):
        registry.update(tmp_path / "r.json", "a", "training", {})


def test_a_registry_written_with_old_section_names_reads_and_updates_with_stage_names(tmp_path):
    """meds1 once kept records under med-s1's names; they read as stages and survive the next update."""
    path = tmp_path / "results.json"
    old = {
        "a": {"results": {"curation": {"stats": {"selected_rows": 9}}, "training": {"metrics": {"loss": 1}}}},
        "b": {"results": {"curation": {"stats": {"selected_rows": 5}}}, "jobs": {"train": {"job_id": "7"}}},
        "c": {"results": {"curation": {"stats": "old"}, "curate": {"stats": "new"}}},
    }
    path.write_text(json.dumps({"experiments": old}))
    assert registry.load(path)["experiments"]["a"]["results"] == {
        "curate": {"stats": {"selected_rows": 9}},
        "train": {"metrics": {"loss": 1}},
    }
    registry.update(path, "b", "train", {"metrics": {"loss": 2}})
    written = json.loads(path.read_text())["experiments"]
    assert set(written["a"]["results"]) == {"curate", "train"}
    assert written["b"]["results"]["curate"] == {"stats": {"selected_rows": 5}}
    assert written["b"]["results"]["train"]["metrics"] == {"loss": 2}
    assert written["b"]["jobs"] == {"train": {"job_id": "7"}}
    assert written["c"]["results"] == {"curate": {"stats": "new"}}


def test_secrets_are_never_written(tmp_path, monkeypatch, make_config):
    monkeypatch.setenv("MY_API_KEY", "sk-very-secret")
    config = {"inference": {"api_key": "sk-very-secret", "hf_token": "hf_abc", "max_new_tokens": 5}}
    registry.update(tmp_path / "r.json", "a", "eval", {"metrics": {}, "auth_token": "hf_abc"}, config=config)
    text = (tmp_path / "r.json").read_text()
    assert "sk-very-secret" not in text and "hf_abc" not in text
    assert json.loads(text)["experiments"]["a"]["config"]["inference"]["max_new_tokens"] == 5


def test_each_stage_record_keeps_the_config_it_read(make_config):
    from meds1.stages import record_result
    from meds1.store.identity import stage_slug
    from meds1.store.registry import registry_path

    point = make_config("experiment=demo", "trainer.learning_rate=1e-3", "eval.max_new_tokens=64")
    for stage in ("curate", "train", "eval"):
        record_result(point, stage, {"n": stage})
    entries = registry.load(registry_path(point))["experiments"]
    curation = entries[stage_slug(point, "curate")]  # "demo": shared by every learning-rate point
    assert (
        stage_slug(point, "curate") == "demo"
        and curation["config"] == curation["results"]["curate"]["config"]
    )
    assert "trainer" not in curation["config"] and curation["config"]["overrides"] == []
    assert curation["config"]["curation"]["n_samples"] == point.curation.n_samples
    trained = entries[stage_slug(point, "train")]["results"]["train"]["config"]
    assert trained["trainer"]["learning_rate"] == 1e-3 and "eval" not in trained
    assert trained["overrides"] == ["trainer.learning_rate=1e-3"]
    evaluated = entries[stage_slug(point, "eval")]
    assert evaluated["config"]["overrides"] == ["eval.max_new_tokens=64", "trainer.learning_rate=1e-3"]
    assert evaluated["config"]["override_scope"]["eval.max_new_tokens=64"] == ["eval"]


def test_an_older_entry_keeps_its_config_until_a_stage_records_its_own(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps({"experiments": {"a": {"config": {"seed": 1}, "results": {"eval": {"n": 1}}}}})
    )
    registry.update(path, "a", "curate", {"n": 2})
    assert registry.load(path)["experiments"]["a"]["config"] == {"seed": 1}
    registry.update(path, "a", "curate", {"n": 3}, config={"seed": 2})
    assert registry.load(path)["experiments"]["a"]["config"] == {"seed": 2}
