"""Eval questions the training data restates, for the benchmarks that data was not checked against.

Curation removes training rows that restate a question of its own decontamination suite
(`curation.decontamination.suite`, what the experiment was curated against; meds1/curation/
decontamination.py), and RL the questions that restate one of `rl.data.decontamination.suite` (by default
the curation's). Evaluating the trained model on another benchmark needs no new curation or RL: the eval
counts, per source the data was not checked against, how many training rows (`training_overlap`) and RL
questions (`rl_overlap`) restate one of its questions, by the same rule (method, threshold, compared
columns), and records it in metrics.json `overlap` and `rl_overlap`, so a contaminated number is visible
in the report instead of prevented by a retrain. A source counts as checked when every one of its questions
was in the decontamination suite (the same content ids).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pandas as pd

from meds1.config.schema import Config, DecontaminationConfig
from meds1.curation.decontamination import eval_questions, restating_rows, rule
from meds1.store.workspace import require_complete

log = logging.getLogger(__name__)

RL_QUESTIONS = "questions.jsonl"  # the questions an RL stage trained on (rl/), as decontamination reads them


def training_overlap(cfg: Config, questions: list[dict]) -> dict:
    """{training_rows, method, rule, checked: [sources], sources: {source: {questions, training_rows}}}
    for an eval of the model this experiment trained on the `questions` (eval rows)."""

    def curated(columns: list[str]) -> pd.DataFrame:
        path = require_complete(cfg, "curate", "curated dataset") / "curated.parquet"
        return pd.read_parquet(path, columns=columns)

    return overlap(cfg, cfg.curation.decontamination, questions, curated, "training rows")


def rl_overlap(cfg: Config, questions: list[dict]) -> dict:
    """As `training_overlap`, for the questions the experiment's RL stage trained on (`training_rows`: how
    many RL questions restate one of a source's questions)."""

    def trained_on(columns: list[str]) -> pd.DataFrame:
        path = require_complete(cfg, "rl", "RL model") / RL_QUESTIONS
        rows = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
        return rows.reindex(columns=columns)

    return overlap(cfg, cfg.rl.data.decontamination, questions, trained_on, "RL questions")


def overlap(
    cfg: Config,
    decontamination: DecontaminationConfig,
    questions: list[dict],
    read_rows: Callable[[list[str]], pd.DataFrame],
    what: str,
) -> dict:
    """The overlap record of the training data `read_rows(columns)` (read only when some source of the
    eval `questions` was not in `decontamination`'s suite); `what` names that data in the log."""
    by_source: dict[str, set[str]] = {}
    for question in questions:
        by_source.setdefault(question["source"], set()).add(question["id"])
    checked: set[str] = set()
    if decontamination.enabled and decontamination.suite:
        same_entries = list(decontamination.suite) == list(cfg.eval.suite)
        known = set() if same_entries else {row["id"] for row in eval_questions(decontamination)}
        checked = {source for source, ids in by_source.items() if same_entries or ids <= known}
    unchecked = [q for q in questions if q["source"] not in checked]
    rows = read_rows(list(decontamination.columns)) if unchecked else pd.DataFrame()
    counts = restating_rows(rows, unchecked, decontamination) if unchecked else {}
    for source, count in counts.items():
        log.info(
            "eval: %s was not checked against the %s: %d of %d restate its questions (%s)",
            source,
            what,
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
