"""An eval of a trained model on a benchmark its curation (or its RL questions) was not checked against counts
the training rows (RL questions) that restate its questions (meds1/evaluation/overlap.py), and the report
shows it."""

import json

import pandas as pd

from meds1.evaluation.data import load_suite
from meds1.evaluation.overlap import RL_QUESTIONS, rl_overlap, training_overlap
from meds1.report.experiments import Experiment
from meds1.report.tables import overlap_pivot
from meds1.store.workspace import StageWorkspace

TRAINING = [
    "A 45-year-old man has crushing chest pain radiating to the left arm and ST elevation in V1-V4.",
    "Which antibiotic is first line for community-acquired pneumonia in a healthy adult outpatient?",
    "A child presents with a barking cough and inspiratory stridor worse at night.",
    "What is the mechanism of action of metformin in type 2 diabetes?",
]


def question(text: str) -> dict:
    return {"question": text, "options": {"A": "yes", "B": "no"}, "answer_idx": "A"}


def test_an_unchecked_benchmark_reports_how_many_training_rows_restate_it(make_config, tmp_path):
    bench = tmp_path / "bench.json"
    unrelated = ["Which planet is largest?", "Who wrote the sonnets of the Renaissance?"]
    bench.write_text(
        json.dumps(
            {
                "Restated": [question(t) for t in TRAINING[:3]],
                "Fresh": [question(unrelated[0]), question(unrelated[1])],
            }
        )
    )
    cfg = make_config(
        "experiment=demo", "stage=eval", f"eval.suite=[pkg://meds1/data/demo_eval.json,{bench}]"
    )
    with StageWorkspace(cfg, "curate") as workspace:
        pd.DataFrame({"Question": TRAINING, "Response": "r"}).to_parquet(workspace.path / "curated.parquet")
        workspace.commit({})
    rows, _ = load_suite(list(cfg.eval.suite))
    overlap = training_overlap(cfg, rows)
    assert overlap == {
        "training_rows": 4,
        "method": "tfidf",
        "rule": "cosine >= 0.65",
        "checked": ["DemoMedMCQA", "DemoMedQA", "DemoPubMedQA"],  # the demo curation's own suite
        "sources": {
            "Fresh": {"questions": 2, "training_rows": 0},
            "Restated": {"questions": 3, "training_rows": 3},
        },
    }
    same = make_config("experiment=demo", "stage=eval")
    assert training_overlap(same, load_suite(list(same.eval.suite))[0])["sources"] == {}  # nothing to count
    metrics = {"overall": {}, "per_source": {}, "overlap": overlap}
    pivot = overlap_pivot([Experiment("demo__eval.suite=x", "", {}, "-", "demo", metrics, None, None)])
    assert pivot.body == [
        ["demo__eval.suite=x", "Fresh", "2", "curated rows", "0 of 4", "tfidf cosine >= 0.65"],
        ["demo__eval.suite=x", "Restated", "3", "curated rows", "3 of 4", "tfidf cosine >= 0.65"],
    ]


def test_an_unchecked_benchmark_reports_how_many_rl_questions_restate_it(make_config, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"Restated": [question(t) for t in TRAINING[:2]]}))
    suite = f"eval.suite=[pkg://meds1/data/demo_eval.json,{bench}]"
    cfg = make_config("experiment=demo-rl", "stage=eval", suite)
    with StageWorkspace(cfg, "rl") as workspace:  # the questions an RL stage trained on, as it writes them
        lines = [{"id": str(i), "source": "RL", "question": t, "answer": "a"} for i, t in enumerate(TRAINING)]
        (workspace.path / RL_QUESTIONS).write_text("".join(json.dumps(line) + "\n" for line in lines))
        workspace.commit({})
    overlap = rl_overlap(cfg, load_suite(list(cfg.eval.suite))[0])
    assert overlap["training_rows"] == 4 and overlap["sources"] == {
        "Restated": {"questions": 2, "training_rows": 2}
    }
    assert overlap["checked"] == ["DemoMedMCQA", "DemoMedQA", "DemoPubMedQA"]  # RL's own suite: the demo's
    metrics = {"overall": {}, "per_source": {}, "rl_overlap": overlap}
    pivot = overlap_pivot([Experiment("demo-rl__eval.suite=x", "", {}, "-", "demo-rl", metrics, None, None)])
    assert pivot.body == [
        ["demo-rl__eval.suite=x", "Restated", "2", "RL questions", "2 of 4", "tfidf cosine >= 0.65"]
    ]
