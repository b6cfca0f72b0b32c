"""Paired comparisons: each experiment against a baseline, on the questions both of them answered.

The unit is the question. Strict correctness (`correct`) comes from each arm's eval
predictions.jsonl, keyed by the question's stable `id` and its `run`; a question counts when both
arms answered it, and with `eval.repeats` runs are paired by run index (only the runs both arms
have for that question). Per question, d = the experiment's mean correctness over those runs minus
the baseline's (with one run: -1, 0 or +1). Then, per source and overall:
- difference: the mean of d, i.e. the experiment's accuracy minus the baseline's on those questions;
- 95% CI: a paired percentile bootstrap resampling question ids, one resample for both arms (so a
  resample of d), seeded (`meds1.evaluation.scoring.bootstrap_ci`);
- p: McNemar's exact test, a two-sided exact binomial(1/2) test of b (questions where the baseline
  is better, d < 0) against c (the experiment is better, d > 0). With several runs this is the sign
  test on d, which is McNemar's test when there is one run; ties (d = 0) drop out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meds1.evaluation.scoring import bootstrap_ci

OVERALL = "overall"

Answers = dict[str, tuple[str, dict[int, bool]]]  # question id -> (source, {run: correct})


@dataclass
class Paired:
    experiment: str
    baseline: str
    source: str  # an eval source, or "overall"
    n: int  # questions both arms answered
    runs: int  # runs paired by index (the most any question has)
    unpaired: int  # questions only one of the two arms answered (left out)
    baseline_accuracy: float
    accuracy: float
    difference: float  # accuracy - baseline_accuracy on the n questions
    ci_low: float
    ci_high: float
    baseline_better: int  # McNemar's b
    experiment_better: int  # McNemar's c
    p_value: float
    p_adjusted: float | None = None  # over all the report's paired rows (meds1.report.multiplicity)
    mde: float | None = None  # minimum detectable effect, a share (power 0.8, alpha 0.05)
    within_noise: bool | None = None  # |difference| < mde


def read_answers(path: Path) -> Answers:
    """Each question's source and strict correctness per run; the file is only read, never repaired."""
    answers: Answers = {}
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
                qid, run, source = str(row["id"]), int(row.get("run", 0)), str(row["source"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by an interruption
            answers.setdefault(qid, (source, {}))[1][run] = bool(row.get("correct"))
    return answers


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact p-value of b vs c discordant pairs under binomial(b + c, 1/2); 1 when none."""
    n = b + c
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); C(n, k) = C(n, k - 1) * (n - k + 1) / k, exact in integers
    for k in range(1, min(b, c) + 1):
        term = term * (n - k + 1) // k
        tail += term
    return min(1.0, 2 * tail / 2**n)


def summarize(
    experiment: str, baseline: str, source: str, pairs: list[tuple[float, float, int]], unpaired: int
):
    """One row from (baseline mean, experiment mean, runs) per common question."""
    base = np.array([b for b, _, _ in pairs])
    other = np.array([o for _, o, _ in pairs])
    d = other - base
    low, high = bootstrap_ci(d)
    b, c = int((d < 0).sum()), int((d > 0).sum())
    return Paired(
        experiment,
        baseline,
        source,
        len(pairs),
        max(runs for _, _, runs in pairs),
        unpaired,
        float(base.mean()),
        float(other.mean()),
        float(d.mean()),
        low,
        high,
        b,
        c,
        mcnemar_exact(b, c),
    )


def compare(experiment: str, answers: Answers, baseline: str, baseline_answers: Answers) -> list[Paired]:
    """Per source (sorted), then overall; [] when the two arms share no question (and run)."""
    pairs: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    unpaired: dict[str, int] = defaultdict(int)
    for qid in sorted(answers.keys() | baseline_answers.keys()):  # a fixed order: reproducible sums
        source, base_runs = baseline_answers.get(qid) or (answers[qid][0], {})
        other_runs = answers[qid][1] if qid in answers else {}
        runs = base_runs.keys() & other_runs.keys()
        if not runs:
            unpaired[source] += 1
            continue
        base = sum(base_runs[r] for r in runs) / len(runs)
        pairs[source].append((base, sum(other_runs[r] for r in runs) / len(runs), len(runs)))
    rows = [
        summarize(experiment, baseline, source, pairs[source], unpaired[source]) for source in sorted(pairs)
    ]
    if rows:
        everything = [pair for source in sorted(pairs) for pair in pairs[source]]
        rows.append(summarize(experiment, baseline, OVERALL, everything, sum(unpaired.values())))
    return rows
