"""stage=report: the registry as tables, plots, one HTML page and a stage status view.

Writes under `report.out_dir` (default `<root>/report/`): results.md, results.csv, one PNG per plot
and index.html, and prints the tables, each experiment's provenance and the status of every stage to
the terminal. With `report.baseline=<experiment>` it also compares every other chosen experiment with
the baseline on the questions both answered (meds1.report.paired; paired.csv), reading their eval
predictions. An RL experiment is compared with the model it started from the same way, when that model's
eval is in the registry, and its reward curve is drawn (meds1.report.rl). Compared experiments whose recorded
provenance differs get a warning (log and results.md).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from meds1.config.schema import Config
from meds1.errors import MissingInputError
from meds1.report import baselines, outputs, provenance, rl, status, tables
from meds1.report import experiments as registry_view
from meds1.report.comparison import compare_with_baseline
from meds1.store.registry import registry_path

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    report = cfg.report
    root, registry_file = Path(cfg.paths.root), registry_path(cfg)
    data = registry_view.load_registry(registry_file)
    known = set(data["experiments"]) | status.slugs_on_disk(root)
    if not known:
        raise MissingInputError(
            f"nothing to report under {root}: no results.json and no experiment directories; "
            "run an experiment first, e.g. `python run.py`"
        )
    slugs = registry_view.choose(known, registry_view.names(report.experiments))
    chosen = registry_view.experiments(data, slugs, report.group_by)
    registry_view.check_group_by(report.group_by, dataclasses.asdict(cfg), chosen)
    chosen = registry_view.with_sources(chosen, list(report.sources))

    rows = tables.source_results(chosen)
    pivots = tables.pivots(rows, report.group_by)
    pivots += [trace] if (trace := tables.trace_pivot(chosen)) else []
    pivots += [orders] if (orders := tables.permutation_pivot(chosen)) else []
    published, unmatched = baselines.pivots(list(report.baselines), chosen)  # report.baselines
    pivots += published
    for warning in unmatched:
        log.warning("report: %s", warning)
    comparison = (
        compare_with_baseline(
            report.baseline, data, chosen, root, report.group_by, list(report.sources), report.adjust
        )
        if report.baseline
        else None
    )
    compared = comparison.experiments if comparison else [e for e in chosen if e.metrics]
    warnings = provenance.differences(compared) + provenance.suite_differences(compared)
    for warning in warnings:
        log.warning("report: provenance of compared experiments: %s", warning)
    skipped, overlap = tables.skipped_pivot(chosen), tables.overlap_pivot(chosen)
    sections = [comparison.pivot] if comparison else []
    if started := rl.start_comparison(data, chosen, root, report.group_by, report.adjust):
        sections.append(started)  # each RL model against the model it started from
    sections += [overlap] if overlap else []
    sections += [skipped] if skipped else []
    stage_status = status.statuses(root, data, slugs) if report.status else None
    outputs.show(pivots if rows else [], sections, chosen, stage_status, root)

    if outputs.has_provenance(chosen):
        sections.append(tables.provenance_pivot(chosen))
    out = Path(report.out_dir).expanduser().resolve()
    written = outputs.write_outputs(
        report, out, registry_file, chosen, rows, [*pivots, *sections], stage_status, comparison, warnings
    )
    if written:
        log.info("report: wrote %s", ", ".join(str(path) for path in written))
    return {"experiments": len(chosen), "files": [str(path) for path in written]}
