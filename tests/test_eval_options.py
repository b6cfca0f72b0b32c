"""med-s1's eval options beside meds1's scoring: majority over repeats, the hierarchical bootstrap,
per-source repeats and step prompting."""

import json

import numpy as np
import pytest

from meds1.errors import UserError
from meds1.evaluation.scoring import bootstrap_ci, hierarchical_ci, score
from meds1.stages import eval as eval_stage
from meds1.store.workspace import stage_dir

OPTIONS = {"A": "x", "B": "y"}


def rows(correct_by_question: dict[str, list[bool]], source: str = "S") -> list[dict]:
    """Judged prediction rows: one per (question, run), answered right or wrong as given."""
    return [
        {
            "id": qid,
            "run": run,
            "source": source,
            "options": OPTIONS,
            "answer_idx": "A",
            "output": "The answer is A." if right else "The answer is B.",
            "extracted": "A" if right else "B",
            "correct": right,
        }
        for qid, marks in correct_by_question.items()
        for run, right in enumerate(marks)
    ]


def test_majority_counts_a_question_right_in_at_least_half_its_runs():
    predictions = rows(
        {"q1": [True, False], "q2": [True, False, False], "q3": [True, True, False], "q4": [False]}
    )
    mean = score(predictions)["overall"]
    majority = score(predictions, aggregate="majority")["overall"]
    assert majority["accuracy"] == 0.5  # q1 (tie counts right, med-s1) and q3
    assert mean["accuracy"] == pytest.approx((0.5 + 1 / 3 + 2 / 3 + 0) / 4)
    assert "accuracy_runs" not in mean  # runs differ per question: no per-run figures


def test_uniform_runs_keep_the_mean_over_runs():
    predictions = rows({"q1": [True, False, True], "q2": [False, False, True]})
    overall = score(predictions)["overall"]
    assert overall["accuracy_runs"] == [0.5, 0.0, 1.0] and overall["accuracy"] == pytest.approx(0.5)
    assert overall["accuracy_huatuo"] == pytest.approx(0.5)


def medsone_hierarchical(per_question: list[list[bool]], iterations: int, seed: int) -> list[float]:
    """som-shahlab/med-s1@d15c393 eval/scorer.py calculate_confidence_interval, transcribed (seeded)."""
    np.random.seed(seed)
    means = []
    for _ in range(iterations):
        picked = [
            per_question[i] for i in np.random.choice(len(per_question), len(per_question), replace=True)
        ]
        sample_means = []
        for runs in picked:
            drawn = [runs[i] for i in np.random.choice(len(runs), len(runs), replace=True)]
            sample_means.append(np.mean(drawn))
        means.append(np.mean(sample_means))
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def test_hierarchical_interval_matches_medsones_bootstrap_in_distribution():
    rng = np.random.default_rng(1)
    per_question = [list(rng.random(5) < p) for p in rng.random(60)]
    ours = hierarchical_ci(per_question, samples=4000)
    reference = medsone_hierarchical(per_question, iterations=4000, seed=3)
    assert ours == pytest.approx(reference, abs=0.015)
    assert ours == hierarchical_ci(per_question, samples=4000)  # seeded
    # With one run per question it is the plain bootstrap of the questions.
    single = [[bool(x)] for x in rng.random(200) < 0.6]
    plain = bootstrap_ci(np.array([float(m[0]) for m in single]), samples=4000)
    assert hierarchical_ci(single, samples=4000) == pytest.approx(plain, abs=0.015)


def test_hierarchical_interval_is_wider_when_runs_disagree():
    agree = [[True] * 5] * 30 + [[False] * 5] * 30
    disagree = [[True, True, True, False, False]] * 30 + [[False, False, False, True, True]] * 30
    low_a, high_a = score(rows(dict(enumerate(agree))), interval="hierarchical")["overall"]["ci95"]
    low_d, high_d = score(rows(dict(enumerate(disagree))), interval="hierarchical")["overall"]["ci95"]
    assert high_a - low_a > high_d - low_d  # runs that disagree average out: questions vary less
    assert low_d < 0.5 < high_d


def test_per_source_repeat_counts_are_validated(make_config):
    with pytest.raises(UserError, match=r"eval.repeats_per_source.GPQA=0: must be >= 1"):
        make_config("experiment=base", "+eval.repeats_per_source={GPQA: 0}")


@pytest.mark.slow
def test_per_source_repeats_majority_and_step_prompting_end_to_end(make_config):
    cfg = make_config(
        "experiment=base",
        "model=tiny",
        "eval=demo",
        "inference=hf",
        "stage=eval",
        "eval.max_per_source=2",
        "eval.max_new_tokens=4",
        "+eval.repeats_per_source={DemoMedQA: 3}",
        "eval.aggregate=majority",
        "eval.interval=hierarchical",
        "eval.prompting=step",
    )
    record = eval_stage.run(cfg)
    lines = (stage_dir(cfg, "eval") / "predictions.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    runs = {(p["source"], p["run"]) for p in predictions}
    assert {run for source, run in runs if source == "DemoMedQA"} == {0, 1, 2}
    assert {run for source, run in runs if source != "DemoMedQA"} == {0}
    assert len(predictions) == 2 * 3 + 2 + 2
    assert all(p["prompt"].endswith("\n\nLet's think step by step.") for p in predictions)
    metrics = record["metrics"]
    assert metrics["repeats_per_source"] == {"DemoMedQA": 3} and metrics["seeds"] == [
        cfg.seed + r for r in range(3)
    ]
    assert metrics["scoring"] == {"aggregate": "majority", "interval": "hierarchical"}
    assert metrics["overall"]["n"] == 6
    assert metrics["overall"]["accuracy"] in {k / 6 for k in range(7)}  # majority: whole questions


def test_rescoring_a_file_with_medsones_options(tmp_path, capsys):
    from meds1.evaluation.score import main

    file = tmp_path / "predictions.jsonl"
    predictions = rows({"q1": [True, False], "q2": [False, False], "q3": [True, True]})
    file.write_text("".join(json.dumps({**p, "question": "Q?"}) + "\n" for p in predictions))
    assert main([str(file), "--aggregate", "majority", "--interval", "hierarchical"]) == 0
    overall = json.loads(capsys.readouterr().out)["overall"]
    assert overall["accuracy"] == pytest.approx(2 / 3) and overall["n"] == 3
