"""Accuracy per source and overall, with the share of unparseable answers."""

from __future__ import annotations

from collections import defaultdict


def score(predictions: list[dict]) -> dict:
    """Metrics from prediction rows carrying `source`, `extracted` (letter or None) and `correct`.

    Empty or unparseable answers count as wrong; every question stays in the denominator.
    """
    by_source: dict[str, list[dict]] = defaultdict(list)
    for row in predictions:
        by_source[row["source"]].append(row)
    per_source = {source: _summary(rows) for source, rows in sorted(by_source.items())}
    return {"overall": _summary(predictions), "per_source": per_source}


def _summary(rows: list[dict]) -> dict:
    n = len(rows)
    if n == 0:
        return {"n": 0, "accuracy": None, "unparseable": None}
    correct = sum(bool(r["correct"]) for r in rows)
    unparseable = sum(r["extracted"] is None for r in rows)
    return {"n": n, "accuracy": correct / n, "unparseable": unparseable / n}
