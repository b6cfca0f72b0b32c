"""What `stage=report` shows and writes: the tables on the terminal; results.md, results.csv,
paired.csv, one PNG per plot and index.html under `report.out_dir`.

A file the chosen outputs no longer hold (a plot without data, paired.csv without a baseline) is
removed, so a report directory never mixes this report with an earlier one.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from meds1.config.schema import ReportConfig
from meds1.report import html, plots, provenance, status, tables
from meds1.report.comparison import Comparison
from meds1.report.experiments import Experiment

PAIRED_CSV = "paired.csv"
LOG_WIDTH = 160  # columns of the tables when stdout is a log file or a pipe, not a terminal


def has_provenance(chosen: list[Experiment]) -> bool:
    return any(any(e.provenance.values()) for e in chosen)  # older registries have no provenance


def show(
    pivots: list[tables.Pivot],
    sections: list[tables.Pivot],
    chosen: list[Experiment],
    stage_status: list[status.StageStatus] | None,
    root: Path,
) -> None:
    """Print the result tables (or that there are none), the other sections (comparison, skipped rows),
    each experiment's provenance when any was recorded, and the stage status."""
    console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
    for pivot in pivots:
        console.print(tables.to_rich(pivot))
    if not pivots:
        console.print("No chosen experiment has eval results yet.")
    for section in sections:
        console.print(tables.to_rich(section))
    if has_provenance(chosen):
        console.print("Provenance", style="italic")
        for exp in chosen:
            console.print(provenance.compact(exp), markup=False, highlight=False, soft_wrap=True)
    if stage_status is not None:
        console.print(status.to_rich(stage_status, root))


def write_outputs(
    report: ReportConfig,
    out: Path,
    registry_file: Path,
    chosen: list[Experiment],
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
