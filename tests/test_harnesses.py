"""The field's scorers (meds1.evaluation.harnesses): hand-computed cases where they disagree, each harness's
own aggregation, and, where the fetched sources are on this machine, every row against their own code."""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from meds1.evaluation.harnesses import Scorer, m1_extract, m1_options
from meds1.evaluation.scoring import judge, score
from tests.conftest import SHARED_DATA

TB = {"A": "Isoniazid", "B": "Rifampin", "C": "Ethambutol", "D": "Pyrazinamide"}
MIRRORS = Path(os.environ.get("MEDS1_SOURCE_MIRRORS", "/work/.mirror"))


def marks(output: str, answer: str = "C", options: dict | None = None, **extra) -> dict:
    """{harness: right?} for one output: strict, then each harness (HuatuoGPT/MedReason: (first, last))."""
    row = judge({"source": "S", "options": options or TB, "answer_idx": answer, "output": output, **extra})
    found = Scorer().marks(row)
    return {"strict": row["correct"], **found._asdict()}


# output, answer -> strict, huatuo (first, last), medreason (first, last), m1, medsone
DISAGREEMENTS = {
    "first vs last letter": (
        "The answer is A. No, on reflection the answer is C.",
        (False, (False, True), (False, True), True, False),
    ),
    "## Final Answer (MedReason's own heading)": (
        "The answer is A? Let me check.\n\n## Final Answer\n\nEthambutol",
        (False, (False, False), (True, True), False, False),
    ),
    "\\boxed{option text}": (
        "I considered A, Isoniazid, but it is \\boxed{Ethambutol}",
        (True, (False, False), (False, False), True, False),
    ),
    "\\boxed{\\text{C}}": (
        "Option B is tempting. Final: $\\boxed{\\text{C}}$",
        (True, (False, True), (False, True), True, False),
    ),
    "\\boxed{X. text}": (
        "Not B. \\boxed{C. Ethambutol}",
        (True, (False, True), (False, True), True, False),
    ),
    "med-s1 cuts after the last 'Answer:'": (
        "The answer is B.\nAnswer: C",
        (False, (False, False), (False, False), False, True),
    ),
    "nothing to match, the answer is the last option": (
        "",
        (False, (True, True), (True, True), True, True),
    ),
    "no letter, no option text: difflib, ties to the last option": (
        "?!",
        (False, (True, True), (True, True), True, True),
    ),
}


@pytest.mark.parametrize("case", sorted(DISAGREEMENTS))
def test_harnesses_where_they_disagree(case):
    output, (strict, huatuo, medreason, m1, medsone) = DISAGREEMENTS[case]
    answer = "D" if "last option" in case else "C"
    assert marks(output, answer) == {
        "strict": strict,
        "huatuo": huatuo,
        "medreason": medreason,
        "m1": m1,
        "medsone": medsone,
    }


def test_an_empty_answer_is_right_for_the_field_when_the_answer_is_the_last_option():
    assert marks("", "D")["huatuo"] == (True, True)
    assert marks("", "A")["huatuo"] == (False, False)
    assert marks("", "B", options={"A": "yes", "B": "no"})["m1"]


def test_every_harness_reads_the_answer_part_of_an_s1_or_think_layout():
    for output in (
        "<|im_start|>think\nthe answer is A\n<|im_start|>answer\nAnswer: C",
        "<think>\nthe answer is A\n</think>\n\nThe answer is C.",
    ):
        assert marks(output) == {
            "strict": True,
            "huatuo": (True, True),
            "medreason": (True, True),
            "m1": True,
            "medsone": True,
        }


def test_m1_extraction_follows_its_source():
    assert m1_extract("so \\boxed{x = C}") == "C"  # the text after "=", left-stripped
    assert m1_extract("\\boxed{A} then \\boxed{\\text{B}}") == "B"  # the last box, then its \text
    assert m1_extract("\\fbox{C}") == "\\fbox{C}"  # found, but only \boxed is unwrapped
    assert m1_extract("\\boxed{unclosed") == "\\boxed{unclosed"
    assert m1_extract("no box") == "no box"
    assert m1_options({"A": "one", "B": "two\nlines"}) == {"A": "one", "B": "two"}  # m1 parses its prompt


def rows(source: str, outputs: list[str], answer: str = "C", run: int = 0) -> list[dict]:
    return [
        judge(
            {
                "source": source,
                "id": f"{source}{i}",
                "run": run,
                "options": TB,
                "answer_idx": answer,
                "output": o,
            }
        )
        for i, o in enumerate(outputs)
    ]


def test_each_harness_aggregates_sources_as_its_authors_do():
    right, wrong = "The answer is C.", "The answer is B."
    predictions = rows("S", [right]) + rows("T", [right, wrong, wrong])  # S: 1/1, T: 1/3
    overall = score(predictions)["overall"]
    assert overall["accuracy_m1"] == pytest.approx((1 + 1 / 3) / 2)  # m1's Avg.: sources unweighted
    for key in ("accuracy", "accuracy_huatuo", "accuracy_medreason", "accuracy_medsone"):
        assert overall[key] == pytest.approx(2 / 4)  # question-weighted


def test_med_s1_votes_over_runs_where_the_others_average():
    right, wrong = "The answer is C.", "The answer is B."
    predictions = []
    for run, outputs in enumerate([[right, wrong], [wrong, wrong], [right, right]]):
        predictions += rows("S", outputs, run=run)
    overall = score(predictions)["overall"]
    assert overall["accuracy_medsone"] == 0.5  # q0 right 2/3 (majority), q1 right 1/3
    assert overall["accuracy_m1"] == pytest.approx(0.5) and overall["accuracy_huatuo"] == pytest.approx(0.5)
    predictions = rows("S", [right, wrong]) + rows("S", [wrong, wrong], run=1)
    assert (
        score(predictions)["overall"]["accuracy_medsone"] == 0.5
    )  # q0 right 1 of 2 runs: a tie counts right


def test_every_summary_carries_every_harness():
    metrics = score(rows("S", ["The answer is C."]))
    for summary in (metrics["overall"], metrics["per_source"]["S"]):
        assert {
            "accuracy",
            "accuracy_huatuo",
            "accuracy_medreason",
            "accuracy_m1",
            "accuracy_medsone",
        } <= set(summary)
    assert set(score([])["overall"]) >= {"accuracy_m1", "accuracy_medsone"}


# --- against the sources' own code, where `fetch` left them on this machine ----------------------------

SOURCES = {  # harness -> (mirror, commit, file, functions)
    "huatuo": (
        "FreedomIntelligence+HuatuoGPT-o1",
        "2c8d7fc",
        "evaluation/scorer.py",
        ["str_similarity", "find_most_similar_index", "match_choice"],
    ),
    "medreason": (
        "UCSC-VLAA+MedReason",
        "02b51f1",
        "src/evaluation/scorer.py",
        ["str_similarity", "find_most_similar_index", "match_choice"],
    ),
    "m1": (
        "UCSC-VLAA+m1",
        "c65dfc6",
        "src/eval/score.py",
        ["str_similarity", "find_most_similar_index", "huatuo_match_choice"],
    ),
    "m1-extract": (
        "UCSC-VLAA+m1",
        "c65dfc6",
        "src/eval/extract_format.py",
        ["extract_answer", "remove_boxed", "last_boxed_only_string"],
    ),
    "medsone": (
        "som-shahlab+med-s1",
        "d15c393",
        "eval/scorer.py",
        ["str_similarity", "find_most_similar_index", "match_choice"],
    ),
}


def source_functions(harness: str) -> dict:
    """The named functions of a source file, compiled from the fetched repository (never copied here)."""
    mirror, commit, path, names = SOURCES[harness]
    git_dir = MIRRORS / mirror / "repo"
    if not git_dir.is_dir():
        pytest.skip(f"{mirror} not fetched under {MIRRORS} (set MEDS1_SOURCE_MIRRORS)")
    text = subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = ast.parse(text)
    module.body = [node for node in module.body if isinstance(node, ast.FunctionDef) and node.name in names]
    namespace: dict = {}
    exec("import re, difflib", namespace)  # noqa: S102 (their functions need only these)
    exec(compile(module, f"{mirror}@{commit}:{path}", "exec"), namespace)  # noqa: S102
    return namespace


def outputs_to_compare() -> list[tuple[dict, str]]:
    """(question row, output): the cases above, and real HuatuoGPT-o1 responses cut and varied."""
    cases = [({"options": TB, "answer_idx": "C"}, output) for output, _ in DISAGREEMENTS.values()]
    sample = SHARED_DATA / "sft" / "huatuogpt-o1_demo_data.json"
    if not sample.exists():
        return cases
    rng = random.Random(0)
    for row in json.loads(sample.read_text()):
        if not isinstance(row.get("options"), dict):
            continue
        question = {"options": row["options"], "answer_idx": row["answer_idx"]}
        letter = rng.choice(list(row["options"]))
        endings = [
            row["Response"],
            f"{row['Response']}\n\nThe answer is {letter}.",
            f"\\boxed{{{row['options'][letter]}}}",
            f"Answer: {letter}",
            row["Response"][: rng.randrange(1, 80)],
        ]
        for ending in endings:
            cases.append((question, f"## Thinking\n\n{row['Complex_CoT']}\n\n## Final Response\n\n{ending}"))
            cases.append((question, f"{row['Complex_CoT']}\n\n## Final Answer\n\n{ending}"))
            cases.append((question, ending))
    return cases


def test_each_harness_reads_every_output_as_its_source_code_does():
    huatuo, medreason, medsone = (
        source_functions(h)["match_choice"] for h in ("huatuo", "medreason", "medsone")
    )
    m1 = source_functions("m1")["huatuo_match_choice"]
    m1_extract_theirs = source_functions("m1-extract")["extract_answer"]
    scorer = Scorer()
    cases = outputs_to_compare()
    for question, output in cases:
        options, answer = question["options"], question["answer_idx"]
        ours = scorer.marks({"options": options, "answer_idx": answer, "output": output})
        for name, theirs in (("huatuo", huatuo), ("medreason", medreason)):
            first, last = theirs(output, options)[0]
            assert getattr(ours, name) == (first.lower() == answer.lower(), last.lower() == answer.lower()), (
                output
            )
        assert ours.medsone == (medsone(output, options)[0][0].lower() == answer.lower()), output
        extracted = m1_extract_theirs(output)
        assert m1_extract(output) == extracted
        text = options[answer]
        option_str = "\n".join(f"{op}. {ans}" for op, ans in options.items())
        m1_right = (
            extracted.lower() in (text.lower(), f"{answer}. {text}".lower())
            or (len(extracted) == 1 and extracted.lower() == answer.lower())
            or m1(extracted, option_str).lower() == answer.lower()
        )
        assert ours.m1 == m1_right, output
    assert len(cases) > 2000 or not SHARED_DATA.is_dir()
