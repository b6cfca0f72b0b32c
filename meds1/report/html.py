"""index.html: the tables (with paired comparisons and provenance when there are any), provenance
warnings, plots and stage status on one self-contained page.

Everything is inline (CSS in a style element, plots as base64 PNG data URIs, no scripts, no fonts
or links to fetch), so the file can be opened offline or copied off a cluster as is.
"""

from __future__ import annotations

import base64
from html import escape

from meds1.report.plots import Chart
from meds1.report.status import StageStatus
from meds1.report.tables import Pivot

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1rem 0 2rem; }
img { max-width: 100%; border: 1px solid #eee; }
.state-done { color: #1a7f37; } .state-failed { color: #cf222e; } .state-running { color: #9a6700; }
.state-queued { color: #0969da; } .state-not-run { color: #777; }
.warning { border-left: 4px solid #9a6700; padding-left: 0.75rem; }
td.path { text-align: left; white-space: normal; word-break: break-all; font-size: 0.8rem; }
"""


def _table(pivot: Pivot) -> str:
    header = "".join(f"<th>{escape(name)}</th>" for name in pivot.header)
    rows = "".join(
        '<tr class="result">' + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>"
        for cells in pivot.body
    )
    note = f"<p>{escape(pivot.note)}</p>" if pivot.note else ""
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"
    return f"<h3>{escape(pivot.title)}</h3>\n{table}{note}"


def _figure(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f'<figure id="{escape(chart.name)}">'
        f'<img alt="{escape(chart.title)}" src="data:image/png;base64,{data}"></figure>'
    )


def _status(rows: list[StageStatus]) -> str:
    header = "".join(
        f"<th>{name}</th>" for name in ("experiment", "stage", "state", "since", "path", "detail")
    )
    body = "".join(
        f'<tr class="status"><td>{escape(r.experiment)}</td><td>{escape(r.stage)}</td>'
        f'<td class="state-{r.state.replace(" ", "-")}">{escape(r.state)}</td><td>{escape(r.at or "-")}</td>'
        f'<td class="path">{escape(r.path or "-")}</td><td>{escape(r.detail)}</td></tr>'
        for r in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def render(
    tables: list[Pivot],
    charts: list[Chart],
    status: list[StageStatus] | None,
    registry: str,
    generated_at: str,
    warnings: list[str] = (),
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>meds1 report</title><style>{STYLE}</style></head><body>",
        "<h1>meds1 report</h1>",
        f"<p>From <code>{escape(registry)}</code>, generated {escape(generated_at)}.</p>",
        "<h2>Results</h2>",
        *(_table(table) for table in tables),
    ]
    if not tables or not tables[0].body:
        parts.append("<p>No experiment has eval results yet.</p>")
    if warnings:
        items = "".join(f"<li>{escape(warning)}</li>" for warning in warnings)
        parts.append(
            f'<div class="warning"><p>Compared experiments differ in provenance:</p><ul>{items}</ul></div>'
        )
    if charts:
        parts += ["<h2>Plots</h2>", *(_figure(chart) for chart in charts)]
    if status is not None:
        parts += ["<h2>Stage status</h2>", _status(status)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
