"""A stage's record names what it read (its slug, hash and input: the model an eval evaluated, the curation a
model was trained on), and the report follows those names instead of guessing from slugs."""

import dataclasses

from meds1.report.experiments import experiments, load_registry
from meds1.report.plots import sample_efficiency
from meds1.stages import record_result
from meds1.store import registry
from meds1.store.registry import registry_path
from meds1.store.workspace import StageWorkspace

SUMMARY = {"n": 100, "accuracy": 0.5, "accuracy_huatuo": 0.5, "ci95": [0.4, 0.6], "unparseable": 0.1}


def finish(cfg, stage: str, record: dict) -> dict:
    """Make a stage's output as the stages do: commit it, then record it in results.json."""
    with StageWorkspace(cfg, stage) as workspace:
        workspace.commit(record)
    record_result(cfg, stage, record)
    return record


def scored(accuracy: float) -> dict:
    summary = {**SUMMARY, "accuracy": accuracy}
    return {"metrics": {"overall": summary, "per_source": {"DemoMedQA": summary}}}


def test_an_eval_names_the_model_it_evaluated_and_the_report_draws_it_so(make_config):
    cfg = make_config("experiment=demo")
    curated = finish(cfg, "curate", {"stats": {"selected_rows": 220}})
    trained = finish(cfg, "train", {"model_path": "m"})
    finish(cfg, "eval", scored(0.5))
    assert curated["identity"] == {"slug": "demo", "hash": StageWorkspace(cfg, "curate").hash, "input": None}
    assert trained["identity"]["input"] == {
        "stage": "curate",
        "slug": "demo",
        "hash": curated["identity"]["hash"],
    }
    longer = make_config("experiment=demo", "eval.max_new_tokens=64", "stage=eval")  # after stage=all
    evaluated = finish(longer, "eval", scored(0.4))
    assert evaluated["identity"]["slug"] == "demo__eval.max_new_tokens=64"
    assert evaluated["identity"]["input"] == {
        "stage": "train",
        "slug": "demo",
        "hash": trained["identity"]["hash"],
    }
    base = dataclasses.replace(cfg, name="demo-base", stages=["eval"])
    assert finish(base, "eval", scored(0.3))["identity"]["input"] is None  # the base model

    data = load_registry(registry_path(cfg))
    assert set(data["experiments"]["demo__eval.max_new_tokens=64"]["results"]) == {"eval"}
    chosen = {e.slug: e for e in experiments(data, sorted(data["experiments"]), "curation.method")}
    other = chosen["demo__eval.max_new_tokens=64"]
    assert (other.trained, other.model, other.train_samples) == (True, "demo", 220)
    assert other.eval_overrides == ["eval.max_new_tokens=64"]
    assert (chosen["demo-base"].trained, chosen["demo-base"].train_samples) == (False, None)
    chart = sample_efficiency(list(chosen.values()), "accuracy")
    assert set(chart.series) == {"s1", "s1 (eval.max_new_tokens=64)", "demo-base (not fine-tuned)"}


def test_an_eval_of_a_model_trained_again_since_is_not_linked_to_the_new_one(make_config):
    cfg = make_config("experiment=demo")
    finish(cfg, "curate", {"stats": {"selected_rows": 220}})
    finish(cfg, "train", {"model_path": "m"})
    finish(cfg, "eval", scored(0.5))
    path = registry_path(cfg)
    entry = registry.load(path)["experiments"]["demo"]["results"]["train"]
    registry.update(path, "demo", "train", {**entry, "identity": {**entry["identity"], "hash": "retrained"}})
    (exp,) = experiments(load_registry(path), ["demo"], "curation.method")
    assert exp.trained and exp.curation_slug is None and exp.train_samples is None  # not the new model's
    assert sample_efficiency([exp], "accuracy") is None  # neither a point nor a not-fine-tuned line
