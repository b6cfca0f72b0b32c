"""HuatuoGPT-style multiple-choice prompts, sent as a user turn through the model's chat template."""

from __future__ import annotations


def options_text(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def build_conversation(row: dict, template: str) -> list[dict[str, str]]:
    prompt = template.format(question=row["question"], options=options_text(row["options"]))
    return [{"role": "user", "content": prompt}]
