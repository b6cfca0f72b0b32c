"""The difficulty filter asks and judges as med-s1 did (som-shahlab/med-s1 at 92b9b79), checked against its
source where the mirror is present; the chat-template variant stays available."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
from pathlib import Path

import pytest

from meds1.config.compose import compose
from meds1.config.schema import DifficultyConfig, InferenceConfig, ModelConfig, PromptFormat
from meds1.curation.difficulty import (
    CORRECT,
    INCORRECT,
    answers_spec,
    ask_base_model,
    parse_verdict,
)
from meds1.errors import UserError
from meds1.inference import load_backend

MED_S1 = Path("/work/.mirror/som-shahlab+med-s1/repo")
SEED_COMMIT = "92b9b79"
QUESTION = "A 45-year-old man has {crushing} chest pain radiating to the left arm. What is the next step?"


def med_s1_source(path: str) -> ast.Module:
    if not MED_S1.is_dir():
        pytest.skip(f"med-s1 mirror {MED_S1} is absent")
    text = subprocess.run(
        ["git", "-C", str(MED_S1), "show", f"{SEED_COMMIT}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ast.parse(text)


def function(module: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    return next(
        node
        for node in ast.walk(module)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    )


def test_the_base_prompt_is_med_s1s_format_medical_prompt(make_config):
    module = med_s1_source("data/utils/model_utils.py")
    namespace: dict = {}
    exec(
        compile(ast.Module([function(module, "format_medical_prompt")], []), "model_utils", "exec"), namespace
    )
    difficulty = make_config("experiment=med-s1-1k").curation.difficulty
    assert difficulty.prompt_format == PromptFormat.raw
    assert difficulty.prompt.format(question=QUESTION) == namespace["format_medical_prompt"](QUESTION)
    assert difficulty.prompt.format(question=QUESTION).endswith("Think through this step-by-step:\n1.")


def test_the_base_sampling_is_med_s1s(make_config):
    """SamplingParams in _llama_forward; its temperature is that function's default (no caller sets it)."""
    forward = function(med_s1_source("data/utils/model_utils.py"), "_llama_forward")
    call = next(
        node
        for node in ast.walk(forward)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SamplingParams"
    )
    params = {k.arg: k.value for k in call.keywords}
    assert isinstance(params.pop("temperature"), ast.Name)  # = the `temperature` argument
    names = [a.arg for a in forward.args.args][-len(forward.args.defaults) :]
    defaults = dict(zip(names, forward.args.defaults, strict=True))
    expected = {k: ast.literal_eval(v) for k, v in params.items()} | {
        "temperature": ast.literal_eval(defaults["temperature"])
    }
    difficulty = make_config("experiment=med-s1-1k").curation.difficulty
    assert expected == {
        "temperature": difficulty.temperature,
        "max_tokens": difficulty.max_new_tokens,
        "stop": difficulty.stop,
        "top_p": difficulty.top_p,
        "frequency_penalty": difficulty.frequency_penalty,
    }


def test_the_judge_prompt_and_sampling_are_med_s1s_verify_answer(make_config):
    module = med_s1_source("data/utils/openai_utils.py")
    verify = function(module, "verify_answer")
    template = next(
        node.value
        for node in ast.walk(verify)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "prompt"
    )
    values = {"question": QUESTION, "model_answer": "Give aspirin.", "correct_answer": "An ECG first."}
    expected = eval(compile(ast.Expression(template), "verify_answer", "eval"), {}, values)
    judge = make_config("experiment=med-s1-1k").curation.difficulty.judge
    assert (
        judge.prompt.format(question=QUESTION, answer="Give aspirin.", reference="An ECG first.") == expected
    )
    request = next(
        node
        for node in ast.walk(function(module, "get_model_response"))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "create"
    )
    params = {
        k.arg: ast.literal_eval(k.value) for k in request.keywords if k.arg in ("temperature", "max_tokens")
    }
    assert params == {"temperature": judge.llm.temperature, "max_tokens": judge.llm.max_new_tokens}
    assert judge.reference_column == "Response" and judge.llm.model.path == "gemini-2.0-flash"


@pytest.mark.parametrize(
    ("reply", "ours", "med_s1_said_yes"),
    [
        ("They match. Yes", CORRECT, True),
        ("They match. Yes.", CORRECT, False),  # med-s1's bug: "yes." != "yes", counted as No
        ("They match.\n\n**Yes**", CORRECT, False),
        ("Different drugs. No.", INCORRECT, False),
        ("Yes, mostly, but the dose differs", None, False),  # unparseable: asked again, never assumed
    ],
)
def test_the_judge_reads_the_final_word_where_med_s1_compared_it_literally(reply, ours, med_s1_said_yes):
    assert parse_verdict(reply) == ours
    assert (reply.strip().split()[-1].lower() == "yes") == med_s1_said_yes  # verify_answer's own parse


def test_raw_and_chat_prompt_formats_reach_the_model(tiny_model_dir):
    backend = load_backend(
        InferenceConfig(backend="hf"),
        ModelConfig(name="tiny", path=str(tiny_model_dir), dtype="float32"),
        str(tiny_model_dir),
    )
    tokenizer = backend.tokenizer
    raw = DifficultyConfig(max_new_tokens=4)
    chat = dataclasses.replace(raw, prompt_format=PromptFormat.chat, prompt="{question}")
    [raw_answer] = ask_base_model(backend, [QUESTION], raw, seed=0)
    [chat_answer] = ask_base_model(backend, [QUESTION], chat, seed=0)
    raw_text = raw.prompt.format(question=QUESTION)
    assert raw_answer.prompt_tokens == len(tokenizer(raw_text)["input_ids"])  # no chat template
    rendered = backend.render([{"role": "user", "content": QUESTION}])
    assert chat_answer.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert rendered != QUESTION and 0 < chat_answer.output_tokens <= 4 and 0 < raw_answer.output_tokens <= 4


@pytest.mark.parametrize(
    "override",
    [
        "curation.difficulty.prompt_format=chat",
        "curation.difficulty.top_p=1.0",
        "curation.difficulty.frequency_penalty=0",
        "curation.difficulty.stop=[]",
        "curation.difficulty.temperature=0.7",
    ],
)
def test_a_changed_prompt_format_or_sampling_setting_gets_new_cached_answers(make_config, override):
    base = answers_spec(make_config("experiment=med-s1-1k"), "fingerprint")
    changed = answers_spec(make_config("experiment=med-s1-1k", override), "fingerprint")
    assert changed != base
    assert answers_spec(make_config("experiment=med-s1-1k"), "fingerprint") == base


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("top_p=0.0", r"^curation.difficulty.top_p=0.0: must be in \(0, 1\]$"),
        ("frequency_penalty=3.0", r"^curation.difficulty.frequency_penalty=3.0: must be in \[-2, 2\]$"),
        ("temperature=-0.1", r"^curation.difficulty.temperature=-0.1: must be >= 0$"),
        ("max_new_tokens=0", r"^curation.difficulty.max_new_tokens=0: must be >= 1$"),
    ],
)
def test_sampling_settings_out_of_range_fail_at_compose(setting, message):
    with pytest.raises(UserError, match=message):
        compose(["experiment=med-s1-1k", f"curation.difficulty.{setting}"])
    compose(["experiment=med-s1-1k", "curation.difficulty.enabled=false", f"curation.difficulty.{setting}"])
