"""Chat layouts (huatuo, s1, think, nemotron), the no-trace rows, med-s1's text cleaning, and the
model/system-prompt settings that travel from training rows to eval prompts."""

import re

import pandas as pd
import pytest

from meds1.config.compose import compose
from meds1.config.schema import FormatConfig
from meds1.curation.formatting import clean_text, format_rows, to_messages
from meds1.evaluation.budget_forcing import MARKERS
from meds1.evaluation.extract import extract_answer
from meds1.evaluation.harnesses import huatuo_match
from meds1.evaluation.prompts import build_conversation, question_prompt
from meds1.layouts import LAYOUTS
from meds1.models import load_tokenizer

OPTIONS = {"A": "Isoniazid", "B": "Rifampin", "C": "Ethambutol", "D": "Pyrazinamide"}
THINKING = "Option A looks right at first: the answer is A? No. Isoniazid hurts the liver, not the eye."
RESPONSE = "The answer is C. Ethambutol causes optic neuritis."


def medsone_format(question, thinking, answer, fmt, extract=None):
    """som-shahlab/med-s1@d15c393 data/utils/formatting.py format_chat_template's assistant turn (Qwen
    path), transcribed as the reference the layouts are checked against (preprocess_text included)."""

    def preprocess_text(text):
        if text is None:
            return " "
        text = text.strip()
        text = text.replace(" [title]", ". ")
        text = re.sub("\\[.*?\\]", "", text)
        return text.replace("  ", " ")

    thinking, answer = preprocess_text(thinking), preprocess_text(answer)
    if fmt != "huatuo" and "Answer:" not in answer:
        answer = "Answer: " + answer
    if extract == "none":
        return {"huatuo": f"## Final Response\n\n{answer}", "nemotron": answer}.get(
            fmt, f"<|im_start|>answer\n{answer}"
        )
    return {
        "huatuo": f"## Thinking\n\n{thinking}\n\n## Final Response\n\n{answer}",
        "nemotron": f"<think>{thinking}</think>{answer}",
        "qwen": f"<|im_start|>think\n{thinking}\n<|im_start|>answer\n{answer}",
    }[fmt]


MEDSONE_TEXTS = [
    (
        " Why [1] does it  hurt? ",
        "First [title] the eye.  Then [see fig 2] the  liver.",
        " C [ref]. Ethambutol ",
    ),
    ("Q", "", "Answer: B"),
    ("Q", "Plain.", "Plain answer"),
]
MEDSONE_FORMATS = {"huatuo": "huatuo", "qwen": "s1", "nemotron": "nemotron"}  # med-s1 format -> layout


@pytest.mark.parametrize("question,cot,response", MEDSONE_TEXTS)
@pytest.mark.parametrize("medsone,layout", sorted(MEDSONE_FORMATS.items()))
@pytest.mark.parametrize("thinking", [True, False])
def test_layouts_with_clean_text_reproduce_medsone_formats(
    question, cot, response, medsone, layout, thinking
):
    fmt = FormatConfig(layout=layout, clean_text=True)
    turn = to_messages(question, cot, response, fmt, thinking=thinking)
    assert turn[-1]["content"] == medsone_format(
        question, cot, response, medsone, None if thinking else "none"
    )
    assert turn[0]["content"] == clean_text(question)


def test_qwen_differs_from_s1_only_by_clean_text():
    plain = to_messages("Q", "a [1] b", "x", FormatConfig(layout="s1"))[-1]["content"]
    assert plain == "<|im_start|>think\na [1] b\n<|im_start|>answer\nAnswer: x"
    assert plain != medsone_format("Q", "a [1] b", "x", "qwen")
    assert plain.replace(" [1]", "") == medsone_format("Q", "a [1] b", "x", "qwen")


def test_clean_text_is_medsone_preprocess_text():
    assert clean_text(None) == " "
    assert clean_text("  a [title] b [x]c   d ") == "a. b c  d"  # one pass of double spaces, as med-s1
    assert clean_text("keep [multi\nline] brackets") == "keep [multi\nline] brackets"


def test_think_and_nemotron_layouts():
    think = to_messages("Q?", " t ", " r ", FormatConfig(layout="think"))[-1]["content"]
    assert think == "<think>\n t \n</think>\n\n r "
    nemotron = to_messages("Q?", " t ", " r ", FormatConfig(layout="nemotron"))[-1]["content"]
    assert nemotron == "<think>t</think>Answer: r"
    assert to_messages("Q?", "t", "r", FormatConfig(layout="think"), thinking=False)[-1]["content"] == "r"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_is_read_and_budget_forced_with_its_own_markers(layout):
    trained = to_messages("Q?", THINKING, RESPONSE, FormatConfig(layout=layout))[-1]["content"]
    assert extract_answer(trained, OPTIONS) == "C"
    assert huatuo_match(trained, OPTIONS) == ("C", "C")
    marks = MARKERS[layout]
    assert trained.startswith(marks.think_start) and marks.think_end in trained
    assert marks.answer_prefix.strip() in trained
    forced = marks.think_start + THINKING + marks.answer_prefix + " C. Ethambutol"
    assert extract_answer(forced, OPTIONS) == "C"


def test_format_rows_without_thinking_writes_the_answer_only(model_cache):
    from meds1.config.schema import ModelConfig

    tokenizer = load_tokenizer(ModelConfig(name="tiny", path="tiny", build="tiny"), str(model_cache))
    curated = pd.DataFrame(
        {"row_id": [0, 1], "Question": ["q1", "q2"], "Complex_CoT": ["c1", None], "Response": ["r1", "r2"]}
    )
    fmt = FormatConfig(layout="huatuo")
    with_trace = format_rows(curated, fmt, tokenizer)
    assert (
        with_trace["messages"][1][-1]["content"] == "## Thinking\n\n\n\n## Final Response\n\nr2"
    )  # med-s1: NaN -> ""
    without = format_rows(curated, fmt, tokenizer, thinking=False)
    assert [m[-1]["content"] for m in without["messages"]] == [
        "## Final Response\n\nr1",
        "## Final Response\n\nr2",
    ]
    assert "## Thinking" not in without["text"][0] and "r1" in without["text"][0]


def test_nemotron_model_sets_the_system_turn_of_training_rows_and_eval_prompts():
    cfg = compose(["experiment=random-1k", "model=nemotron-nano-8b", "curation.format.layout=think"])
    assert cfg.model.path == "nvidia/Llama-3.1-Nemotron-Nano-8B-v1"
    assert cfg.curation.format.system_prompt == cfg.eval.system_prompt == "detailed thinking on"
    assert cfg.eval.tts.layout == "think"
    row = {"question": "Q?", "options": OPTIONS}
    conversation = build_conversation(row, cfg.eval)
    assert conversation[0] == {"role": "system", "content": "detailed thinking on"}
    messages = to_messages("Q?", "t", "r", cfg.curation.format)
    assert messages[0] == {"role": "system", "content": "detailed thinking on"}
    llama = compose(["experiment=random-1k"])
    assert llama.eval.system_prompt is None and build_conversation(row, llama.eval)[0]["role"] == "user"


@pytest.mark.parametrize(
    "model,path",
    [
        ("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct"),
        ("nemotron-nano-8b", "nvidia/Llama-3.1-Nemotron-Nano-8B-v1"),
        ("huatuo-o1-8b", "FreedomIntelligence/HuatuoGPT-o1-8B"),
        ("qwq-32b", "Qwen/QwQ-32B"),
    ],
)
def test_model_configs_compose(model, path):
    cfg = compose(["experiment=base", f"model={model}"])
    assert cfg.model.path == path and cfg.model.name == model
    assert cfg.model.revision is None or re.fullmatch(r"[0-9a-f]{40}", cfg.model.revision)


def test_step_prompting_appends_medsones_step_prompt():
    cfg = compose(["experiment=base", "eval.prompting=step"])
    prompt = question_prompt({"question": "Q?", "options": {"A": "x", "B": "y"}}, cfg.eval)
    question = "Please answer the following multiple-choice question:\nQ?\nA. x\nB. y"
    assert prompt == question + "\n\nLet's think step by step."
    strict = compose(["experiment=base", "eval.prompting=step", "eval.strict=true"]).eval
    assert question_prompt({"question": "Q?", "options": {"A": "x"}}, strict).endswith(
        "'The answer is A.'.\n\nLet's think step by step."
    )
