import json

import pytest

from meds1.evaluation.data import load_suite, question_id
from meds1.evaluation.extract import extract_answer
from meds1.evaluation.prompts import build_conversation
from meds1.evaluation.scoring import score

OPTIONS = {"A": "Isoniazid", "B": "Rifampin", "C": "Ethambutol", "D": "Pyrazinamide"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is C.", "C"),
        ("**C. Ethambutol**", "C"),
        ("Answer: (c)", "C"),
        ("so \\boxed{C}", "C"),
        ("## Thinking\nMaybe A? The answer is A\n## Final Response\nThe answer is C.", "C"),
        ("It causes optic neuritis, so ethambutol.", "C"),
        ("", None),
        ("I cannot tell.", None),
        ("The answer is Z.", None),
    ],
)
def test_extraction(text, expected):
    assert extract_answer(text, OPTIONS) == expected


def test_suite_loads_every_shape_and_skips_bad_rows(tmp_path):
    good = {"question": "Q1", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}
    (tmp_path / "obj.json").write_text(json.dumps({"S1": [good, {"question": "Q2", "options": {"A": "x"}}]}))
    (tmp_path / "flat.json").write_text(json.dumps([{**good, "source": "S2"}, {**good, "answer_idx": None}]))
    (tmp_path / "S3.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "question": ""}) + "\n")
    rows, skipped = load_suite([str(tmp_path / f) for f in ("obj.json", "flat.json", "S3.jsonl")])
    assert [r["source"] for r in rows] == ["S1", "S2", "S3"]
    assert skipped == {"missing_options": 1, "missing_answer": 1, "missing_question": 1}


def test_duplicate_questions_keep_distinct_stable_ids(tmp_path):
    row = {"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    (tmp_path / "G.json").write_text(json.dumps({"G": [row] * 5}))
    rows, _ = load_suite([str(tmp_path / "G.json")])
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 5 and ids[0] == question_id("G", "Q", {"A": "x", "B": "y"})


def test_max_per_source(tmp_path):
    row = {"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    (tmp_path / "s.json").write_text(json.dumps({"S": [row] * 5, "T": [row] * 2}))
    rows, _ = load_suite([str(tmp_path / "s.json")], max_per_source=3)
    assert [r["source"] for r in rows] == ["S", "S", "S", "T", "T"]


def test_real_eval_files_load_with_exact_counts(shared_data):
    files = sorted(str(p) for p in (shared_data / "eval").glob("*.json"))
    rows, skipped = load_suite(files)
    counts = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    assert counts == {
        "MMLU-Pro_Medical_test": 1535,
        "MedMCQA_validation": 4183,
        "MedQA_USLME_test": 1273,
        "PubMedQA_test": 1000,
    }
    assert skipped == {}


def test_prompt_lists_the_options():
    conversation = build_conversation({"question": "Which?", "options": OPTIONS}, "{question}\n{options}")
    assert conversation == [
        {"role": "user", "content": "Which?\nA. Isoniazid\nB. Rifampin\nC. Ethambutol\nD. Pyrazinamide"}
    ]


def test_scoring_keeps_unparseable_and_empty_in_the_denominator():
    predictions = [
        {"source": "S", "extracted": "A", "correct": True},
        {"source": "S", "extracted": None, "correct": False},
        {"source": "T", "extracted": "B", "correct": False},
        {"source": "T", "extracted": None, "correct": False},
    ]
    metrics = score(predictions)
    assert metrics["overall"] == {"n": 4, "accuracy": 0.25, "unparseable": 0.5}
    assert metrics["per_source"]["S"] == {"n": 2, "accuracy": 0.5, "unparseable": 0.5}
