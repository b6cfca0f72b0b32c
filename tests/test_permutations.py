"""Option-order robustness (eval.shuffle_options): the seeded orders, the rows they make, what is scored
from them, and the eval end to end on the tiny model."""

import json
import logging
import math
import subprocess
import sys

import pytest

from meds1.errors import UserError
from meds1.evaluation import generation
from meds1.evaluation.data import load_suite
from meds1.evaluation.permutations import expand, orders, summarize
from meds1.evaluation.scoring import score
from meds1.report.paired import read_answers
from meds1.stages import eval as eval_stage
from meds1.store.workspace import stage_dir
from tests.conftest import REPO

FOUR = list("ABCD")
ROW = {
    "id": "q1",
    "source": "S",
    "question": "Which drug causes optic neuritis?",
    "options": {"A": "Isoniazid", "B": "Ethambutol", "C": "Rifampicin", "D": "Pyrazinamide"},
    "answer_idx": "B",
}


def test_orders_are_distinct_never_the_original_and_pinned():
    found = orders("q1", FOUR, 23)
    assert len({tuple(order) for order in found}) == 23 and FOUR not in found
    assert all(sorted(order) == FOUR for order in found)
    # pinned: random.Random with a string seed (SHA-512) gives these on any machine and Python 3.x
    assert orders("q1", FOUR, 3) == [["A", "C", "B", "D"], ["A", "C", "D", "B"], ["B", "C", "A", "D"]]
    assert orders("q1", FOUR, 2) == orders("q1", FOUR, 3)[:2]  # more orders add to the fewer
    assert orders("q2", FOUR, 3) != orders("q1", FOUR, 3)  # seeded by the question


def test_orders_are_the_same_in_another_process():
    code = "from meds1.evaluation.permutations import orders; print(orders('q1', list('ABCD'), 3))"
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
        ).stdout
        assert out.strip() == str(orders("q1", FOUR, 3))


def test_every_other_order_of_three_options_and_no_more():
    assert len(orders("q", list("ABC"), 5)) == 5
    with pytest.raises(ValueError, match="3 options have 5 other orders, not 6"):
        orders("q", list("ABC"), 6)


def test_the_answer_letter_follows_its_option():
    original, *permuted = expand([ROW], 3)
    assert original == {**ROW, "permutation": 0}
    for index, (row, order) in enumerate(zip(permuted, orders("q1", FOUR, 3), strict=True), start=1):
        assert row["permutation"] == index and row["id"] == "q1"
        assert row["options"][row["answer_idx"]] == "Ethambutol"
        assert row["option_order"] == order
        assert list(row["options"].values()) == [ROW["options"][letter] for letter in order]
    assert ROW["options"]["A"] == "Isoniazid" and "option_order" not in ROW  # the suite's row is untouched
    assert expand([ROW], 0) == [ROW]


def test_a_shuffled_suites_rows_record_their_columns(tmp_path):
    table = tmp_path / "g.csv"
    table.write_text("Question,Wrong 1,Wrong 2,Right\nWhich?,w1,w2,r\n")
    options = ["Wrong 1", "Wrong 2", "Right"]
    entry = {"path": str(table), "question": "Question", "options": options, "answer": "Right"}
    rows, _ = load_suite([entry])
    shown = rows[0]["option_order"]
    for row in expand(rows, 2)[1:]:
        assert row["options"][row["answer_idx"]] == "r"
        assert sorted(row["option_order"]) == sorted(shown) and row["option_order"] != shown
        text_of = dict(zip(row["option_order"], row["options"].values(), strict=True))
        assert [text_of[column] for column in shown] == list(rows[0]["options"].values())


def test_more_orders_than_a_source_has_is_one_line_naming_it():
    two = {**ROW, "id": "q2", "source": "Yes/No", "options": {"A": "yes", "B": "no"}, "answer_idx": "A"}
    assert len(expand([ROW, two], 1)) == 4
    with pytest.raises(UserError, match=r"^eval.shuffle_options=2: source Yes/No has questions with 2 "):
        expand([ROW, two], 2)


def test_a_negative_count_fails_at_compose(make_config):
    with pytest.raises(UserError, match=r"eval.shuffle_options=-1: must be >= 0"):
        make_config("experiment=base", "eval.shuffle_options=-1")


def judged(correct: dict[tuple[str, int, int], bool], source: str = "S") -> list[dict]:
    """Prediction rows, one per (question, run, permutation), right or wrong as given."""
    return [
        {
            "id": qid,
            "run": run,
            "permutation": permutation,
            "source": source,
            "options": {"A": "x", "B": "y"},
            "answer_idx": "A",
            "output": "The answer is A." if right else "The answer is B.",
            "extracted": "A" if right else "B",
            "correct": right,
        }
        for (qid, run, permutation), right in correct.items()
    ]


def test_per_order_accuracy_and_consistency_by_hand():
    # q1: right in every order; q2: right only in its own order; q3: wrong in its own, right in order 1.
    rows = judged(
        {
            ("q1", 0, 0): True,
            ("q1", 0, 1): True,
            ("q1", 0, 2): True,
            ("q2", 0, 0): True,
            ("q2", 0, 1): False,
            ("q2", 0, 2): False,
            ("q3", 0, 0): False,
            ("q3", 0, 1): True,
            ("q3", 0, 2): False,
        }  # fmt: skip
    )
    assert summarize(rows) == {"n": 3, "accuracy": [2 / 3, 2 / 3, 1 / 3], "consistent": 1 / 3}
    metrics = score(rows)
    assert metrics["overall"]["accuracy"] == pytest.approx(2 / 3) and metrics["overall"]["n"] == 3
    assert metrics["per_source"]["S"]["permutations"] == metrics["overall"]["permutations"]


def test_with_repeats_consistency_is_within_a_run_and_accuracy_the_mean_over_runs():
    # q1 is right under both orders in run 0, under one of them in run 1.
    rows = judged({("q1", 0, 0): True, ("q1", 0, 1): True, ("q1", 1, 0): False, ("q1", 1, 1): True})
    assert summarize(rows) == {"n": 2, "accuracy": [0.5, 1.0], "consistent": 0.5}
    assert score(rows)["overall"]["accuracy"] == 0.5  # the headline: the suite's own order only


def test_the_headline_is_the_suites_order_per_source_too():
    rows = judged({("q1", 0, 0): True, ("q1", 0, 1): False}, "A") + judged(
        {("q2", 0, 0): False, ("q2", 0, 1): False}, "B"
    )
    metrics = score(rows)
    assert metrics["per_source"]["A"]["accuracy"] == 1.0 and metrics["per_source"]["B"]["accuracy"] == 0.0
    assert metrics["per_source"]["A"]["permutations"] == {"n": 2, "accuracy": [1.0, 0.0], "consistent": 0.0}
    assert metrics["overall"]["permutations"]["accuracy"] == [0.5, 0.0]
    assert "permutations" not in score(rows[:1] + rows[2:3])["overall"]  # without other orders: none


def test_rescoring_keeps_the_orders_and_pairing_reads_only_the_suites(tmp_path, capsys):
    from meds1.evaluation.score import main

    rows = judged({("q1", 0, 0): True, ("q1", 0, 1): False, ("q2", 0, 0): False, ("q2", 0, 1): True})
    file = tmp_path / "predictions.jsonl"
    file.write_text("".join(json.dumps({**row, "question": "Q?"}) + "\n" for row in rows))
    assert main([str(file)]) == 0
    overall = json.loads(capsys.readouterr().out)["overall"]
    assert overall["accuracy"] == 0.5 and overall["permutations"]["accuracy"] == [0.5, 0.5]
    assert overall["permutations"]["consistent"] == 0.0
    assert read_answers(file) == {"q1": ("S", {0: True}), "q2": ("S", {0: False})}


@pytest.mark.slow
def test_eval_asks_every_order_scores_them_and_resumes_by_order(make_config, caplog):
    overrides = ["experiment=base", "model=tiny", "eval=demo", "inference=hf", "stage=eval"]
    cfg = make_config(*overrides, "eval.max_per_source=2", "eval.max_new_tokens=4", "eval.shuffle_options=2")
    with caplog.at_level(logging.INFO):
        metrics = eval_stage.run(cfg)["metrics"]
    file = stage_dir(cfg, "eval") / "predictions.jsonl"
    predictions = [json.loads(line) for line in file.read_text().splitlines()]
    assert len(predictions) == 6 * 3
    assert sorted({(p["id"], p["permutation"]) for p in predictions}) == sorted(
        (qid, k) for qid in {p["id"] for p in predictions} for k in range(3)
    )
    for p in predictions:
        shown = "\n".join(f"{letter}. {text}" for letter, text in p["options"].items())
        assert shown in p["prompt"]
    assert metrics["shuffle_options"] == 2
    for summary in [metrics["overall"], *metrics["per_source"].values()]:
        assert summary["permutations"]["n"] == 3 and len(summary["permutations"]["accuracy"]) == 3
        assert summary["permutations"]["accuracy"][0] == summary["accuracy"]
    assert metrics["overall"]["n"] == 6
    assert any("option order (3 orders)" in r.getMessage() for r in caplog.records)

    # resume: only the answers missing from the file are asked, keyed by (id, run, permutation)
    partial = file.parent / "resumed.jsonl"
    partial.write_text("".join(json.dumps(p) + "\n" for p in predictions if p["permutation"] != 1))
    rows, _ = load_suite(list(cfg.eval.suite), cfg.eval.max_per_source)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        answers = generation.answer_suite(partial, expand(rows, 2), cfg, eval_stage.evaluated_model(cfg))
    assert "eval: run 0 (seed 42): generating 6 answers" in [r.getMessage() for r in caplog.records]
    assert [(a["id"], a["permutation"], a["output"]) for a in answers] == [
        (p["id"], p["permutation"], p["output"]) for p in predictions
    ]


def test_orders_cover_a_question_of_ten_options():
    assert len(orders("q", list("ABCDEFGHIJ"), 50)) == 50 < math.factorial(10)


def test_the_report_shows_each_orders_accuracy_and_consistency():
    from meds1.report.experiments import Experiment
    from meds1.report.tables import permutation_pivot, source_results

    def experiment(slug, permutations):
        summary = {"n": 3, "accuracy": 2 / 3, "permutations": permutations}
        metrics = {"overall": summary, "per_source": {"S": summary}}
        return Experiment(slug, "", {}, "-", slug, metrics, None, None)

    robust = experiment("robust", {"n": 3, "accuracy": [2 / 3, 1 / 3, 1.0], "consistent": 1 / 3})
    plain = experiment("plain", None)
    table = permutation_pivot([robust, plain])
    assert table.header == ["experiment", "orders", "S", "overall"]
    assert table.body == [["robust", "3", "66.7 / 33.3-100.0 / 33.3", "66.7 / 33.3-100.0 / 33.3"]]
    assert permutation_pivot([plain]) is None
    row = source_results([robust])[0]
    assert (row.orders, row.worst_order_accuracy, row.consistent) == (3, 1 / 3, 1 / 3)
