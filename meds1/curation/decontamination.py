"""Decontamination: drop training rows whose question nearly duplicates an eval question.

Both sides are normalized (ASCII-folded, lowercased, punctuation dropped) and cut into word
n-grams (8 by default, as s1 did). A training question overlaps an eval question when at least
`threshold` of its n-grams occur in that one eval question; a question shorter than n words is one
n-gram, so only an exact (normalized) duplicate matches it. Counting per eval question, not over
the whole suite, keeps boilerplate ("which of the following is the most likely ...") from adding up.
`columns` picks the row's texts to compare (default `Question`; rows that also carry their source
multiple-choice question, as HuatuoGPT-o1's do in `question`, should compare that too).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter

import numpy as np
import pandas as pd

from meds1.config import DecontaminationConfig
from meds1.errors import UserError

log = logging.getLogger(__name__)


def words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode().lower()
    return re.findall(r"[a-z0-9]+", folded)


def ngrams(text: str, n: int) -> set[int]:
    tokens = words(text)
    if len(tokens) < n:
        return {hash(" ".join(tokens))} if tokens else set()
    return {hash(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)}


def overlap_scores(questions: list[str], eval_questions: list[str], n: int) -> np.ndarray:
    """Per training question: the largest share of its n-grams found in any single eval question."""
    index: dict[int, list[int]] = {}
    for number, question in enumerate(eval_questions):
        for gram in ngrams(question, n):
            index.setdefault(gram, []).append(number)
    scores = np.zeros(len(questions))
    for position, question in enumerate(questions):
        grams = ngrams(question, n)
        hits = Counter(number for gram in grams for number in index.get(gram, ()))
        if hits:
            scores[position] = max(hits.values()) / len(grams)
    return scores


def eval_questions(decontamination: DecontaminationConfig) -> list[str]:
    from meds1.evaluation.data import load_suite

    try:
        rows, _ = load_suite(list(decontamination.suite))
    except UserError as error:
        raise UserError(
            f"decontamination needs the eval suite: {error}. Point MEDS1_EVAL_DATA at it, set "
            "curation.decontamination.suite, or turn it off with curation.decontamination.enabled=false"
        ) from None
    return [row["question"] for row in rows]


def contaminated(rows: pd.DataFrame, decontamination: DecontaminationConfig) -> np.ndarray:
    """A boolean mask over `rows`: True where any of the compared columns overlaps an eval question."""
    mask = np.zeros(len(rows), dtype=bool)
    if not decontamination.suite:
        log.warning("decontamination: no eval files configured (curation.decontamination.suite); skipped")
        return mask
    missing = [c for c in decontamination.columns if c not in rows.columns]
    if missing:
        raise UserError(
            f"curation.decontamination.columns {missing} are not source columns; "
            f"valid: {', '.join(map(str, rows.columns))}"
        )
    reference = eval_questions(decontamination)
    for column in decontamination.columns:
        texts = rows[column].fillna("").astype(str).tolist()
        mask |= overlap_scores(texts, reference, decontamination.ngram) >= decontamination.threshold
    log.info(
        "decontamination: %d of %d rows overlap one of %d eval questions (%s; %d-grams, threshold %.2f)",
        int(mask.sum()),
        len(rows),
        len(reference),
        ", ".join(decontamination.columns),
        decontamination.ngram,
        decontamination.threshold,
    )
    return mask
