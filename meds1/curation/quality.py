"""Quality filter: rows with a missing/empty field, or a CoT cut off at a suspicious token count.

medical-o1-reasoning-SFT has a spike of CoTs that are exactly 1024 tokens long: generations cut
off by the teacher's length limit. Token counts exclude special tokens (BOS etc.), so the count is
the CoT text's own length whatever the tokenizer adds around it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meds1.curation import COT, REQUIRED_COLUMNS

KEPT, REMOVED = "kept", "removed"


def token_lengths(texts: list[str], tokenizer, batch_size: int = 1000) -> np.ndarray:
    """Token counts (no special tokens) of many texts, tokenized in batches by the fast tokenizer."""
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        lengths[start : start + len(batch)] = [len(x) for x in ids]
    return lengths


def _is_blank(column: pd.Series) -> pd.Series:
    text = column.astype("string")
    return text.isna() | (text.str.strip() == "")


def quality_filter(
    frame: pd.DataFrame, tokenizer, truncated_cot_tokens: list[int], batch_size: int = 1000
) -> pd.DataFrame:
    """Add `filter_status/filter_stage/filter_reason` and `cot_tokens` columns (rows are never dropped)."""
    frame = frame.copy()
    frame["filter_status"] = KEPT
    frame["filter_stage"] = None
    frame["filter_reason"] = None
    for column in REQUIRED_COLUMNS:
        blank = _is_blank(frame[column]) & (frame["filter_status"] == KEPT)
        frame.loc[blank, ["filter_status", "filter_stage", "filter_reason"]] = [
            REMOVED,
            "quality",
            f"missing_{column}",
        ]
    frame["cot_tokens"] = 0
    has_cot = ~_is_blank(frame[COT])
    frame.loc[has_cot, "cot_tokens"] = token_lengths(
        frame.loc[has_cot, COT].astype(str).tolist(), tokenizer, batch_size
    )
    truncated = frame["cot_tokens"].isin(truncated_cot_tokens) & (frame["filter_status"] == KEPT)
    frame.loc[truncated, ["filter_status", "filter_stage", "filter_reason"]] = [
        REMOVED,
        "quality",
        "cot_truncated",
    ]
    return frame
