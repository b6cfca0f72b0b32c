"""Statistics for a grid of comparisons: multiplicity-adjusted p-values and the smallest detectable effect.

A sweep or the trace study compares several arms with a baseline on several benchmarks: dozens of
paired tests, of which some will reach p < 0.05 by chance alone. Every p-value of the report's paired
table (each experiment x each source, and overall) is adjusted as one family: Holm's step-down
(`report.adjust=holm`, the default: controls the chance of any false positive) or Benjamini-Hochberg
(`report.adjust=bh`: controls the expected share of false positives among the differences called
significant). Beside each difference stands the minimum detectable effect: the smallest true difference
a paired comparison of n questions at the two arms' accuracies finds with power 0.8 at alpha 0.05
(two-sided), (z_0.975 + z_0.8) * sqrt((p_b (1 - p_b) + p_e (1 - p_e)) / n), which treats the arms'
answers as independent, so it is an upper bound when answers are correlated (they usually are). A
difference smaller than it is marked as within noise: the benchmark is too small to tell.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from meds1.report.paired import Paired

ALPHA = 0.05
POWER = 0.8


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i], reverse=True)
    adjusted, running = [0.0] * len(p_values), 1.0
    for position, i in enumerate(order):
        rank = len(p_values) - position
        running = min(running, p_values[i] * len(p_values) / rank)
        adjusted[i] = running
    return adjusted


def minimum_detectable_effect(n: int, p_baseline: float, p_experiment: float) -> float:
    """The smallest difference in accuracy (a share) n questions detect with power 0.8 at alpha 0.05."""
    z = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)
    variance = p_baseline * (1 - p_baseline) + p_experiment * (1 - p_experiment)
    return z * math.sqrt(variance / n) if n else math.inf


def adjust(rows: list[Paired], method: str) -> None:
    """Set every row's `p_adjusted` (one family: all rows), `mde` and `within_noise`, in place."""
    adjusted = (holm if method == "holm" else benjamini_hochberg)([row.p_value for row in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row.p_adjusted = p
        row.mde = minimum_detectable_effect(row.n, row.baseline_accuracy, row.accuracy)
        row.within_noise = abs(row.difference) < row.mde
