"""RL's rewards on constructed completions in every layout, the hacks that must pay nothing, and the reward
command line against eval's scoring of the same predictions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meds1.config.compose import compose
from meds1.config.schema import FormatConfig
from meds1.curation.formatting import to_messages
from meds1.evaluation.score import rescore
from meds1.layouts import LAYOUTS
from meds1.rl.reward import score_lines
from meds1.rl.rewards import Completion, Judge, answer_part, format_shape, mcq, named_letters, scorers
from tests.conftest import REPO
from tests.test_eval import LETTERY, NESTED, PUBMED, TB, TEN

QUESTION = {"options": TB, "answer_idx": "C", "kind": "mcq", "question": "Which drug causes optic neuritis?"}
THINKING = "Isoniazid hurts the liver; rifampin turns urine orange. The answer is A? No: the eye points to C."


def written(layout: str, response: str, thinking: str = THINKING) -> str:
    """The assistant turn a model trained in `layout` writes (meds1.curation.formatting)."""
    return to_messages("Q?", thinking, response, FormatConfig(layout=layout))[-1]["content"]


def rewards(text: str, layout: str, row: dict = QUESTION) -> tuple[float, float]:
    completion = Completion(text, 10, row)
    return mcq(completion, layout), format_shape(completion, layout)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_right_option_in_the_answer_part_pays_in_every_layout(layout):
    assert rewards(written(layout, "The answer is C. Ethambutol causes optic neuritis."), layout) == (1, 1)
    assert rewards(written(layout, "Ethambutol."), layout) == (1, 1)  # the option's text
    assert rewards(written(layout, "The answer is B."), layout) == (0, 1)  # wrong, but well formed


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_hacks_pay_nothing_in_every_layout(layout):
    marks = LAYOUTS[layout]
    hacks = {
        "unparseable answer": written(layout, "It depends on the patient."),
        "several options": written(layout, "The answer is C or B."),
        "several statements": written(layout, "The answer is C. On reflection, the correct answer is A."),
        "several boxed": written(layout, "\\boxed{B, C}"),
        "answer only inside the thinking": written(layout, "Hard to say.", thinking="The answer is C."),
        "unclosed thinking": marks.think_start + "The answer is C.",
        "thinking reopened": written(layout, "The answer is C.") + "\n" + marks.think_start + "more",
        "no layout at all": "The answer is C.",
        "empty": "",
    }
    for name, text in hacks.items():
        completion = Completion(text, 10, QUESTION)
        assert mcq(completion, layout) == 0, name
        assert format_shape(completion, layout) == 0, name
    # Eval's own reading pays some of them: it reads the whole text when there is no answer part.
    assert mcq(Completion(hacks["unclosed thinking"], 10, QUESTION), None) == 1


def test_a_template_that_opens_the_thinking_itself_still_pays():
    """Reasoning models' chat templates may prefill `<think>`: the completion starts inside the thinking."""
    assert rewards("it is the eye\n</think>\n\nThe answer is C.", "think") == (1, 1)
    assert rewards("## Final Response\n\nThe answer is C.", "huatuo") == (1, 0)  # no thinking: no bonus
    assert rewards("think\nthe eye\nanswer\nAnswer: C", "s1") == (1, 1)  # s1, special tokens decoded away


def test_the_reward_follows_the_shuffled_letter():
    shuffled = {
        **QUESTION,
        "options": {"A": "Ethambutol", "B": "Isoniazid", "C": "Rifampin", "D": "Pyrazinamide"},
    }
    shuffled["answer_idx"] = "A"
    assert rewards(written("huatuo", "The answer is A."), "huatuo", shuffled) == (1, 1)
    assert rewards(written("huatuo", "The answer is C."), "huatuo", shuffled) == (0, 1)  # C's old letter


def test_named_letters_reads_lists_but_not_explanations():
    assert named_letters("The answer is C. Option B is incorrect because it hurts the liver.", TB) == {"C"}
    assert named_letters("The answer is A, C or D.", TB) == {"A", "C", "D"}
    assert named_letters("The correct answer is not B; the answer is C.", TB) == {"C"}
    assert answer_part("## Thinking\n\nx\n\n### final response:\n\nC", "huatuo") == "C"  # any heading level


def test_format_pays_an_open_question_for_any_answer():
    row = {"kind": "open", "question": "Q", "reference": "Thiamine", "options": {}}
    assert format_shape(Completion(written("huatuo", "Give thiamine first."), 10, row), "huatuo") == 1
    assert format_shape(Completion("## Thinking\n\nunfinished", 10, row), "huatuo") == 0


def test_the_overlong_penalty_is_dapos_soft_punishment():
    rl = compose(
        [
            "experiment=demo-rl",
            "rl.rewards.overlong=1",
            "rl.overlong_cache_tokens=20",
            "rl.max_completion_length=100",
        ]
    ).rl
    (_, overlong) = scorers(rl, "huatuo", "/nonexistent", 0)["overlong"]
    penalties = overlong([Completion("", tokens, QUESTION) for tokens in (50, 80, 90, 100, 101)])
    assert penalties == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_the_match_judge_pays_an_answer_part_that_states_the_reference():
    judge_cfg = compose(["experiment=demo-rl", "rl.judge.method=match"]).rl.judge
    judge = Judge(judge_cfg, "huatuo", "/nonexistent", 0)
    row = {"kind": "open", "question": "First drug?", "reference": "Intravenous thiamine", "options": {}}
    texts = [
        written("huatuo", "Give intravenous thiamine before glucose."),
        written("huatuo", "Give glucose."),
        "## Thinking\n\nIntravenous thiamine",  # only in the thinking: unasked, 0
    ]
    assert judge([Completion(t, 10, row) for t in texts]) == [1.0, 0.0, 0.0]


BANK = [  # (options, answer part, eval's letter) from tests/test_eval.py's extraction cases
    (TB, "The answer is C.", "C"),
    (TB, "**C. Ethambutol**", "C"),
    (TB, "Answer: (c)", "C"),
    (TB, "so the final pick is \\boxed{C}", "C"),
    (TB, "The correct answer is **C. Ethambutol**", "C"),
    (TB, "The answer is ethambutol.", "C"),
    (TB, "Option B is wrong; option C is correct.", "C"),
    (TB, "The answer is A. Later: the answer is C.", "A"),
    (TB, "I cannot tell.", None),
    (TB, "A. Isoniazid: liver\nB. Rifampin: orange urine\nC. Ethambutol: eyes", None),
    (LETTERY, "The answer is Vitamin C.", "B"),
    (NESTED, "Rifampin and isoniazid are given together.", "B"),
    (PUBMED, "Yes, the trial shows no harm.", "A"),
    (TEN, "Answer: I think the answer is J", "J"),
]


def prediction_lines() -> list[dict]:
    """Lines as eval writes them: every bank answer in every layout, right and wrong gold letters."""
    lines = []
    for number, (options, answer, letter) in enumerate(BANK):
        for layout in sorted(LAYOUTS):
            for gold in sorted({letter or "A", "B"}):
                lines.append(
                    {
                        "id": f"{number}-{layout}-{gold}",
                        "source": layout,
                        "question": "Q?",
                        "options": options,
                        "answer_idx": gold,
                        "output": written(layout, answer),
                        "output_tokens": 40,
                    }
                )
    return lines


def test_mcq_read_as_eval_reads_is_evals_correct_on_every_line(tmp_path):
    file = tmp_path / "predictions.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in prediction_lines()))
    judged = tmp_path / "judged.jsonl"
    rescore(file, judged)
    correct = [json.loads(line)["correct"] for line in judged.read_text().splitlines()]
    rl = compose(["experiment=demo-rl"]).rl
    scored = score_lines(prediction_lines(), rl, None, "/nonexistent", 0)
    assert [line["rewards"]["mcq"] for line in scored] == [float(c) for c in correct]
    # Read in each line's own layout, RL pays the same, except where the answer part names several options.
    for line, right in zip(prediction_lines(), correct, strict=True):
        (strict,) = score_lines([line], rl, line["source"], "/nonexistent", 0)
        several = len(named_letters(answer_part(line["output"], line["source"]), line["options"])) > 1
        assert strict["rewards"]["mcq"] == (0.0 if several else float(right)), line["id"]
    several_first = BANK.index((TB, "The answer is A. Later: the answer is C.", "A"))  # eval: the first, A
    assert [
        c
        for line, c in zip(prediction_lines(), correct, strict=True)
        if line["id"] == f"{several_first}-think-A"
    ] == [True]


def test_the_reward_command_scores_a_predictions_file_and_writes_each_line_back(tmp_path):
    file = tmp_path / "predictions.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in prediction_lines()[:8]))
    command = [sys.executable, "-m", "meds1.rl.reward", str(file), "--out", str(tmp_path / "out.jsonl")]
    result = subprocess.run(
        [*command, "experiment=demo-rl", "rl.rewards.format=0.5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["layout"] == "huatuo" and summary["overall"]["n"] == 8
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for line in lines:
        assert line["reward"] == pytest.approx(line["rewards"]["mcq"] + 0.5 * line["rewards"]["format"])
    bad = subprocess.run(
        [*command, "experiment=demo-rl", "rl.rewards.nope=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert (
        "unknown config key 'rl.rewards.nope'; valid keys in rl.rewards: mcq, format, judge, overlong"
        in bad.stderr
    )
