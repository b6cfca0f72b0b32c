"""HuatuoGPT-style multiple-choice prompts, sent as a user turn through the model's chat template.

The question text is HuatuoGPT-o1's (`{question}` then one `X. option` line per option); with
`eval.strict=true` a suffix asks for the answer in the form "The answer is A.". The backend renders
the conversation with the chat template *and the generation prompt* (see `meds1.inference.chat`).
"""

from __future__ import annotations

from meds1.config import EvalConfig


def options_text(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def question_prompt(row: dict, eval_cfg: EvalConfig) -> str:
    prompt = eval_cfg.prompt.format(question=row["question"], options=options_text(row["options"]))
    return prompt + eval_cfg.strict_suffix if eval_cfg.strict else prompt


def build_conversation(row: dict, eval_cfg: EvalConfig) -> list[dict[str, str]]:
    return [{"role": "user", "content": question_prompt(row, eval_cfg)}]
