"""Quality filter: rows with a missing, empty or non-text field, or a CoT cut off at a suspicious length.

medical-o1-reasoning-SFT has a spike of CoTs that are exactly 1024 tokens long: generations cut
off by the teacher's length limit. Token counts exclude special tokens (BOS etc.), so the count is
the CoT text's own length whatever the tokenizer adds around it.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from meds1.curation import COT, REQUIRED_COLUMNS

log = logging.getLogger(__name__)

KEPT, REMOVED = "kept", "removed"
# Before " word": where byte-level BPE pre-tokenizers (GPT-2, Llama 3, Qwen 2) always split.
PIECE_START = re.compile(r"(?<=\S)(?= \S)")


def _tokenized_lengths(texts: list[str], tokenizer, batch_size: int) -> np.ndarray:
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        lengths[start : start + len(batch)] = [len(x) for x in ids]
    return lengths


def _piece_lengths(texts: list[str], tokenizer, batch_size: int) -> np.ndarray:
    counts: dict[str, int] = {}
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        pieces = [PIECE_START.split(text) for text in texts[start : start + batch_size]]
        new = list(set().union(*pieces).difference(counts))
        counts.update(zip(new, _tokenized_lengths(new, tokenizer, 8192).tolist(), strict=True))
        lengths[start : start + len(pieces)] = [sum(map(counts.__getitem__, p)) for p in pieces]
    return lengths


def token_lengths(texts: list[str], tokenizer, batch_size: int = 1000) -> np.ndarray:
    """Exact token counts (no special tokens) of many texts.

    A byte-level BPE tokenizer never merges across the start of a " word" piece, so a text's count
    is the sum of its pieces' counts, and pieces repeat across texts: each distinct piece is
    tokenized once (several times faster on long CoTs). That shortcut is first checked against full
    tokenization on a spread of 2% of the texts; a tokenizer that fails the check (e.g. one that
    prefixes a space to each piece, as SentencePiece does) gets every text tokenized in full.
    """
    if not texts:
        return np.zeros(0, dtype=np.int64)
    sample = [
        texts[i]
        for i in np.linspace(0, len(texts) - 1, min(len(texts), max(64, len(texts) // 50)), dtype=int)
    ]
    if np.array_equal(
        _piece_lengths(sample, tokenizer, batch_size), _tokenized_lengths(sample, tokenizer, batch_size)
    ):
        return _piece_lengths(texts, tokenizer, batch_size)
    log.info("token counts: this tokenizer merges across word pieces; tokenizing every text in full")
    return _tokenized_lengths(texts, tokenizer, batch_size)


def _text_problems(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(missing or blank, present but not a string) masks of one column."""
    is_text = column.map(lambda value: isinstance(value, str)).astype(bool)
    missing = column.isna().astype(bool) & ~is_text
    blank = missing | (is_text & (column.where(is_text, "").astype(str).str.strip() == ""))
    return blank, ~is_text & ~missing


def quality_filter(
    frame: pd.DataFrame, tokenizer, truncated_cot_tokens: list[int], batch_size: int = 1000
) -> pd.DataFrame:
    """Add `filter_status/filter_stage/filter_reason` and `cot_tokens` columns (rows are never dropped)."""
    frame = frame.copy()
    frame["filter_status"] = KEPT
    frame["filter_stage"] = None
    frame["filter_reason"] = None
    for column in REQUIRED_COLUMNS:
        blank, not_text = _text_problems(frame[column])
        for mask, reason in ((blank, f"missing_{column}"), (not_text, f"not_text_{column}")):
            mask = mask & (frame["filter_status"] == KEPT)
            frame.loc[mask, ["filter_status", "filter_stage", "filter_reason"]] = [REMOVED, "quality", reason]
    frame["cot_tokens"] = 0
    blank, not_text = _text_problems(frame[COT])
    has_cot = ~blank & ~not_text
    frame.loc[has_cot, "cot_tokens"] = token_lengths(frame.loc[has_cot, COT].tolist(), tokenizer, batch_size)
    truncated = frame["cot_tokens"].isin(truncated_cot_tokens) & (frame["filter_status"] == KEPT)
    frame.loc[truncated, ["filter_status", "filter_stage", "filter_reason"]] = [
        REMOVED,
        "quality",
        "cot_truncated",
    ]
    return frame
