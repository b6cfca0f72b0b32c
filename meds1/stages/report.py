"""stage=report: the registry as tables, plots, one HTML page and a stage status view.

Writes under `report.out_dir` (default `<root>/report/`): results.md, results.csv, one PNG per plot
and index.html, and prints the tables, each experiment's provenance and the status of every stage to
the terminal. With `report.baseline=<experiment>` it also compares every other chosen experiment with
the baseline on the questions both answered (meds1.report.paired; paired.csv), reading their eval
predictions; without a baseline no predictions file is read. Compared experiments whose recorded
provenance differs get a warning (log and results.md).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path

from rich.console import Console

from meds1.config.schema import Config, ReportConfig
from meds1.errors import MissingInputError, UserError
from meds1.report import baselines, html, multiplicity, paired, plots, provenance, status, tables
from meds1.report import experiments as registry_view
from meds1.store.registry import registry_path

log = logging.getLogger(__name__)

PAIRED_CSV = "paired.csv"
LOG_WIDTH = 160  # columns of the tables when stdout is a log file or a pipe, not a terminal


def check_group_by(cfg: Config, chosen: list[registry_view.Experiment]) -> None:
    """A key of this config, or one that some chosen experiment's recorded config has."""
    group_by = cfg.report.group_by
    configs = [dataclasses.asdict(cfg), *(e.config for e in chosen)]
    if all(registry_view.config_value(config, group_by) is None for config in configs):
        raise UserError(
            f"report.group_by: unknown config key {group_by!r} (not in this config nor a chosen experiment)"
        )


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
    check_group_by(cfg, chosen)
    chosen = registry_view.with_sources(chosen, list(report.sources))

    rows = tables.source_results(chosen)
    pivots = tables.pivots(rows, report.group_by)
    pivots += [trace] if (trace := tables.trace_pivot(chosen)) else []
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
    recorded = any(any(e.provenance.values()) for e in chosen)  # older registries have no provenance
    skipped = tables.skipped_pivot(chosen)
    sections = [comparison.pivot] if comparison else []
    sections += [skipped] if skipped else []
    sections += [tables.provenance_pivot(chosen)] if recorded else []
    stage_status = status.statuses(root, data, slugs) if report.status else None
    console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
    for pivot in pivots if rows else ():
        console.print(tables.to_rich(pivot))
    if not rows:
        console.print("No chosen experiment has eval results yet.")
    if comparison:
        console.print(tables.to_rich(comparison.pivot))
    if skipped:
        console.print(tables.to_rich(skipped))
    if recorded:
        console.print("Provenance", style="italic")
        for exp in chosen:
            console.print(provenance.compact(exp), markup=False, highlight=False, soft_wrap=True)
    if stage_status is not None:
        console.print(status.to_rich(stage_status, root))

    out = Path(report.out_dir).expanduser().resolve()
    written = write_outputs(
        report, out, registry_file, chosen, rows, [*pivots, *sections], stage_status, comparison, warnings
    )
    if written:
        log.info("report: wrote %s", ", ".join(str(path) for path in written))
    return {"experiments": len(chosen), "files": [str(path) for path in written]}


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
    multiplicity.adjust(rows, adjust)
    decodings = {exp.slug: tables.decoding(exp) for exp in [*compared, *unmatched]}
    pivot = tables.paired_pivot(rows, name, decodings, [exp.slug for exp in unmatched], adjust)
    return Comparison(rows, compared, decodings, pivot)


def write_outputs(
    report: ReportConfig,
    out: Path,
    registry_file: Path,
    chosen: list[registry_view.Experiment],
    rows: list[tables.SourceResult],
    pivots: list[tables.Pivot],
    stage_status: list[status.StageStatus] | None,
    comparison: Comparison | None,
    warnings: list[str],
) -> list[Path]:
    outputs = set(report.outputs)
    if not outputs:
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "markdown" in outputs:
        (out / "results.md").write_text(tables.markdown(pivots, warnings))
        written.append(out / "results.md")
    if "csv" in outputs:
        tables.write_csv(rows, out / "results.csv")
        written.append(out / "results.csv")
        if comparison:
            tables.write_paired_csv(comparison.rows, comparison.decodings, out / PAIRED_CSV)
            written.append(out / PAIRED_CSV)
        else:  # from an earlier report with a baseline
            (out / PAIRED_CSV).unlink(missing_ok=True)
    charts = plots.charts(chosen, report.metric) if outputs & {"plots", "html"} else []
    if "plots" in outputs:
        for chart in charts:
            (out / f"{chart.name}.png").write_bytes(chart.png)
            written.append(out / f"{chart.name}.png")
        for stale in set(plots.CHART_NAMES) - {chart.name for chart in charts}:  # from an earlier report
            (out / f"{stale}.png").unlink(missing_ok=True)
    if "html" in outputs:
        generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
        (out / "index.html").write_text(
            html.render(pivots, charts, stage_status, str(registry_file), generated, warnings)
        )
        written.append(out / "index.html")
    return written
