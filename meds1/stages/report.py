"""stage=report: the registry as tables, plots, one HTML page and a stage status view.

Writes under `report.out_dir` (default `<root>/report/`): results.md, results.csv, one PNG per plot
and index.html, and prints the tables and the status of every stage to the terminal.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from meds1.config import Config, ReportConfig
from meds1.errors import MissingInputError, UserError
from meds1.paths import registry_path
from meds1.report import experiments as registry_view
from meds1.report import html, plots, status, tables

log = logging.getLogger(__name__)

OUTPUTS = ("markdown", "csv", "plots", "html")
METRICS = ("accuracy", "accuracy_huatuo")
LOG_WIDTH = 160  # columns of the tables when stdout is a log file or a pipe, not a terminal


def check_options(report: ReportConfig) -> None:
    unknown = [output for output in report.outputs if output not in OUTPUTS]
    if unknown:
        raise UserError(f"unknown report.outputs {', '.join(unknown)}; valid: {', '.join(OUTPUTS)}")
    if report.metric not in METRICS:
        raise UserError(f"unknown report.metric {report.metric!r}; valid: {', '.join(METRICS)}")


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
    check_options(report)
    root, registry_file = Path(cfg.paths.root), registry_path(cfg)
    data = registry_view.load_registry(registry_file)
    known = set(data["experiments"]) | status.slugs_on_disk(root)
    if not known:
        raise MissingInputError(
            f"nothing to report under {root}: no results.json and no experiment directories; "
            "run an experiment first, e.g. `python run.py`"
        )
    slugs = registry_view.choose(known, list(report.experiments))
    chosen = registry_view.experiments(data, slugs, report.group_by)
    check_group_by(cfg, chosen)

    rows = tables.source_results(chosen)
    pivots = tables.pivots(rows, report.group_by)
    stage_status = status.statuses(root, data, slugs) if report.status else None
    console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
    for pivot in pivots if rows else ():
        console.print(tables.to_rich(pivot))
    if not rows:
        console.print("No chosen experiment has eval results yet.")
    if stage_status is not None:
        console.print(status.to_rich(stage_status, root))

    out = Path(report.out_dir).expanduser().resolve()
    written = write_outputs(report, out, registry_file, chosen, rows, pivots, stage_status)
    if written:
        log.info("report: wrote %s", ", ".join(str(path) for path in written))
    return {"experiments": len(chosen), "files": [str(path) for path in written]}


def write_outputs(
    report: ReportConfig,
    out: Path,
    registry_file: Path,
    chosen: list[registry_view.Experiment],
    rows: list[tables.SourceResult],
    pivots: list[tables.Pivot],
    stage_status: list[status.StageStatus] | None,
) -> list[Path]:
    outputs = set(report.outputs)
    if not outputs:
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "markdown" in outputs:
        (out / "results.md").write_text(tables.markdown(pivots))
        written.append(out / "results.md")
    if "csv" in outputs:
        tables.write_csv(rows, out / "results.csv")
        written.append(out / "results.csv")
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
            html.render(pivots, charts, stage_status, str(registry_file), generated)
        )
        written.append(out / "index.html")
    return written
