"""Every chosen experiment against a baseline, read from their eval predictions (`report.baseline`).

The statistics are meds1.report.paired's; this module finds the baseline and each experiment's
predictions.jsonl, keeps the sources asked for, and lays the result out as one table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from meds1.errors import MissingInputError, UserError
from meds1.report import experiments as registry_view
from meds1.report import multiplicity, paired, tables

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    rows: list[paired.Paired]
    experiments: list[registry_view.Experiment]  # the baseline, then those compared with it
    decodings: dict[str, str]  # slug -> decoding label
    pivot: tables.Pivot


def compare_with_baseline(
    name: str,
    data: dict,
    chosen: list[registry_view.Experiment],
    root: Path,
    group_by: str,
    sources: list[str] = (),
    adjust: str = "holm",
) -> Comparison:
    """Every chosen experiment with eval results against the baseline `name` (see meds1.report.paired),
    per source (those matching `sources`, when given) and overall."""
    evaluated = sorted(
        slug for slug, e in data["experiments"].items() if (e.get("results") or {}).get("eval")
    )
    name = registry_view.baseline_slug(name, set(evaluated))
    if name not in evaluated:
        raise UserError(
            f"report.baseline: {name!r} is not an experiment with eval results; "
            f"valid: {', '.join(evaluated) or 'none (run an eval first)'}"
        )
    baseline = next((e for e in chosen if e.slug == name), None) or registry_view.experiment(
        data, name, group_by
    )
    file = registry_view.predictions_file(baseline, root)
    if file is None:
        raise MissingInputError(
            f"report.baseline: no predictions.jsonl for {name} (recorded: {baseline.predictions}; "
            f"nor under {root / name / 'eval'}); rerun its eval"
        )
    baseline_answers = paired.read_answers(file)
    rows, compared, unmatched = [], [baseline], []
    for exp in chosen:
        if exp.slug == name or not exp.metrics:
            continue
        file = registry_view.predictions_file(exp, root)
        found = paired.compare(exp.slug, paired.read_answers(file), name, baseline_answers) if file else []
        if sources:
            found = [
                r
                for r in found
                if r.source == tables.OVERALL or any(fnmatchcase(r.source, p) for p in sources)
            ]
        if file is None:
            log.warning("report: no predictions.jsonl for %s; it is not compared with the baseline", exp.slug)
        rows += found
        (compared if found else unmatched).append(exp)
    multiplicity.adjust(rows, adjust)  # report.adjust, over every row of the paired table
    decodings = {exp.slug: tables.decoding(exp) for exp in [*compared, *unmatched]}
    pivot = tables.paired_pivot(rows, name, decodings, [exp.slug for exp in unmatched], adjust)
    return Comparison(rows, compared, decodings, pivot)
