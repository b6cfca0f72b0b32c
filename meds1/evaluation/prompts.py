"""HuatuoGPT-style multiple-choice prompts, sent as a user turn through the model's chat template.

The question text is HuatuoGPT-o1's (`{question}` then one `X. option` line per option); with
`eval.strict=true` a suffix asks for the answer in the form "The answer is A."; with
`eval.prompting=step` med-s1's step prompt follows (som-shahlab/med-s1@d15c393 eval/utils.py:
get_query_prompt). `eval.system_prompt` (the trained one, e.g. Nemotron's "detailed thinking on")
opens the conversation. The backend renders
the conversation with the chat template *and the generation prompt* (see `meds1.inference.chat`).
"""

from __future__ import annotations

from meds1.config.schema import EvalConfig

STEP_SUFFIX = "\n\nLet's think step by step."


def options_text(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def question_prompt(row: dict, eval_cfg: EvalConfig) -> str:
    prompt = eval_cfg.prompt.format(question=row["question"], options=options_text(row["options"]))
    if eval_cfg.strict:
        prompt += eval_cfg.strict_suffix
    return prompt + STEP_SUFFIX if eval_cfg.prompting == "step" else prompt


def build_conversation(row: dict, eval_cfg: EvalConfig) -> list[dict[str, str]]:
    system = [{"role": "system", "content": eval_cfg.system_prompt}] if eval_cfg.system_prompt else []
    return [*system, {"role": "user", "content": question_prompt(row, eval_cfg)}]
