import json
import multiprocessing

import pytest

from meds1 import registry


def _writer(path, slug, section, index):
    registry.update(path, slug, section, {"index": index, "stats": {"n": index}})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "results.json"
    jobs = [(path, f"exp-{i % 8}", registry.SECTIONS[i % 3], i) for i in range(24)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=job) for job in jobs]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    written = {
        (slug, section): record["index"]
        for slug, entry in data["experiments"].items()
        for section, record in entry["results"].items()
    }
    assert written == {(slug, section): i for _, slug, section, i in jobs}
    assert not list(tmp_path.glob(".results.json.*.tmp"))


def test_update_keeps_other_stages_and_experiments(tmp_path):
    path = tmp_path / "results.json"
    registry.update(path, "a", "curation", {"stats": 1}, description="first", config={"seed": 1})
    registry.update(path, "a", "training", {"metrics": 2})
    registry.update(path, "b", "eval", {"metrics": 3})
    data = registry.load(path)
    entry = data["experiments"]["a"]
    assert entry["description"] == "first" and entry["config"] == {"seed": 1}
    assert set(entry["results"]) == {"curation", "training"}
    assert "timestamp" in entry["results"]["training"]
    assert set(data["experiments"]) == {"a", "b"}


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ValueError, match="valid: curation, training, eval"):
        registry.update(tmp_path / "r.json", "a", "train", {})


def test_secrets_are_never_written(tmp_path, monkeypatch, make_config):
    monkeypatch.setenv("MY_API_KEY", "sk-very-secret")
    config = {"inference": {"api_key": "sk-very-secret", "hf_token": "hf_abc", "max_new_tokens": 5}}
    registry.update(tmp_path / "r.json", "a", "eval", {"metrics": {}, "auth_token": "hf_abc"}, config=config)
    text = (tmp_path / "r.json").read_text()
    assert "sk-very-secret" not in text and "hf_abc" not in text
    assert json.loads(text)["experiments"]["a"]["config"]["inference"]["max_new_tokens"] == 5
