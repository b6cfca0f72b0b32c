"""The trace study in the report: the trace chain column, med-s1's perturbation figure (accuracy vs
rate, one line per type, with intervals) and accuracy per trace format, on med-s1 results imported
from a constructed results.json and on meds1's own recorded configs."""

import json

import pytest

from meds1.medsone.results import import_medsone
from meds1.report.experiments import experiments, load_registry
from meds1.report.plots import perturbation_rates, trace_chain, trace_formats, trace_label
from meds1.report.tables import trace_pivot
from meds1.stages import report as report_stage
from meds1.store.registry import registry_path

ACCURACY = {  # med-s1 experiment -> (curation config, accuracy)
    "base": (None, 0.50),
    "medqa-1k-random": ({"method": "random", "format": "huatuo", "n_samples": 1000}, 0.61),
    "medqa-1k-random-step-extract": ({"method": "random", "n_samples": 1000, "extract": "step"}, 0.60),
    "medqa-1k-random-list-extract": ({"method": "random", "n_samples": 1000, "extract": "list"}, 0.57),
    **{
        f"medqa-1k-random-skip-{round(100 * rate)}": (
            {"method": "random", "n_samples": 1000, "extract": "step",
             "perturbation": {"type": "skip", "rate": rate}},
            accuracy,
        )
        for rate, accuracy in ((0.33, 0.58), (0.66, 0.55), (1.0, 0.50))
    },
    "medqa-1k-random-skip-33-restore": (
        {"method": "random", "n_samples": 1000, "extract": "step",
         "perturbation": {"type": "skip", "rate": 0.33}, "restore": True},
        0.59,
    ),
}  # fmt: skip


def medsone_entry(curation: dict | None, accuracy: float) -> dict:
    summary = {
        "MedQA_USLME_test": {
            "accuracy": accuracy,
            "accuracy_ci": [accuracy - 0.02, accuracy + 0.02],
            "total_examples": 1000,
            "num_correct": round(1000 * accuracy),
            "num_answered": 1000,
        }
    }
    training = {"learning_rate": 5e-06, "batch_size": 2, "num_epochs": 8} if curation else None
    return {
        "description": "",
        "config": {"model_key": "llama3.1:8b", "curation": curation, "training_params": training},
        "results": {
            "curation": {"dataset_path": "/x/formatted", "timestamp": "t"} if curation else None,
            "training": {"model_path": "/x/model"} if curation else None,
            "eval": {"summary": summary},
        },
    }


def rounded(points):
    return [(x if isinstance(x, str) else round(x, 6), round(y, 6)) for x, y in points]


@pytest.fixture
def imported(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"experiments": {n: medsone_entry(*v) for n, v in ACCURACY.items()}}))
    registry_file = tmp_path / "out" / "results.json"
    registry_file.parent.mkdir()
    import_medsone(results, registry_file)
    data = load_registry(registry_file)
    return registry_file, experiments(data, sorted(data["experiments"]), "curation.method")


def test_perturbation_figure_has_a_line_per_type_from_the_unperturbed_trace(imported):
    _, chosen = imported
    chart = perturbation_rates(chosen, "accuracy_huatuo")
    assert chart.name == "perturbation_rates" and chart.png.startswith(b"\x89PNG")
    assert rounded(chart.series["skip"]) == [(0.0, 60.0), (0.33, 58.0), (0.66, 55.0), (1.0, 50.0)]
    assert rounded(chart.series["skip + restore"]) == [(0.0, 60.0), (0.33, 59.0)]
    assert perturbation_rates(chosen, "accuracy") is None  # med-s1 records no strict accuracy


def test_accuracy_per_trace_format(imported):
    _, chosen = imported
    chart = trace_formats(chosen, "accuracy_huatuo")
    assert rounded(chart.series["trace format"]) == [("source", 61.0), ("step", 60.0), ("list", 57.0)]


def test_trace_column(imported):
    _, chosen = imported
    pivot = trace_pivot(chosen)
    rows = {cells[0]: cells for cells in pivot.body}
    assert rows["medqa-1k-random-skip-33-restore"][1:4] == ["step > skip 0.33 > restore", "-", "1000"]
    assert rows["medqa-1k-random"][1:3] == ["source", "huatuo"]
    assert rows["base"][1] == "-" and rows["medqa-1k-random-list-extract"][5] == "57.0"
    untouched = [e for e in chosen if e.slug in ("base", "medqa-1k-random")]
    assert trace_pivot(untouched) is None


def test_meds1_recorded_trace_configs():
    chain = trace_chain(
        {"curation": {"trace": {"transforms": ["cot", "step"],
                                "perturbation": {"type": "shuffle", "rate": 0.66}, "restore": True}}}
    )  # fmt: skip
    assert trace_label(chain) == "cot > step > shuffle 0.66 > restore"
    plain = trace_chain(
        {"curation": {"trace": {"transforms": [], "perturbation": {"type": None, "rate": 1.0}}}}
    )
    assert trace_label(plain) == "source" and plain["rate"] is None
    medsone = trace_chain(
        {"curation": {"extract": ["nejmcr-qa"], "perturbation": {"type": "skip", "rate": 1.0}}}
    )
    assert medsone["transforms"] == ["nejmcr-qa", "step"]  # med-s1 appends step before perturbing


def test_report_stage_writes_the_trace_figures_and_table(imported, make_config, tmp_path):
    registry_file, _ = imported
    cfg = make_config("stage=report", "report.metric=accuracy_huatuo", "report.status=false")
    assert registry_path(cfg) == registry_file
    report_stage.run(cfg)
    out = tmp_path / "out" / "report"
    assert (out / "perturbation_rates.png").is_file() and (out / "trace_formats.png").is_file()
    markdown = (out / "results.md").read_text()
    assert "## Reasoning traces" in markdown and "| medqa-1k-random-skip-66 | step > skip 0.66 |" in markdown
    assert 'id="perturbation_rates"' in (out / "index.html").read_text()


def test_imported_results_get_an_overall_interval_from_their_sources(imported):
    from meds1.report.plots import _overall

    _, chosen = imported
    skip = next(e for e in chosen if e.slug == "medqa-1k-random-skip-66")
    y, (low, high) = _overall(skip, "accuracy_huatuo")
    assert (round(y, 6), round(low, 6), round(high, 6)) == (55.0, 53.0, 57.0)  # one source: its own interval
    skip.metrics["per_source"]["PubMedQA_test"] = {
        "n": 1000,
        "accuracy_huatuo": 0.55,
        "ci95_huatuo": [0.53, 0.57],
    }
    y, (low, high) = _overall(skip, "accuracy_huatuo")
    assert round(high - low, 6) == round(4 / 2**0.5, 6)  # two equal halves: the width shrinks by sqrt(2)
