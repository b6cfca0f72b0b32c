"""Decontamination: drop training rows whose question restates a question of the eval suite.

Two methods (`curation.decontamination.method`):

- `tfidf` (default): cosine similarity of TF-IDF vectors (word unigrams of the normalized text,
  English stop words dropped, sublinear term frequency) between a row's text and
  each eval question; a row is removed when its nearest eval question scores >= `threshold`. IDF
  counts the eval questions only (a word they lack weighs most), so a row's score does not depend on
  the other training rows.
  medical-o1-reasoning-SFT rewrites each source multiple-choice question as an open question, so a
  contaminated row shares the eval question's rare words but few of its 8-word runs: on HuatuoGPT-o1's
  198 demo rows the 8-gram check finds none of the 3 MedMCQA validation questions, this one all 3.
- `ngram`: s1's word n-gram overlap. Both sides are normalized (ASCII-folded, lowercased, punctuation
  dropped) and cut into word n-grams; the score is the largest share of the row's n-grams found in a
  single eval question, and a row is removed when it is >= `ngram_share` and above 0 (so
  `ngram_share=0` is s1's rule: any shared n-gram). A text shorter than n words is one n-gram.

Each compared row gets its nearest eval question (`overlap_source`, `overlap_id`) and score
(`overlap_score`), written to filtered.parquet, so every removal can be checked by hand.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter

import numpy as np
import pandas as pd

from meds1.config.schema import DecontaminationConfig, DecontaminationMethod
from meds1.errors import UserError
from meds1.hub import HubReadError

log = logging.getLogger(__name__)

MATCH_COLUMNS = ("overlap_score", "overlap_source", "overlap_id")
CHUNK_ROWS = 2048  # training rows per sparse product: bounds the dense (rows x eval questions) block


def words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode().lower()
    return re.findall(r"[a-z0-9]+", folded)


def ngrams(text: str, n: int) -> set[int]:
    tokens = words(text)
    if len(tokens) < n:
        return {hash(" ".join(tokens))} if tokens else set()
    return {hash(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)}


def ngram_scores(texts: list[str], reference: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the largest share of its n-grams found in one reference text, and that text's index."""
    index: dict[int, list[int]] = {}
    for number, question in enumerate(reference):
        for gram in ngrams(question, n):
            index.setdefault(gram, []).append(number)
    scores = np.zeros(len(texts))
    nearest = np.full(len(texts), -1)
    for position, text in enumerate(texts):
        grams = ngrams(text, n)
        hits = Counter(number for gram in grams for number in index.get(gram, ()))
        if hits:
            nearest[position], count = hits.most_common(1)[0]
            scores[position] = count / len(grams)
    return scores, nearest


def tfidf_scores(texts: list[str], reference: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the largest TF-IDF cosine to a reference text, and that text's index."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer

    def terms(text: str) -> list[str]:
        return [word for word in words(text) if word not in ENGLISH_STOP_WORDS]

    counts = CountVectorizer(analyzer=terms, dtype=np.float32).fit([*reference, *texts])
    eval_counts = counts.transform(reference)
    weights = TfidfTransformer(sublinear_tf=True).fit(eval_counts)  # IDF from the eval questions only
    eval_vectors = weights.transform(eval_counts).T.tocsr()
    rows = weights.transform(counts.transform(texts))
    scores = np.zeros(len(texts))
    nearest = np.full(len(texts), -1)
    for start in range(0, len(texts), CHUNK_ROWS):
        block = (rows[start : start + CHUNK_ROWS] @ eval_vectors).toarray()
        nearest[start : start + len(block)] = block.argmax(axis=1)
        scores[start : start + len(block)] = block.max(axis=1)
    nearest[scores == 0] = -1
    return scores, nearest


def eval_questions(
    decontamination: DecontaminationConfig, key: str = "curation.decontamination"
) -> list[dict]:
    """Every question of every chosen suite entry, read as the eval reads it (mappings included); `key`
    names the decontamination settings in errors (rl.data.decontamination for RL's questions)."""
    from meds1.evaluation.data import load_suite

    try:
        rows, _ = load_suite(list(decontamination.suite), key=f"{key}.suite")
    except HubReadError:
        raise  # names its entry and the local copy already
    except UserError as error:
        raise UserError(
            f"decontamination needs the eval suite: {error}. Point MEDS1_EVAL_DATA at it, set "
            f"{key}.suite, or turn it off with {key}.enabled=false"
        ) from None
    return rows


def nearest_eval_questions(
    rows: pd.DataFrame, decontamination: DecontaminationConfig, key: str = "curation.decontamination"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Each row's nearest eval question over the compared columns (`MATCH_COLUMNS`, indexed like
    `rows`) and a mask: True where it is close enough to remove the row."""
    matches = pd.DataFrame(index=rows.index, columns=list(MATCH_COLUMNS))
    if not decontamination.suite:
        log.warning("decontamination: no eval files configured (%s.suite); skipped", key)
        return matches, np.zeros(len(rows), dtype=bool)
    missing = [c for c in decontamination.columns if c not in rows.columns]
    if missing:
        raise UserError(
            f"{key}.columns {missing} are not columns of the rows; valid: {', '.join(map(str, rows.columns))}"
        )
    reference = eval_questions(decontamination, key)
    best, nearest, mask = nearest_questions(rows, reference, decontamination)
    hit = nearest >= 0
    matches.loc[hit, "overlap_score"] = best[hit].round(4)
    matches.loc[hit, "overlap_source"] = [reference[i]["source"] for i in nearest[hit]]
    matches.loc[hit, "overlap_id"] = [reference[i]["id"] for i in nearest[hit]]
    log.info(
        "decontamination: %d of %d rows match one of %d eval questions (%s of %s: %s)",
        int(mask.sum()),
        len(rows),
        len(reference),
        decontamination.method.value,
        ", ".join(decontamination.columns),
        rule(decontamination),
    )
    return matches.astype({"overlap_score": float}), mask


def nearest_questions(
    rows: pd.DataFrame, reference: list[dict], decontamination: DecontaminationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best score, index of the nearest of `reference`'s questions or -1, whether it is close enough to
    count as a restatement) for each row, over the compared columns."""
    questions = [row["question"] for row in reference]
    best = np.zeros(len(rows))
    nearest = np.full(len(rows), -1)
    for column in decontamination.columns:
        texts = rows[column].fillna("").astype(str).tolist()
        if decontamination.method == DecontaminationMethod.tfidf:
            scores, found = tfidf_scores(texts, questions)
        else:
            scores, found = ngram_scores(texts, questions, decontamination.ngram)
        better = scores > best
        best[better], nearest[better] = scores[better], found[better]
    if decontamination.method == DecontaminationMethod.tfidf:
        return best, nearest, best >= decontamination.threshold
    return best, nearest, (best >= decontamination.ngram_share) & (best > 0)


def rule(decontamination: DecontaminationConfig) -> str:
    """The rule that counts a row as restating a question, as text (`cosine >= 0.65`)."""
    if decontamination.method == DecontaminationMethod.tfidf:
        return f"cosine >= {decontamination.threshold:g}"
    share = decontamination.ngram_share
    return f"{decontamination.ngram}-gram share >= {share:g}" if share else "any shared n-gram"


def restating_rows(rows: pd.DataFrame, questions: list[dict], decontamination: DecontaminationConfig) -> dict:
    """{source: rows} how many of `rows` restate a question of each source of `questions` (eval rows), by
    the decontamination rule; each source compared on its own, as if it were the whole suite."""
    by_source: dict[str, list[dict]] = {}
    for question in questions:
        by_source.setdefault(question["source"], []).append(question)
    return {
        source: int(nearest_questions(rows, reference, decontamination)[2].sum())
        for source, reference in by_source.items()
    }
