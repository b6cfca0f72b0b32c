"""Eval questions the training rows restate, for the benchmarks the curation was not checked against.

Curation removes training rows that restate a question of its own decontamination suite
(`curation.decontamination.suite`, what the experiment was curated against; meds1/curation/
decontamination.py). Evaluating the trained model on another benchmark needs no new curation: the eval
counts, per source its rows were not checked against, how many training rows restate one of its questions,
by the same rule (method, threshold, compared columns), and records it in metrics.json `overlap`, so a
contaminated number is visible in the report instead of prevented by a retrain. A source counts as
checked when every one of its questions was in the decontamination suite (the same content ids).
"""

from __future__ import annotations

import logging

import pandas as pd

from meds1.config.schema import Config
from meds1.curation.decontamination import eval_questions, restating_rows, rule
from meds1.store.workspace import require_complete

log = logging.getLogger(__name__)


def training_overlap(cfg: Config, questions: list[dict]) -> dict:
    """{training_rows, method, rule, checked: [sources], sources: {source: {questions, training_rows}}}
    for an eval of the model this experiment trained on the `questions` (eval rows)."""
    decontamination = cfg.curation.decontamination
    by_source: dict[str, set[str]] = {}
    for question in questions:
        by_source.setdefault(question["source"], set()).add(question["id"])
    checked: set[str] = set()
    if decontamination.enabled and decontamination.suite:
        same_entries = list(decontamination.suite) == list(cfg.eval.suite)
        known = set() if same_entries else {row["id"] for row in eval_questions(decontamination)}
        checked = {source for source, ids in by_source.items() if same_entries or ids <= known}
    unchecked = [q for q in questions if q["source"] not in checked]
    rows = pd.DataFrame()
    if unchecked:
        curated = require_complete(cfg, "curate", "curated dataset") / "curated.parquet"
        rows = pd.read_parquet(curated, columns=list(decontamination.columns))
    counts = restating_rows(rows, unchecked, decontamination) if unchecked else {}
    for source, count in counts.items():
        log.info(
            "eval: %s was not checked against the training rows: %d of %d restate its questions (%s)",
            source,
            count,
            len(rows),
            rule(decontamination),
        )
    return {
        "training_rows": len(rows) if unchecked else None,
        "method": decontamination.method.value,
        "rule": rule(decontamination),
        "checked": sorted(checked),
        "sources": {
            source: {"questions": len(by_source[source]), "training_rows": count}
            for source, count in sorted(counts.items())
        },
    }
