"""Judge predictions and aggregate them per source and overall.

Every question stays in the denominator: under meds1's strict rule an empty, failed or unparseable
answer is wrong. Each summary holds `n` (questions), `accuracy` (strict: meds1's extractor),
`accuracy_huatuo`, `accuracy_medreason`, `accuracy_m1` and `accuracy_medsone` (the field's scorers, each
as its own code scores the same outputs, quirks included: meds1.evaluation.harnesses), `ci95` (a
percentile bootstrap interval of strict accuracy, resampling questions), `unparseable` (share of
answers the strict extractor could not read) and `mean_output_tokens`. With repeated runs (rows
carry `run`), accuracies are means over runs, the interval resamples questions with their
per-question mean over runs, and `accuracy_runs` / `accuracy_std` give the spread. `score`'s
`aggregate` and `interval` (eval.aggregate, eval.interval) select med-s1's majority rule and
hierarchical bootstrap instead.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import numpy as np

from meds1.evaluation import harnesses
from meds1.evaluation.extract import extract_answer
from meds1.evaluation.harnesses import METRICS, Marked, Scorer

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def judge(row: dict) -> dict:
    """`row` with `extracted` (letter or None) and `correct` set from its `output`."""
    extracted = extract_answer(row.get("output") or "", row["options"])
    return {**row, "extracted": extracted, "correct": extracted == str(row["answer_idx"]).upper()}


def score(predictions: list[dict], aggregate: str = "mean", interval: str = "bootstrap") -> dict:
    """{"overall": S, "per_source": {source: S}} from judged prediction rows (see module doc)."""
    scorer = Scorer()
    marked = [(row, scorer.marks(row)) for row in predictions]
    by_source: dict[str, list] = defaultdict(list)
    for row, marks in marked:
        by_source[row["source"]].append((row, marks))
    return {
        "overall": summarize(marked, aggregate, interval),
        "per_source": {
            source: summarize(rows, aggregate, interval) for source, rows in sorted(by_source.items())
        },
    }


def summarize(marked: Marked, aggregate: str = "mean", interval: str = "bootstrap") -> dict:
    """The summary S of judged rows, each paired with its `Marks` under the field's harnesses.

    A question's score is its mean correctness over its runs (`mean`), or med-s1's `majority`: 1 when it
    is right in at least half of them (ties count right; som-shahlab/med-s1@d15c393 eval/scorer.py:score).
    `interval`: `bootstrap` resamples question scores; `hierarchical` is med-s1's
    calculate_confidence_interval (questions, then runs within each; see `hierarchical_ci`)."""
    if not marked:
        return dict.fromkeys(("accuracy", *METRICS, "ci95", "unparseable", "mean_output_tokens"), None) | {
            "n": 0
        }
    rows = [row for row, _ in marked]
    runs: dict[int, list] = defaultdict(list)
    per_question: dict[str, list[bool]] = defaultdict(list)
    for position, (row, marks) in enumerate(marked):
        runs[int(row.get("run", 0))].append((row, marks))
        per_question[str(row.get("id", position))].append(bool(row["correct"]))
    accuracy_runs = [sum(bool(r["correct"]) for r, _ in run) / len(run) for _, run in sorted(runs.items())]
    uniform = len({len(marks) for marks in per_question.values()}) == 1  # every question has the same runs
    question_means = np.array([sum(marks) / len(marks) for marks in per_question.values()])
    scores = (question_means >= 0.5).astype(float) if aggregate == "majority" else question_means
    hierarchical = interval == "hierarchical"
    ci = hierarchical_ci(list(per_question.values())) if hierarchical else bootstrap_ci(scores)
    summary = {
        "n": len(per_question),
        "accuracy": (
            statistics.fmean(accuracy_runs) if aggregate == "mean" and uniform else float(scores.mean())
        ),
        **harnesses.accuracies(marked),
        "ci95": ci,
        "unparseable": sum(r["extracted"] is None for r in rows) / len(rows),
        "mean_output_tokens": statistics.fmean(float(r.get("output_tokens") or 0) for r in rows),
    }
    if len(runs) > 1 and uniform:
        summary["accuracy_runs"] = accuracy_runs
        summary["accuracy_huatuo_runs"] = [
            harnesses.per_run_better_match(run, "huatuo") for _, run in sorted(runs.items())
        ]
        summary["accuracy_std"] = statistics.stdev(accuracy_runs)
    return summary


def bootstrap_ci(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """95% percentile interval of the mean of `values`, resampled with a fixed seed.

    Per-question scores take few distinct values (0/1, or k+1 levels over k runs), so a resample is
    fully described by how many questions it draws at each level: a multinomial draw, which gives
    exactly the bootstrap distribution of the mean without drawing n indices per resample.
    """
    levels, counts = np.unique(values, return_counts=True)
    draws = np.random.default_rng(BOOTSTRAP_SEED).multinomial(len(values), counts / len(values), size=samples)
    low, high = np.percentile(draws @ levels / len(values), [2.5, 97.5])
    return [float(low), float(high)]


def hierarchical_ci(per_question: list[list[bool]], samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """med-s1's hierarchical bootstrap (eval/scorer.py:calculate_confidence_interval @d15c393), seeded:
    each resample draws the questions with replacement, then each drawn question's runs with replacement;
    its statistic is the mean over questions of their resampled run means (run accuracy, not majority).
    Redrawing r runs of which c are right gives Binomial(r, c/r) right, which is how it is drawn here."""
    runs = np.array([len(marks) for marks in per_question])
    right = np.array([sum(marks) for marks in per_question]) / runs
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = rng.integers(len(runs), size=(samples, len(runs)))
    means = rng.binomial(runs[drawn], right[drawn]) / runs[drawn]
    low, high = np.percentile(means.mean(axis=1), [2.5, 97.5])
    return [float(low), float(high)]
