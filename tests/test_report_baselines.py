"""Published baselines as data (meds1/data/baselines, meds1.report.baselines, report.baselines)."""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict

import pytest

from meds1.config.compose import compose
from meds1.errors import UserError
from meds1.evaluation.harnesses import HARNESSES
from meds1.report import baselines
from meds1.report.experiments import Experiment


def test_every_shipped_baseline_is_as_printed_its_average_the_mean_of_its_benchmarks():
    assert baselines.names() == ["m1", "medreason"]
    for name, (models, benchmarks, rounding) in {"m1": (25, 10, 0.006), "medreason": (11, 6, 0.051)}.items():
        rows = baselines.load(name)
        assert {row.harness for row in rows} <= set(HARNESSES)
        by_model: dict[str, dict[str, float]] = defaultdict(dict)
        for row in rows:
            by_model[row.model][row.benchmark] = row.accuracy
        assert len(by_model) == models
        for model, scores in by_model.items():
            sources = [value for benchmark, value in scores.items() if benchmark != "overall"]
            assert len(sources) == benchmarks, model
            assert 100 * statistics.fmean(sources) == pytest.approx(100 * scores["overall"], abs=rounding), (
                model
            )
    m1 = {(r.model, r.benchmark): r.accuracy for r in baselines.load("m1")}
    assert m1["HuatuoGPT-o1-7B", "MedQA_USLME_test"] == pytest.approx(0.7156)  # the figures
    assert m1["HuatuoGPT-o1-7B", "PubMedQA_test"] == pytest.approx(0.786)


def test_an_unknown_baseline_is_one_line_naming_the_valid_ones():
    with pytest.raises(UserError, match=r"report.baselines: unknown baseline 'm2'; valid: m1, medreason"):
        compose(["stage=report", "report.baselines=[m2]"])
    assert compose(["stage=report", "report.baselines=[m1,medreason]"]).report.baselines == [
        "m1",
        "medreason",
    ]


def arm(slug: str, m1_by_source: dict[str, float]) -> Experiment:
    per_source = {s: {"n": 10, "accuracy": a, "accuracy_m1": a} for s, a in m1_by_source.items()}
    overall = {"n": 10 * len(per_source), "accuracy_m1": statistics.fmean(m1_by_source.values() or [0])}
    return Experiment(slug, "", {}, "-", slug, {"overall": overall, "per_source": per_source}, None, None)


def test_published_numbers_sit_beside_the_arms_under_the_same_harness():
    arms = [arm("mine", {"MedQA_USLME_test": 0.5, "PubMedQA_test": 0.7}), arm("not-evaluated", {})]
    arms[1].metrics = None
    (table,), warnings = baselines.pivots(["m1"], arms)
    assert table.header == ["model", "kind", "MedQA_USLME_test", "PubMedQA_test", "overall"]
    assert table.body[0] == ["mine", "this run", "50.0", "70.0", "60.0"]
    assert ["HuatuoGPT-o1-7B", "published", "71.6", "78.6", "57.5"] in table.body
    assert len(table.body) == 1 + 25 and "m1 harness" in table.title and "not paired" in table.note
    (warning,) = warnings
    assert warning.startswith("baseline m1: benchmark(s) GPQA_Medical_test, Lancet, MMLU-Pro_Medical_test, ")
    assert "sources (MedQA_USLME_test, PubMedQA_test); left out" in warning and warning in table.note


def test_report_stage_shows_the_baseline_and_warns(report_registry, make_config, tmp_path, caplog):
    import shutil

    from meds1.stages import report

    shutil.copytree(report_registry, tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        report.run(make_config("stage=report", "report.baselines=[medreason]", "report.outputs=[markdown]"))
    text = (tmp_path / "out" / "report" / "results.md").read_text()
    assert "## Published baselines: medreason (MedReason harness), %" in text
    assert "| MedReason-8B | published | 60.7 | 71.8 | 79.4 | 57.3 |" in text
    assert (
        "baseline medreason: benchmark(s) MedBullets_op4, MedBullets_op5, MedXpertQA match none"
        in caplog.text
    )
