"""Paired comparisons: each experiment against a baseline, on the questions both of them answered.

The unit is the question. Strict correctness (`correct`) comes from each arm's eval
predictions.jsonl, keyed by the question's stable `id` and its `run` (the suite's own option order:
answers in other orders, `eval.shuffle_options`, are left out); a question counts when both
arms answered it, and with `eval.repeats` runs are paired by run index (only the runs both arms
have for that question). Per question, d = the experiment's mean correctness over those runs minus
the baseline's (with one run: -1, 0 or +1). Then, per source and overall:
- difference: the mean of d, i.e. the experiment's accuracy minus the baseline's on those questions;
- 95% CI: a hierarchical paired percentile bootstrap, seeded: each resample draws the questions with
  replacement, then each drawn question's paired runs with replacement (a run's two answers drawn
  together), as `eval.interval=hierarchical` resamples one arm's questions and runs
  (`hierarchical_paired_ci`). Seeds x questions: the spread between runs of a question widens the
  interval, where resampling only the per-question means would take them as exact. With one run per
  question it is exactly the paired bootstrap of d over question ids
  (`meds1.evaluation.scoring.bootstrap_ci`);
- p: McNemar's exact test, a two-sided exact binomial(1/2) test of b (questions where the baseline
  is better, d < 0) against c (the experiment is better, d > 0). With several runs this is the sign
  test on d, which is McNemar's test when there is one run; ties (d = 0) drop out.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from meds1.evaluation.scoring import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED

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
            if row.get("permutation"):
                continue  # asked in another option order (eval.shuffle_options): not the headline answer
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


class Pair(NamedTuple):
    """One question both arms answered, over the runs both have."""

    baseline: float  # mean correctness over those runs
    experiment: float
    runs: int
    baseline_only: int  # runs the baseline alone got right (d = -1 in that run)
    experiment_only: int  # runs the experiment alone got right (d = +1)


def hierarchical_paired_ci(pairs: list[Pair], samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """95% percentile interval of the mean paired difference, resampling questions, then each drawn
    question's runs (both arms' answers of a run together), seeded.

    A run's difference is -1, 0 or +1, so a question is described by its kind (runs, baseline-only,
    experiment-only) and questions of a kind are exchangeable: a resample draws how many questions of
    each kind it holds (a multinomial, as `bootstrap_ci` draws its levels), then each kind drawn k times
    redraws its k x runs runs at once (Multinomial(k x runs, its shares of -1, +1, 0): the sum of k
    independent redraws). The statistic is the mean over the drawn questions of their redrawn run means.
    With one run per question the second draw changes nothing and the kinds are bootstrap_ci's levels,
    in the same order, so the interval is bootstrap_ci's to the bit."""
    found = Counter((pair.runs, pair.baseline_only, pair.experiment_only) for pair in pairs)
    kinds = sorted(found, key=lambda kind: ((kind[2] - kind[1]) / kind[0], *kind))  # by d, as levels
    counts = np.array([found[kind] for kind in kinds])
    n = len(pairs)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = rng.multinomial(n, counts / n, size=samples)  # (samples, kinds): questions of each kind
    total = np.zeros(samples)
    for column, (runs, minus, plus) in enumerate(kinds):
        shares = np.array([minus, plus, runs - minus - plus]) / runs
        redrawn = rng.multinomial(drawn[:, column] * runs, shares)
        total += (redrawn[:, 1] - redrawn[:, 0]) / runs
    low, high = np.percentile(total / n, [2.5, 97.5])
    return [float(low), float(high)]


def summarize(experiment: str, baseline: str, source: str, pairs: list[Pair], unpaired: int) -> Paired:
    """One row from the questions both arms answered."""
    base = np.array([pair.baseline for pair in pairs])
    other = np.array([pair.experiment for pair in pairs])
    d = other - base
    low, high = hierarchical_paired_ci(pairs)
    b, c = int((d < 0).sum()), int((d > 0).sum())
    return Paired(
        experiment,
        baseline,
        source,
        len(pairs),
        max(pair.runs for pair in pairs),
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
    pairs: dict[str, list[Pair]] = defaultdict(list)
    unpaired: dict[str, int] = defaultdict(int)
    for qid in sorted(answers.keys() | baseline_answers.keys()):  # a fixed order: reproducible sums
        source, base_runs = baseline_answers.get(qid) or (answers[qid][0], {})
        other_runs = answers[qid][1] if qid in answers else {}
        runs = base_runs.keys() & other_runs.keys()
        if not runs:
            unpaired[source] += 1
            continue
        base = other = baseline_only = experiment_only = 0
        for run in runs:
            b, o = base_runs[run], other_runs[run]
            base, other = base + b, other + o
            baseline_only, experiment_only = baseline_only + (b and not o), experiment_only + (o and not b)
        count = len(runs)
        pairs[source].append(Pair(base / count, other / count, count, baseline_only, experiment_only))
    rows = [
        summarize(experiment, baseline, source, pairs[source], unpaired[source]) for source in sorted(pairs)
    ]
    if rows:
        everything = [pair for source in sorted(pairs) for pair in pairs[source]]
        rows.append(summarize(experiment, baseline, OVERALL, everything, sum(unpaired.values())))
    return rows
