"""A paper's released per-question outputs imported as an arm (meds1.evaluation.import_outputs): m1's
results files and lm-evaluation-harness samples (s1), in the shapes their code writes, matched to the
suite's stable ids and compared in the report like any arm."""

import csv
import json

import pytest
import yaml

from meds1.errors import UserError
from meds1.evaluation.data import load_suite
from meds1.evaluation.import_outputs import import_outputs, main
from meds1.report.paired import compare, read_answers
from meds1.stages import report
from tests.test_hub import GPQA_COLUMNS

DEMO = "pkg://meds1/data/demo_eval.json"


def m1_row(row: dict, letter: str, *, think: bool = True) -> dict:
    """One line of m1's m1_eval_data.json (UCSC-VLAA/m1@c65dfc6 src/eval/inference_keep_think.py main)
    answering `letter`: budget forcing's thinking, then an answer part opened by its answer marker."""
    option_str = "\n".join(f"{key}. {text}" for key, text in row["options"].items())
    return {
        "question": row["question"],
        "options": row["options"],
        "answer_idx": row["answer_idx"],
        "answer": row["options"][row["answer_idx"]],
        "source": row["source"],
        "option_str": option_str,
        "input_str": f"{row['question']}\n{option_str}\nReturn your final response within \\boxed{{}}.",
        "thinking_text": "Let me weigh each option.\n" if think else None,
        "thinking_finish_reason": "stop" if think else None,
        "response_text": ("<|im_start|>answer\n" if think else "") + f"The answer is \\boxed{{{letter}}}.",
        "finish_reason": "stop",
        "extracted_answer": letter,
        "huatuo_extracted_answer": letter,
        "num_gen_tokens": 17,
        "num_keep_think_below_budget": 0,
    }


def wrong(row: dict) -> str:
    return next(letter for letter in row["options"] if letter != row["answer_idx"])


@pytest.fixture
def demo_rows():
    return load_suite([DEMO])[0]


def write_m1_run(directory, rows, letters, seed=42):
    """An m1 results version directory: m1_eval_data.json, its metrics.json (m1's own accuracy per
    source for these answers: a boxed letter is right when it is the answer letter) and config.yaml."""
    directory.mkdir(parents=True)
    lines = [m1_row(row, letter) for row, letter in zip(rows, letters, strict=True)]
    (directory / "m1_eval_data.json").write_text(json.dumps(lines))
    metrics = {}
    for line in lines:
        m = metrics.setdefault(line["source"], {"correct_count": 0, "total_count": 0})
        m["correct_count"] += line["extracted_answer"] == line["answer_idx"]
        m["total_count"] += 1
    for m in metrics.values():
        m["accuracy"] = m["correct_count"] / m["total_count"]
    (directory / "metrics.json").write_text(json.dumps(metrics))
    (directory / "config.yaml").write_text(
        yaml.safe_dump({"temperature": 0.0, "max_new_tokens": 2048, "seed": seed})
    )
    return directory / "m1_eval_data.json"


def test_m1_results_are_matched_scored_and_recorded(tmp_path, demo_rows, capsys):
    rows = demo_rows[1:]  # the first question is left unanswered
    letters = [row["answer_idx"] if i % 3 else wrong(row) for i, row in enumerate(rows)]
    stranger = {**demo_rows[0], "source": "Elsewhere"}  # a source the suite does not have
    file = write_m1_run(tmp_path / "m1" / "version_0", [*rows, stranger], [*letters, "A"])
    root = tmp_path / "out"
    assert main([str(file), "--name", "m1-7B-1K", "--eval", "demo", "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"m1-7B-1K: {len(rows)} answers matched the suite; unmatched (left out): {{")

    predictions = [json.loads(line) for line in (root / "imported" / "m1-7B-1K" / "predictions.jsonl").open()]
    assert len(predictions) == len(rows) and [p["id"] for p in predictions] == [r["id"] for r in rows]
    assert all(p["imported"] and p["run"] == 0 for p in predictions)
    first = f"Let me weigh each option.\n<|im_start|>answer\nThe answer is \\boxed{{{letters[0]}}}."
    assert predictions[0]["output"] == first and predictions[0]["output_tokens"] == 17
    assert [p["correct"] for p in predictions] == [p["extracted"] == p["answer_idx"] for p in predictions]
    assert [p["extracted"] for p in predictions] == letters

    metrics = json.loads((root / "imported" / "m1-7B-1K" / "metrics.json").read_text())
    imported = metrics["imported"]
    assert imported["matched"] == len(rows) and imported["unmatched"] == {"Elsewhere": 1}
    assert imported["unanswered"] == {demo_rows[0]["source"]: 1}
    assert metrics["decoding"] == {"temperature": 0.0, "top_p": None, "max_new_tokens": 2048}
    assert metrics["seeds"] == [42] and metrics["repeats"] == 1
    for source, summary in metrics["per_source"].items():  # m1's own scorer agrees with meds1's port
        assert summary["accuracy_m1"] == pytest.approx(imported["reported_accuracy"][source])
    assert metrics["overall"]["accuracy"] == pytest.approx(sum(p["correct"] for p in predictions) / len(rows))

    entry = json.loads((root / "results.json").read_text())["experiments"]["m1-7B-1K"]
    assert entry["imported_from"] == [str(file.resolve())]
    assert entry["results"]["eval"]["metrics"] == metrics
    assert entry["results"]["eval"]["outputs_path"] == str(
        root / "imported" / "m1-7B-1K" / "predictions.jsonl"
    )


def test_two_seeds_are_two_runs_and_an_existing_arm_is_kept(tmp_path, demo_rows):
    right = [row["answer_idx"] for row in demo_rows]
    files = [
        write_m1_run(tmp_path / "seed_42" / "version_0", demo_rows, right),
        write_m1_run(tmp_path / "seed_43" / "version_0", demo_rows, [wrong(row) for row in demo_rows], 43),
    ]
    metrics = import_outputs(files, "m1-two", eval_preset="demo", root=str(tmp_path / "out"))
    assert metrics["repeats"] == 2 and metrics["seeds"] == [42, 43]
    assert metrics["overall"]["accuracy_runs"] == [1.0, 0.0] and metrics["overall"]["accuracy"] == 0.5
    with pytest.raises(UserError, match="already exists .*--replace"):
        import_outputs(files, "m1-two", eval_preset="demo", root=str(tmp_path / "out"))
    import_outputs(files[:1], "m1-two", eval_preset="demo", root=str(tmp_path / "out"), replace=True)


def test_a_repeated_question_takes_the_suites_copies_in_order(tmp_path, demo_rows):
    question = {k: demo_rows[0][k] for k in ("question", "options", "answer_idx")}
    suite = tmp_path / "Dup.json"
    suite.write_text(json.dumps({"Dup": [question, question, question]}))
    rows = load_suite([str(suite)])[0]
    assert [row["id"].count("-") for row in rows] == [0, 1, 1]
    file = write_m1_run(tmp_path / "m1", rows[:2], [rows[0]["answer_idx"], wrong(rows[0])])
    metrics = import_outputs(
        [file], "dup", eval_preset="demo", overrides=[f"eval.suite=[{suite}]"], root=str(tmp_path / "out")
    )
    answers = read_answers(tmp_path / "out" / "imported" / "dup" / "predictions.jsonl")
    assert answers == {rows[0]["id"]: ("Dup", {0: True}), rows[1]["id"]: ("Dup", {0: False})}
    assert metrics["imported"]["unanswered"] == {"Dup": 1}


def test_outputs_that_match_no_question_are_one_line(tmp_path, demo_rows, capsys):
    stranger = {**demo_rows[0], "question": "Nowhere?"}
    file = write_m1_run(tmp_path / "m1", [stranger], ["A"])
    assert main([str(file), "--name", "x", "--eval", "demo", "--root", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"meds1: {file}: none of 1 answers matches a question of eval=demo")
    assert "\n" not in error
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    assert main([str(tmp_path / "bad.json"), "--name", "x", "--eval", "demo"]) == 1
    assert "not an m1 results file" in capsys.readouterr().err


# Made-up questions in GPQA's columns (GPQA's authors ask that its questions not be posted in plain text).
FAKE_GPQA = [
    ["Which organelle holds the citric acid cycle?", "Nucleus", "Golgi body", "Lysosome", "Mitochondrion"],
    ["Which ion triggers muscle contraction?", "Sodium", "Chloride", "Potassium", "Calcium"],
    ["Which vitamin is fat-soluble?", "Vitamin C", "Vitamin B1", "Vitamin B12", "Vitamin K"],
]


def lm_eval_sample(values: list[str], order: list[int], letter: str) -> dict:
    """One line of lm-evaluation-harness --log_samples for s1's gpqa_diamond_openai: the dataset row plus
    choice1..4 in the shuffled order and the answer letter; one response ending 'Answer: letter'."""
    doc = dict(zip(GPQA_COLUMNS, values, strict=True))
    choices = [values[1 + i] for i in order]
    doc.update({f"choice{i}": text for i, text in enumerate(choices, start=1)})
    doc["answer"] = "ABCD"[choices.index(values[4])]
    return {
        "doc_id": 0,
        "doc": doc,
        "target": doc["answer"],
        "resps": [[f"<|im_start|>think\nHmm.\n<|im_start|>answer\nAnswer: {letter}"]],
        "filtered_resps": [f"Answer: {letter}"],
        "exact_match": int(letter == doc["answer"]),
    }


def test_lm_eval_samples_are_matched_with_the_options_as_shown(tmp_path, monkeypatch):
    table = tmp_path / "gpqa_diamond.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([GPQA_COLUMNS, *FAKE_GPQA])
    monkeypatch.setenv("MEDS1_GPQA_DIAMOND", str(table))
    samples = [
        lm_eval_sample(FAKE_GPQA[0], [3, 0, 1, 2], "A"),  # the correct option shown first: right
        lm_eval_sample(FAKE_GPQA[1], [0, 1, 3, 2], "C"),  # correct shown third: right
        lm_eval_sample(FAKE_GPQA[2], [0, 1, 2, 3], "A"),  # correct shown fourth: wrong
    ]
    file = tmp_path / "samples_gpqa_diamond_openai_2025-01-01.jsonl"
    file.write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    metrics = import_outputs([file], "s1-32B", fmt="lm-eval", root=str(tmp_path / "out"))
    assert metrics["imported"]["matched"] == 3 and metrics["imported"]["unanswered"] == {}
    assert metrics["imported"]["reported_accuracy"] == {"overall": pytest.approx(2 / 3)}
    assert metrics["overall"]["accuracy"] == pytest.approx(2 / 3)
    predictions = [json.loads(line) for line in (tmp_path / "out/imported/s1-32B/predictions.jsonl").open()]
    suite = {row["id"]: row for row in load_suite(_gpqa_entry(table))[0]}
    for prediction, sample in zip(predictions, samples, strict=True):
        assert prediction["id"] in suite and "option_order" not in prediction
        assert list(prediction["options"].values()) == [sample["doc"][f"choice{i}"] for i in range(1, 5)]
        assert prediction["answer_idx"] == sample["doc"]["answer"]


def _gpqa_entry(table) -> list[dict]:
    return [
        {
            "path": str(table),
            "name": "gpqa-diamond",
            "question": "Question",
            "options": GPQA_COLUMNS[1:],
            "answer": "Correct Answer",
            "seed": 0,
        }
    ]


def test_an_imported_arm_is_compared_in_the_report(tmp_path, demo_rows, make_config):
    root = tmp_path / "out"
    right = [row["answer_idx"] for row in demo_rows]
    half = [
        letter if i % 2 else wrong(row) for i, (row, letter) in enumerate(zip(demo_rows, right, strict=True))
    ]
    for name, letters in (("paper-a", half), ("paper-b", right)):
        file = write_m1_run(tmp_path / name, demo_rows, letters)
        import_outputs([file], name, eval_preset="demo", root=str(root))
    base = read_answers(root / "imported" / "paper-a" / "predictions.jsonl")
    rows = compare(
        "paper-b", read_answers(root / "imported" / "paper-b" / "predictions.jsonl"), "paper-a", base
    )
    overall = rows[-1]
    assert overall.n == len(demo_rows) and overall.experiment_better == len(demo_rows[::2])
    cfg = make_config("stage=report", "report.baseline=paper-a", "report.outputs=[csv]")  # root: tmp/out
    report.run(cfg)
    with (root / "report" / "paired.csv").open() as f:
        paired = list(csv.DictReader(f))
    assert {(row["experiment"], row["baseline"]) for row in paired} == {("paper-b", "paper-a")}
    assert float(paired[-1]["difference"]) == pytest.approx(overall.difference)


def test_m1_outputs_for_a_real_benchmark_match_every_question(tmp_path, shared_data):
    medqa = shared_data / "eval" / "MedQA_USLME_test.json"
    rows = load_suite([str(medqa)])[0]
    letters = [row["answer_idx"] if i % 4 else wrong(row) for i, row in enumerate(rows)]
    file = write_m1_run(tmp_path / "m1", rows, letters)
    metrics = import_outputs(
        [file], "medqa", eval_preset="demo", overrides=[f"eval.suite=[{medqa}]"], root=str(tmp_path / "out")
    )
    assert metrics["imported"]["matched"] == len(rows) == 1273 and metrics["imported"]["unanswered"] == {}
    right = sum(letter == row["answer_idx"] for letter, row in zip(letters, rows, strict=True))
    assert metrics["overall"]["accuracy"] == metrics["overall"]["accuracy_m1"] == pytest.approx(right / 1273)
    assert metrics["imported"]["reported_accuracy"] == {"MedQA_USLME_test": pytest.approx(right / 1273)}
