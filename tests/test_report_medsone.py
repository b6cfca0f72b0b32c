"""med-s1 results.json import and export."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meds1.errors import UserError
from meds1.medsone.results import entry_to_medsone, export_medsone, import_medsone
from meds1.report import plots
from meds1.report.experiments import experiments, load_registry
from meds1.store import registry
from tests.conftest import REPO

CLUSTER = "/share/pi/nigam/users/someone/med-s1/results"  # where med-s1 wrote its summary files


def source(accuracy: float, n: int) -> dict:
    correct = round(accuracy * n)
    return {
        "accuracy": correct / n,
        "accuracy_ci": [correct / n - 0.03, correct / n + 0.03],
        "num_correct": correct,
        "total_examples": n,
        "num_answered": correct,
    }


def medsone_results(directory) -> dict:
    """A med-s1 checkout: results.json with absolute cluster paths, summary/stats files under results/."""
    files = directory / "results"
    files.mkdir()
    (files / "medqa-1k-random_eval.json").write_text(
        json.dumps({"summary": {"MedQA_USLME_test": source(0.65, 1258), "PubMedQA_test": source(0.74, 987)}})
    )
    (files / "medqa-1k-random_curation.json").write_text(
        json.dumps(
            {
                "total_examples": 25371,
                "selected_examples": 1000,
                "filtered_examples": 24371,
                "filter_reasons": {"not_selected_in_sampling": 24371},
                "specialty_distribution": {"Dentistry": 550, "Neurology": 450},
            }
        )
    )
    training = {"learning_rate": 5e-06, "batch_size": 2, "num_epochs": 10}
    return {
        "experiments": {
            "base": {
                "description": "Base LLaMA model without fine-tuning",
                "config": {"model_key": "llama3.1:8b", "curation": None, "training_params": None},
                "results": {
                    "curation": None,
                    "training": None,
                    "eval": {
                        "timestamp": "2025-03-15T22:16:49",
                        "summary": {"MedQA_USLME_test": source(0.6, 1258)},
                    },
                },
            },
            "medqa-1k-random": {
                "description": "1k uniform random sample",
                "config": {
                    "model_key": "llama3.1:8b",
                    "curation": {"method": "random", "huatuo_format": True, "n_samples": 1000},
                    "training_params": training,
                },
                "results": {
                    "curation": {
                        "dataset_path": "/share/x/med_s1k_formatted",
                        "timestamp": "2025-03-29T02:15:53",
                        "stats_file": f"{CLUSTER}/medqa-1k-random_curation.json",
                    },
                    "training": {
                        "model_path": "/share/x/ckpts",
                        "timestamp": "2025-03-29T05:18:27Z",
                        "metrics": None,
                    },
                    "eval": {
                        "outputs_path": "/share/x/out.json",
                        "timestamp": "2025-04-03T21:48:25",
                        "summary_file": f"{CLUSTER}/medqa-1k-random_eval.json",
                    },
                },
            },
            "medqa-5k-random": {
                "description": "5k, summary file lost",
                "config": {"model_key": "llama3.1:8b", "curation": {"method": "random", "n_samples": 5000}},
                "results": {"eval": {"summary_file": f"{CLUSTER}/gone_eval.json"}},
            },
            "huatuo-tts": {
                "description": "HuatuoGPT with budget forcing",
                "config": {"model_key": "huatuo:8b", "curation": None, "training_params": None},
                "results": {
                    "eval": {
                        "test_time_scaling": True,
                        "reasoning_tokens": {"budget_500": 420.5, "budget_2000": 1630.0},
                        "summary": {
                            "budget_500": {"MedQA_USLME_test": source(0.55, 1258)},
                            "budget_2000": {"MedQA_USLME_test": source(0.61, 1258)},
                        },
                    }
                },
            },
        }
    }


@pytest.fixture
def medsone_file(tmp_path):
    checkout = tmp_path / "med-s1"
    checkout.mkdir()
    file = checkout / "results.json"
    file.write_text(json.dumps(medsone_results(checkout)))
    return file


def test_import_maps_metrics_stats_and_test_time_scaling(medsone_file, tmp_path):
    registry_file = tmp_path / "out" / "results.json"
    done = import_medsone(medsone_file, registry_file)
    assert done["slugs"] == [
        "base",
        "huatuo-tts__eval.approach=budget_2000",
        "huatuo-tts__eval.approach=budget_500",
        "medqa-1k-random",
        "medqa-5k-random",
    ]
    assert any("gone_eval.json not found" in w for w in done["warnings"])
    data = load_registry(registry_file)
    entry = data["experiments"]["medqa-1k-random"]
    metrics = entry["results"]["eval"]["metrics"]
    medqa = source(0.65, 1258)
    assert metrics["per_source"]["MedQA_USLME_test"] == {
        "n": 1258,
        "accuracy": None,  # med-s1 scored HuatuoGPT's way only
        "accuracy_huatuo": medqa["accuracy"],
        "ci95_huatuo": medqa["accuracy_ci"],
        "unparseable": None,
    }
    pubmed = source(0.74, 987)
    pooled = (medqa["num_correct"] + pubmed["num_correct"]) / (1258 + 987)
    assert metrics["overall"]["n"] == 2245 and metrics["overall"]["accuracy_huatuo"] == pytest.approx(pooled)
    assert set(entry["results"]) == {"curate", "train", "eval"}  # med-s1's names stay in med-s1's file
    assert entry["results"]["train"]["model_path"] == "/share/x/ckpts"
    stats = entry["results"]["curate"]["stats"]
    assert stats["selected_rows"] == 1000 and stats["total_rows"] == 25371
    assert stats["removed"] == {"selection/not_selected": 24371}
    assert stats["specialties"] == {"Dentistry": 550, "Neurology": 450}
    assert entry["config"]["medsone"]["curation"]["huatuo_format"] is True

    tts = data["experiments"]["huatuo-tts__eval.approach=budget_500"]["results"]["eval"]["metrics"]["tts"]
    assert tts == {"budget": 500, "mean_thinking_tokens": 420.5, "approach": "budget_500"}
    assert "metrics" not in data["experiments"]["medqa-5k-random"]["results"]["eval"]


def test_imported_experiments_are_reported(medsone_file, tmp_path):
    registry_file = tmp_path / "out" / "results.json"
    import_medsone(medsone_file, registry_file)
    data = load_registry(registry_file)
    chosen = {e.slug: e for e in experiments(data, sorted(data["experiments"]), "curation.method")}
    assert chosen["medqa-1k-random"].group == "random" and chosen["base"].group == "-"
    assert chosen["huatuo-tts__eval.approach=budget_500"].model == "huatuo-tts"
    efficiency = plots.sample_efficiency(list(chosen.values()), "accuracy_huatuo")
    pooled = (source(0.65, 1258)["num_correct"] + source(0.74, 987)["num_correct"]) / 2245
    assert efficiency.series["random"] == [(1000, pytest.approx(100 * pooled))]
    assert plots.sample_efficiency(list(chosen.values()), "accuracy") is None  # no strict accuracy to draw
    scaling = plots.thinking_tokens(list(chosen.values()), "accuracy_huatuo")
    assert [x for x, _ in scaling.series["huatuo-tts"]] == [420.5, 1630.0]


def test_import_refuses_to_overwrite_unless_asked(medsone_file, tmp_path):
    registry_file = tmp_path / "out" / "results.json"
    import_medsone(medsone_file, registry_file)
    with pytest.raises(UserError, match="already has base, huatuo-tts"):
        import_medsone(medsone_file, registry_file)
    import_medsone(medsone_file, registry_file, replace=True)
    assert len(import_medsone(medsone_file, registry_file, prefix="meds1-")["slugs"]) == 5
    assert len(load_registry(registry_file)["experiments"]) == 10


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (None, "does not exist"),
        ("{nope", "is not valid JSON"),
        ('{"runs": {}}', "no top-level 'experiments'"),
    ],
)
def test_bad_medsone_file_is_one_line(tmp_path, content, named):
    file = tmp_path / "results.json"
    if content is not None:
        file.write_text(content)
    with pytest.raises(UserError, match=named):
        import_medsone(file, tmp_path / "out" / "results.json")


def test_export_round_trips_through_import(tmp_path, report_registry):
    root = report_registry
    exported = tmp_path / "exported.json"
    exported.write_text(json.dumps(export_medsone(root / "results.json")))
    import_medsone(exported, tmp_path / "back" / "results.json")
    original = load_registry(root / "results.json")["experiments"]
    back = load_registry(tmp_path / "back" / "results.json")["experiments"]
    assert {
        slug: {k: v for k, v in e.items() if k != "imported_from"} for slug, e in back.items()
    } == original


def test_export_is_in_medsone_shape(report_registry):
    root = report_registry
    out = export_medsone(root / "results.json", ["med-s1-1k__curation.n_samples=1000", "random-1k__*"])
    assert sorted(out["experiments"]) == [
        "med-s1-1k__curation.n_samples=1000",
        "random-1k__curation.n_samples=1000",
        "random-1k__curation.n_samples=5000",
    ]
    entry = out["experiments"]["med-s1-1k__curation.n_samples=1000"]
    native = registry.load(root / "results.json")["experiments"]["med-s1-1k__curation.n_samples=1000"]
    medqa = native["results"]["eval"]["metrics"]["per_source"]["MedQA_USLME_test"]
    assert entry["results"]["eval"]["summary"]["MedQA_USLME_test"] == {
        "accuracy": medqa["accuracy_huatuo"],
        "accuracy_ci": None,
        "num_correct": round(medqa["accuracy_huatuo"] * medqa["n"]),
        "total_examples": medqa["n"],
        "num_answered": round(0.95 * medqa["n"]),
        "scorer": "huatuo",
    }
    assert entry["config"]["curation"] == {"method": "s1", "n_samples": 1000}
    assert (
        entry["config"]["model_key"] == "llama3.1-8b"
        and entry["config"]["training_params"]["num_epochs"] == 5
    )
    assert set(entry["results"]) == {"curation", "training", "eval"}  # med-s1's names for the stages
    assert entry["results"]["training"]["model_path"] == native["results"]["train"]["model_path"]
    assert entry["results"]["curation"]["stats"]["filter_reasons"]["not_selected_in_sampling"] == 15000
    old = out["experiments"]["random-1k__curation.n_samples=5000"]["results"]["eval"]["summary"]
    assert {s["scorer"] for s in old.values()} == {"strict"}  # metrics from before accuracy_huatuo existed


def test_export_of_test_time_scaling_matches_medsone():
    metrics = {
        "overall": {},
        "per_source": {"S": {"n": 10, "accuracy": 0.5}},
        "tts": {"budget": 512, "mean_thinking_tokens": 300.0},
    }
    evaluation = entry_to_medsone({"results": {"eval": {"metrics": metrics}}})["results"]["eval"]
    assert evaluation["test_time_scaling"] is True
    assert evaluation["reasoning_tokens"] == {"budget-512": 300.0}
    assert evaluation["summary"]["budget-512"]["S"]["num_correct"] == 5


def test_command_line(medsone_file, tmp_path):
    root = tmp_path / "out"
    command = [sys.executable, "-m", "meds1.medsone"]
    done = subprocess.run(
        [*command, "import", str(medsone_file), "--root", str(root)], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "imported 5 experiments" in done.stdout and "gone_eval.json not found" in done.stderr
    again = subprocess.run(
        [*command, "import", str(medsone_file), "--root", str(root)], capture_output=True, text=True, cwd=REPO
    )
    assert again.returncode == 1 and again.stderr.startswith("meds1: ") and again.stderr.count("\n") == 1
    out = tmp_path / "export.json"
    exported = subprocess.run(
        [*command, "export", "--root", str(root), "--out", str(out), "--experiments", "base"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert exported.returncode == 0, exported.stderr
    assert list(json.loads(out.read_text())["experiments"]) == ["base"]


def test_overall_is_the_question_weighted_mean_of_the_per_source_accuracies(tmp_path):
    """med-s1's num_correct counts first matches only; the overall comes from the per-source accuracies."""
    summary = {  # as in med-s1's results/huatuo-100-random_eval.json: accuracy = max(first, last)
        "MedMCQA_validation": {**source(0.5899, 4128), "num_correct": 1628},
        "PubMedQA_test": {**source(0.75, 1000), "num_correct": 700},
    }
    results = {
        "experiments": {
            "x": {
                "config": {"model_key": "llama3.1:8b", "curation": None, "training_params": None},
                "results": {"eval": {"summary": summary}},
            }
        }
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    import_medsone(tmp_path / "results.json", tmp_path / "registry.json")
    overall = load_registry(tmp_path / "registry.json")["experiments"]["x"]["results"]["eval"]["metrics"][
        "overall"
    ]
    weighted = (summary["MedMCQA_validation"]["accuracy"] * 4128 + 0.75 * 1000) / 5128
    assert overall["n"] == 5128 and overall["accuracy_huatuo"] == pytest.approx(weighted)
