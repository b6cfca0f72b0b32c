"""Turn curated rows into chat conversations (the `formatted/` dataset the trainer reads)."""

from __future__ import annotations

import pandas as pd

from meds1.config import FormatConfig
from meds1.curation import COT, QUESTION, RESPONSE


def to_messages(question: str, cot: str, response: str, fmt: FormatConfig) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    messages.append({"role": "user", "content": question})
    messages.append(
        {"role": "assistant", "content": fmt.assistant_template.format(cot=cot, response=response)}
    )
    return messages


def format_rows(curated: pd.DataFrame, fmt: FormatConfig, tokenizer):
    """An HF dataset with `messages` (chat turns) and `text` (rendered by the tokenizer's chat template)."""
    from datasets import Dataset

    conversations = [
        to_messages(q, c, r, fmt)
        for q, c, r in zip(curated[QUESTION], curated[COT], curated[RESPONSE], strict=True)
    ]
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]
    return Dataset.from_dict({"row_id": curated["row_id"].tolist(), "messages": conversations, "text": texts})
