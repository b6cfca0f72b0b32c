"""Turn curated rows into chat conversations (the `formatted/` dataset the trainer reads).

The assistant turn follows `curation.format.layout` (meds1.layouts: huatuo, s1, think, nemotron), or
`curation.format.assistant_template` ("{cot}", "{response}") when that is set. With no trace
(`thinking=False`: the `none` transform) it is the layout's answer part only, as med-s1 wrote it.
`clean_text` is med-s1's text cleaning, which med-s1 applied to every format (`curation.format.clean_text`).
"""

from __future__ import annotations

import re

import pandas as pd

from meds1.config.schema import FormatConfig
from meds1.curation import COT, QUESTION, RESPONSE
from meds1.layouts import LAYOUTS


def clean_text(text: str | None) -> str:
    """med-s1's preprocess_text (data/utils/formatting.py@d15c393): strip, " [title]" -> ". ", every
    one-line "[...]" span removed, one pass of double spaces -> single; None -> " "."""
    if text is None:
        return " "
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def assistant_template(fmt: FormatConfig, thinking: bool = True) -> str:
    if fmt.assistant_template is not None:
        return fmt.assistant_template
    layout = LAYOUTS[fmt.layout]
    return layout.template if thinking else layout.answer_template


def to_messages(
    question: str, cot: str, response: str, fmt: FormatConfig, thinking: bool = True
) -> list[dict[str, str]]:
    template = assistant_template(fmt, thinking)
    if fmt.clean_text:
        question, cot, response = clean_text(question), clean_text(cot), clean_text(response)
    prefix = LAYOUTS[fmt.layout].answer_prefix if fmt.assistant_template is None else ""
    if prefix:
        cot, response = cot.strip(), response.strip()
        response = response if prefix.strip() in response else prefix + response
    messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": template.format(cot=cot, response=response)})
    return messages


def format_rows(curated: pd.DataFrame, fmt: FormatConfig, tokenizer, thinking: bool = True):
    """An HF dataset with `messages` (chat turns) and `text` (rendered by the tokenizer's chat template).

    `thinking=False` writes the answer part only (no trace: the `none` transform)."""
    from datasets import Dataset

    cots = curated[COT].where(curated[COT].notna(), "")  # med-s1: a missing trace formats as ""
    conversations = [
        to_messages(q, c, r, fmt, thinking)
        for q, c, r in zip(curated[QUESTION], cots, curated[RESPONSE], strict=True)
    ]
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]
    return Dataset.from_dict({"row_id": curated["row_id"].tolist(), "messages": conversations, "text": texts})
