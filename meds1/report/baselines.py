"""Published results as data: the numbers researchers put their own beside, one file per source paper.

Each `meds1/data/baselines/<name>.csv` holds `model, benchmark, accuracy, harness, source`: accuracy in
percent as printed, `benchmark` a meds1 eval source name (`overall`: the paper's own average over its
own benchmarks), `harness` the scorer that produced it (meds1.evaluation.harnesses), `source` the paper,
table and code commit. Shipped:

- `m1`: m1's Table 1 (arXiv 2504.00869; UCSC-VLAA/m1@c65dfc6 harness): 25 models on 10 benchmarks.
- `medreason`: MedReason's README table (UCSC-VLAA/MedReason@02b51f1 assets/tab3.png): 11 models on 6.

`report.baselines=[m1]` shows them beside the chosen experiments under the same harness's score
(`accuracy_m1` for m1's numbers): published, so neither paired nor with an interval. A benchmark that
matches none of the chosen experiments' sources is left out with a warning naming both.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from meds1.config.rules import BASELINES_DIR as DIRECTORY
from meds1.errors import UserError
from meds1.evaluation import harnesses
from meds1.report.experiments import Experiment
from meds1.report.tables import OVERALL, Pivot

FIELDS = ("model", "benchmark", "accuracy", "harness", "source")


@dataclass(frozen=True)
class Published:
    model: str
    benchmark: str
    accuracy: float  # a share, 0-1, as meds1 stores accuracies
    harness: str
    source: str


def names() -> list[str]:
    return sorted(path.stem for path in DIRECTORY.glob("*.csv"))


def load(name: str) -> list[Published]:
    """The rows of baseline `name`; an unknown name or a malformed file is a one-line error."""
    file = DIRECTORY / f"{name}.csv"
    if not file.is_file():
        raise UserError(f"report.baselines: unknown baseline {name!r}; valid: {', '.join(names())}")
    rows = []
    with file.open(newline="") as f:
        for number, row in enumerate(csv.DictReader(f), start=2):
            if set(row) != set(FIELDS) or row["harness"] not in harnesses.HARNESSES:
                raise UserError(
                    f"{file}:{number}: a baseline row needs {', '.join(FIELDS)} with harness one of "
                    f"{', '.join(harnesses.HARNESSES)}"
                )
            rows.append(
                Published(
                    row["model"],
                    row["benchmark"],
                    float(row["accuracy"]) / 100,
                    row["harness"],
                    row["source"],
                )
            )
    return rows


def pivots(chosen: list[str], experiments: list[Experiment]) -> tuple[list[Pivot], list[str]]:
    """One table per baseline: the experiments' scores under its harness, then its published rows, on
    the experiments' sources; and the warnings for benchmarks matching no source."""
    evaluated = [exp for exp in experiments if exp.metrics]
    sources = sorted({s for exp in evaluated for s in exp.metrics.get("per_source") or {}})
    tables, warnings = [], []
    for name in chosen:
        published = load(name)
        unmatched = sorted({row.benchmark for row in published} - {*sources, OVERALL})
        warning = (
            f"baseline {name}: benchmark(s) {', '.join(unmatched)} match none of the chosen experiments' "
            f"sources ({', '.join(sources) or 'none'}); left out"
        )
        warnings += [warning] if unmatched else []
        for harness in sorted({row.harness for row in published}):
            table = _pivot(name, harness, [r for r in published if r.harness == harness], evaluated, sources)
            table.note += f". {warning}" if unmatched else ""
            tables.append(table)
    return tables, warnings


def _pivot(
    name: str, harness: str, published: list[Published], experiments: list[Experiment], sources: list[str]
):
    metric = harnesses.metric(harness)
    columns = [*sources, OVERALL]
    body = []
    for exp in experiments:
        summaries = {**(exp.metrics.get("per_source") or {}), OVERALL: exp.metrics.get(OVERALL) or {}}
        body.append([exp.slug, "this run", *(_pct((summaries.get(c) or {}).get(metric)) for c in columns)])
    scores: dict[str, dict[str, float]] = {}
    for row in published:
        scores.setdefault(row.model, {})[row.benchmark] = row.accuracy
    for model, found in scores.items():
        body.append([model, "published", *(_pct(found.get(c)) for c in columns)])
    label = harnesses.LABELS[harness]
    note = (
        f"published: {published[0].source}, as printed (not paired, no interval); this run: the same "
        f"harness ({label}) on this run's answers. overall: each row's own average, the paper's over its own "
        "benchmarks, so comparable only where the benchmarks match"
    )
    return Pivot(f"Published baselines: {name} ({label} harness), %", ["model", "kind", *columns], body, note)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
