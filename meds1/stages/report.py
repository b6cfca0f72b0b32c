"""stage=report: the registry as a table of experiments x eval sources."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from meds1 import registry
from meds1.config import Config
from meds1.paths import registry_path


def eval_rows(data: dict) -> tuple[list[str], list[tuple[str, dict]]]:
    """(sorted source names, [(slug, eval metrics)]) for every experiment with eval results."""
    rows = []
    sources: set[str] = set()
    for slug, entry in sorted(data.get("experiments", {}).items()):
        metrics = entry.get("results", {}).get("eval", {}).get("metrics")
        if metrics:
            rows.append((slug, metrics))
            sources.update(metrics["per_source"])
    return sorted(sources), rows


def build_table(data: dict) -> Table:
    sources, rows = eval_rows(data)
    table = Table(title="meds1 results: accuracy (unparseable share)")
    table.add_column("experiment", style="bold")
    for source in [*sources, "overall"]:
        table.add_column(source, justify="right")
    for slug, metrics in rows:
        cells = [_cell(metrics["per_source"].get(source)) for source in sources]
        table.add_row(slug, *cells, _cell(metrics["overall"]))
    return table


def _cell(summary: dict | None) -> str:
    if not summary or summary.get("accuracy") is None:
        return "-"
    return f"{100 * summary['accuracy']:.1f} ({100 * summary['unparseable']:.0f}%)"


def run(cfg: Config) -> dict:
    data = registry.load(registry_path(cfg))
    Console().print(build_table(data))
    return {"experiments": len(data.get("experiments", {}))}
