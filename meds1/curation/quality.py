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
STATUS_COLUMNS = ["filter_status", "filter_stage", "filter_reason"]  # each row's: why it left, or kept
# Before " word": where byte-level BPE pre-tokenizers (GPT-2, Llama 3, Qwen 2) always split.
PIECE_START = re.compile(r"(?<=\S)(?= \S)")


def _tokenized_lengths(texts: list[str], tokenizer, batch_size: int) -> np.ndarray:
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        lengths[start : start + len(batch)] = [len(x) for x in ids]
    return lengths


def _word_lengths(texts: list[str], tokenizer) -> np.ndarray:
    r"""Token counts as sums over " word" pieces, each distinct piece tokenized once.

    Texts are split at every space (pyarrow, in C++); the split before a space is a pre-tokenizer
    boundary when the character before it is not whitespace, which holds in every text without a
    whitespace character followed by a space (r"\s "): those few go through `_piece_lengths`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pa.array(texts, type=pa.large_string())
    lengths = np.zeros(len(texts), dtype=np.int64)
    spaced = pc.match_substring_regex(column, r"\s ").to_numpy(zero_copy_only=False)
    if spaced.any():
        others = np.flatnonzero(spaced)
        lengths[others] = _piece_lengths([texts[i] for i in others], tokenizer)
        column = column.filter(pa.array(~spaced))
    words = pc.split_pattern(column, " ")
    encoded = pc.list_flatten(words).dictionary_encode()
    distinct, index = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
    occurrences = _encoded_lengths([" " + word for word in distinct], tokenizer)[index]
    first = words.offsets.to_numpy()[:-1]  # each text's first word has no space before it
    occurrences[first] = _encoded_lengths(distinct, tokenizer)[index[first]]
    lengths[~spaced] = np.add.reduceat(occurrences, first) if len(first) else []
    return lengths


def _encoded_lengths(texts: list[str], tokenizer) -> np.ndarray:
    """Token counts of short texts straight from the Rust tokenizer (what `tokenizer(...)` counts)."""
    encodings = tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int64, count=len(texts))


def _piece_lengths(texts: list[str], tokenizer, batch_size: int = 1000) -> np.ndarray:
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
    tokenized once (`_word_lengths`, several times faster on long CoTs). That shortcut is first checked
    against full tokenization on a spread of 0.5% of the texts (at least 64); a tokenizer that fails the
    check (e.g. one that prefixes a space to each piece, as SentencePiece does, or a slow one) gets every
    text tokenized in full.
    """
    if not texts:
        return np.zeros(0, dtype=np.int64)
    sample = [
        texts[i]
        for i in np.linspace(0, len(texts) - 1, min(len(texts), max(64, len(texts) // 200)), dtype=int)
    ]
    fast = getattr(tokenizer, "backend_tokenizer", None) is not None
    if fast and np.array_equal(
        _word_lengths(sample, tokenizer), _tokenized_lengths(sample, tokenizer, batch_size)
    ):
        return _word_lengths(texts, tokenizer)
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
            remove(frame, mask & (frame["filter_status"] == KEPT), "quality", reason)
    frame["cot_tokens"] = 0
    blank, not_text = _text_problems(frame[COT])
    has_cot = ~blank & ~not_text
    frame.loc[has_cot, "cot_tokens"] = token_lengths(frame.loc[has_cot, COT].tolist(), tokenizer, batch_size)
    truncated = frame["cot_tokens"].isin(truncated_cot_tokens) & (frame["filter_status"] == KEPT)
    remove(frame, truncated, "quality", "cot_truncated")
    return frame


def remove(rows: pd.DataFrame, which: pd.Index | pd.Series, stage: str, reason: str) -> None:
    """Mark the rows `which` selects (an index, or a boolean mask) as removed by `stage` for `reason`."""
    rows.loc[which, STATUS_COLUMNS] = [REMOVED, stage, reason]
