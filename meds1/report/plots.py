"""The report's figures, drawn headless (matplotlib's Agg canvas, no pyplot state).

Each function takes the chosen experiments and returns a `Chart` holding the series exactly as drawn
and the PNG bytes, or None when no experiment has the data for it:

- sample efficiency: accuracy vs number of training rows, one line per `report.group_by` value
  (the s1 figure; an eval with settings of its own, e.g. `eval.max_new_tokens=512`, draws its own line);
  evals of a base model (as their records name it) are dashed reference lines;
- per-source bars: accuracy per eval source and overall for every chosen experiment;
- test-time scaling: accuracy vs mean thinking tokens, one line per evaluated model;
- curation funnel: rows left after each filter, per curated set;
- specialties: the share of each specialty in the selected rows, per curated set;
- perturbation rates: accuracy vs perturbation rate, one line per perturbation type (med-s1's figure);
- trace formats: accuracy per reasoning-trace format (the transform chain), one bar per experiment.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from meds1.evaluation import harnesses
from meds1.report.experiments import Experiment

DPI = 100
TOP_SPECIALTIES = 20
FIRST_STAGE, LAST_STAGE = "quality", "selection"
ALL_ROWS = "all rows"
MAX_BARS = 10  # experiments or curated sets per bar chart; more are left out, with a note in the title
LABEL_CHARS = 42  # a legend or tick label longer than this wraps at its separators ("__", ",", " ", "=")
CHAR_INCHES = 0.075  # the width of one character of a small legend label, for choosing its columns
LINE_INCHES = 0.19  # the height of one legend line
CHART_NAMES = ("sample_efficiency", "per_source", "test_time_scaling", "curation_funnel", "specialties")
TRACE_CHARTS = ("perturbation_rates", "trace_formats")  # the trace study's (drawn when it has data)
RL_CHARTS = ("reward_curve",)  # RL runs' (drawn when some chosen experiment has an RL history)
CHART_NAMES += TRACE_CHARTS + RL_CHARTS


@dataclass
class Chart:
    name: str  # file stem
    title: str
    series: dict[str, list[tuple]]  # label -> points (x, y) as drawn
    png: bytes
    figure: object = field(default=None, repr=False, compare=False)  # the drawn matplotlib Figure


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _score(summary: dict | None, metric: str) -> tuple[float | None, tuple[float, float] | None]:
    """(accuracy in %, its 95% interval in % or None) of one summary."""
    if not summary or summary.get(metric) is None:
        return None, None
    interval = summary.get("ci95" if metric == "accuracy" else f"ci95_{metric.removeprefix('accuracy_')}")
    valid = isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval
    return 100 * summary[metric], (100 * interval[0], 100 * interval[1]) if valid else None


def _errorbar(ax, xs, ys, intervals, **style):
    low = [y - iv[0] if iv else 0.0 for y, iv in zip(ys, intervals, strict=True)]
    high = [iv[1] - y if iv else 0.0 for y, iv in zip(ys, intervals, strict=True)]
    return ax.errorbar(xs, ys, yerr=[low, high], capsize=3, **style)


def _lines(ax, points: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """One line with 95% error bars per series of points (x, y, interval, label or None); the series drawn."""
    series = {}
    for name, series_points in sorted(points.items()):
        series_points.sort(key=lambda point: point[0])
        xs, ys, intervals, labels = zip(*series_points, strict=True)
        _errorbar(ax, xs, ys, intervals, marker="o", label=name)
        for x, y, label in zip(xs, ys, labels, strict=True):
            if label is not None:
                ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        series[name] = list(zip(xs, ys, strict=True))
    return series


def _side_by_side(slots: int, index: int, count: int) -> tuple[list[float], float]:
    """Positions of series `index` of `count` drawn side by side at slots 0..slots-1, and the bar width."""
    width = 0.8 / count
    return [slot - 0.4 + width * (index + 0.5) for slot in range(slots)], width


def _first(items: dict, what: str) -> tuple[dict, str]:
    """At most MAX_BARS of `items`, and a title suffix saying how many were left out."""
    if len(items) <= MAX_BARS:
        return items, ""
    kept = dict(list(items.items())[:MAX_BARS])
    return kept, f" (first {MAX_BARS} of {len(items)} {what}; choose with report.experiments)"


def wrap(label: str, width: int = LABEL_CHARS) -> str:
    """`label` on lines of at most `width` characters, broken after "__", ",", " ", "=" or "/" where it can
    be (a slug has no spaces), else within a word."""
    lines = [""]
    for token in re.split(r"(?<=__)|(?<=[, =/])", label):
        while len(token) > width:
            if lines[-1]:
                lines.append("")
            lines[-1], token = token[:width], token[width:]
            lines.append("")
        if lines[-1] and len(lines[-1]) + len(token) > width:
            lines.append("")
        lines[-1] += token
    return "\n".join(line for line in lines if line)


def _chart(name: str, title: str, figure, series: dict, grid: str | None = None) -> Chart:
    """Title, grid and legend on the figure's one plot, then the PNG. The legend sits below the plot,
    its labels wrapped, in as many columns as fit the figure's width; the figure grows by its height,
    so long slugs never squeeze the plot nor fall off the edge."""
    ax = figure.axes[0]
    ax.set_title(title)
    if grid:
        ax.grid(axis=grid, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        wrapped = [wrap(label) for label in labels]
        widest = max(len(line) for label in wrapped for line in label.split("\n"))
        columns = max(1, min(len(wrapped), int(figure.get_figwidth() / ((widest + 6) * CHAR_INCHES))))
        rows = [wrapped[i : i + columns] for i in range(0, len(wrapped), columns)]
        lines = sum(max(label.count("\n") + 1 for label in row) for row in rows)
        figure.set_figheight(figure.get_figheight() + LINE_INCHES * (lines + 1))
        figure.legend(
            handles, wrapped, loc="outside lower center", ncols=columns, fontsize="small", frameon=False
        )
    return Chart(name, title, series, _png(figure), figure)


def _metric_label(metric: str) -> str:
    harness = metric.removeprefix("accuracy_")
    return (
        f"{harnesses.LABELS[harness]} harness accuracy (%)"
        if harness in harnesses.LABELS
        else "strict accuracy (%)"
    )


def sample_efficiency(experiments: list[Experiment], metric: str) -> Chart | None:
    points: dict[str, list[tuple]] = {}  # group -> (train rows, accuracy, interval, None)
    references: dict[str, float] = {}
    for exp in experiments:
        y, interval = _score((exp.metrics or {}).get("overall"), metric)
        if y is None or exp.tts:
            continue
        if exp.train_samples:  # an eval with settings of its own is a series of its own
            series = f"{exp.group} ({' '.join(exp.eval_overrides)})" if exp.eval_overrides else exp.group
            points.setdefault(series, []).append((exp.train_samples, y, interval, None))
        elif not exp.trained:
            references[exp.slug] = y
    if not points:
        return None
    figure = _figure(10, 4.8)
    ax = figure.add_subplot()
    series = _lines(ax, points)
    xs_all = [point[0] for group_points in points.values() for point in group_points]
    span = (min(xs_all) * 0.8, max(xs_all) * 1.25)
    for slug, y in sorted(references.items()):
        ax.plot(span, (y, y), linestyle="--", label=f"{slug} (not fine-tuned)")
        series[f"{slug} (not fine-tuned)"] = [(span[0], y), (span[1], y)]
    if max(xs_all) / min(xs_all) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs_all)), [f"{x:,}" for x in sorted(set(xs_all))], minor=False)
    ax.minorticks_off()
    ax.set_xlim(*span)
    ax.set_xlabel("training rows (selected by curation)")
    ax.set_ylabel(_metric_label(metric))
    return _chart(
        "sample_efficiency", "Sample efficiency: accuracy vs training rows", figure, series, grid="both"
    )


def per_source(experiments: list[Experiment], metric: str) -> Chart | None:
    scored = {
        e.slug: e for e in experiments if _score((e.metrics or {}).get("overall"), metric)[0] is not None
    }
    if not scored:
        return None
    scored, left_out = _first(scored, "experiments")
    scored = list(scored.values())
    sources = sorted({s for exp in scored for s in (exp.metrics.get("per_source") or {})}) + ["overall"]
    figure = _figure(max(10, 1.2 * len(sources) * max(1, len(scored) / 3)), 4.8)
    ax = figure.add_subplot()
    series = {}
    for i, exp in enumerate(scored):
        summaries = {**(exp.metrics.get("per_source") or {}), "overall": exp.metrics.get("overall")}
        slots, width = _side_by_side(len(sources), i, len(scored))
        bars = [
            (x, source, *_score(summaries.get(source), metric))
            for x, source in zip(slots, sources, strict=True)
        ]
        xs, names, ys, intervals = zip(*[bar for bar in bars if bar[2] is not None], strict=True)
        ax.bar(xs, ys, width, label=exp.slug)
        _errorbar(ax, xs, ys, intervals, fmt="none", color="black", lw=1)
        series[exp.slug] = list(zip(names, ys, strict=True))
    ax.set_xticks(range(len(sources)), sources, rotation=20 if len(sources) <= 8 else 45, ha="right")
    ax.set_ylabel(_metric_label(metric))
    ax.set_ylim(0, 100)
    return _chart("per_source", "Accuracy per eval source" + left_out, figure, series, grid="y")


def thinking_tokens(experiments: list[Experiment], metric: str) -> Chart | None:
    points: dict[str, list[tuple]] = {}  # model -> (thinking tokens, accuracy, interval, budget)
    for exp in experiments:
        y, interval = _score((exp.metrics or {}).get("overall"), metric)
        tokens = (exp.tts or {}).get("mean_thinking_tokens")
        if y is not None and tokens is not None:
            points.setdefault(exp.model, []).append((tokens, y, interval, exp.tts.get("budget")))
    if not points:
        return None
    figure = _figure(10, 4.8)
    ax = figure.add_subplot()
    series = _lines(ax, points)
    ax.set_xlabel("mean thinking tokens (labels: thinking budget)")
    ax.set_ylabel(_metric_label(metric))
    title = "Test-time scaling: accuracy vs thinking tokens"
    return _chart("test_time_scaling", title, figure, series, grid="both")


def _curations(experiments: list[Experiment]) -> dict[str, dict]:
    """Curation stats by curated set (experiments sharing a curation appear once)."""
    return {exp.curation_slug: exp.curation for exp in experiments if exp.curation}


def _stage_rank(key: str) -> tuple[int, str]:
    """Sort key of a removal reason `stage/reason`: quality filters first, selection last."""
    stage = key.split("/")[0]
    return (0 if stage == FIRST_STAGE else 2 if stage == LAST_STAGE else 1), key


def funnel_steps(stats: dict) -> list[tuple[str, int]]:
    """(step, rows left after it): all rows, then one step per removal reason."""
    left = stats.get("total_rows")
    if left is None:
        return []
    removed = stats.get("removed") or {}
    steps = [(ALL_ROWS, left)]
    for key in sorted(removed, key=_stage_rank):
        left -= removed[key]
        steps.append((key, left))
    return steps


def curation_funnel(experiments: list[Experiment]) -> Chart | None:
    funnels = {slug: funnel_steps(stats) for slug, stats in _curations(experiments).items()}
    funnels, left_out = _first({slug: steps for slug, steps in funnels.items() if steps}, "curated sets")
    if not funnels:
        return None
    reasons = sorted({key for steps in funnels.values() for key, _ in steps[1:]}, key=_stage_rank)
    labels = [ALL_ROWS, *reasons]
    series = {}
    for slug, steps in funnels.items():
        left, rows = dict(steps), steps[0][1]
        series[slug] = []
        for label in labels:  # a reason this curation never hit removed none of its rows
            rows = left.get(label, rows)
            series[slug].append((label, rows))
    figure = _figure(10, 0.4 * len(labels) * max(1, len(series) / 2) + 1.5)
    ax = figure.add_subplot()
    for i, (slug, steps) in enumerate(series.items()):
        positions, height = _side_by_side(len(labels), i, len(series))
        ax.bar_label(
            ax.barh(positions, [rows for _, rows in steps], height, label=slug), fontsize=7, padding=2
        )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("rows left after removing each reason (top to bottom)")
    return _chart(
        "curation_funnel", "Curation funnel: rows left after each filter" + left_out, figure, series
    )


def specialties(experiments: list[Experiment]) -> Chart | None:
    counts = {
        slug: stats["specialties"]
        for slug, stats in _curations(experiments).items()
        if stats.get("specialties")
    }
    counts, left_out = _first(counts, "curated sets")
    if not counts:
        return None
    shares = {slug: {k: 100 * v / sum(c.values()) for k, v in c.items()} for slug, c in counts.items()}
    totals: dict[str, float] = {}
    for share in shares.values():
        for name, value in share.items():
            totals[name] = totals.get(name, 0.0) + value
    top = sorted(totals, key=lambda name: (-totals[name], name))[:TOP_SPECIALTIES]
    labels = top + (["(other)"] if len(totals) > len(top) else [])
    series = {
        slug: [(name, share.get(name, 0.0)) for name in top]
        + ([("(other)", sum(v for k, v in share.items() if k not in top))] if len(labels) > len(top) else [])
        for slug, share in shares.items()
    }
    figure = _figure(10, 0.3 * len(labels) * max(1, len(series) / 2) + 1.5)
    ax = figure.add_subplot()
    for i, (slug, points) in enumerate(series.items()):
        positions, height = _side_by_side(len(labels), i, len(series))
        rows = sum(counts[slug].values())
        ax.barh(positions, [share for _, share in points], height, label=f"{slug} ({rows} rows)")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of selected rows (%)")
    return _chart("specialties", "Specialties of the selected rows" + left_out, figure, series)


def charts(experiments: list[Experiment], metric: str) -> list[Chart]:
    """Every chart the experiments have data for, in reading order."""
    drawn = [
        sample_efficiency(experiments, metric),
        per_source(experiments, metric),
        thinking_tokens(experiments, metric),
        curation_funnel(experiments),
        specialties(experiments),
        reward_curve(experiments),
        perturbation_rates(experiments, metric),
        trace_formats(experiments, metric),
    ]
    return [chart for chart in drawn if chart is not None]


def reward_curve(experiments: list[Experiment]) -> Chart | None:
    """Each RL run's reward per logged step (a sweep's runs side by side); with one run, also each
    reward's mean, so a format reward that climbs while mcq stays flat shows."""
    from meds1.report.rl import runs

    found = runs(experiments)
    if not found:
        return None
    found, left_out = _first(found, "RL runs")
    figure = _figure(8, 4.5)
    ax = figure.add_subplot()
    series = {}
    for label, steps in found.items():
        xs = [entry["step"] for entry in steps]
        curves = {label: [entry["reward"] for entry in steps]}
        if len(found) == 1:
            names = steps[0].get("rewards") or {}
            curves |= {f"{label}: {name}": [entry["rewards"].get(name) for entry in steps] for name in names}
        for name, ys in curves.items():
            style = {} if name == label else {"linestyle": "--", "alpha": 0.7}
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, label=name, **style)
            series[name] = list(zip(xs, ys, strict=True))
    ax.set_xlabel("RL step")
    ax.set_ylabel("reward (mean over the step's completions)")
    return _chart("reward_curve", "RL reward per step" + left_out, figure, series, grid="y")


# --- the trace study (med-s1's perturbation figure, accuracy per trace format) ---------------------


def trace_chain(config: dict) -> dict:
    """What an experiment did to its traces, from its recorded config: {transforms, type, rate, restore}.

    Reads meds1's `curation.trace`, or the `extract`/`perturbation`/`restore` keys of a med-s1 curation
    config (experiments imported from med-s1's results.json), so both draw on the same figures."""
    curation = config.get("curation") if isinstance(config.get("curation"), dict) else {}
    trace = curation.get("trace")
    if isinstance(trace, dict):
        perturbation = trace.get("perturbation") or {}
        transforms, restore = list(trace.get("transforms") or []), bool(trace.get("restore"))
    else:
        extract = curation.get("extract")
        transforms = [] if extract is None else [extract] if isinstance(extract, str) else list(extract)
        perturbation = curation.get("perturbation") or {}
        restore = bool(curation.get("restore"))
        if perturbation and transforms and transforms[-1] != "step":
            transforms.append("step")  # med-s1 appends it before perturbing
    kind = perturbation.get("type")
    return {
        "transforms": transforms,
        "type": kind,
        "rate": perturbation.get("rate") if kind else None,
        "restore": restore and kind is not None,
    }


def trace_label(chain: dict) -> str:
    """ "step > skip 0.33 > restore"; "source" for the source traces."""
    parts = list(chain["transforms"]) or ["source"]
    if chain["type"]:
        parts.append(f"{chain['type']} {chain['rate']:g}")
    if chain["restore"]:
        parts.append("restore")
    return " > ".join(parts)


def _overall(exp: Experiment, metric: str) -> tuple[float | None, tuple[float, float] | None]:
    """The overall score and interval; without an overall interval (med-s1's imported summaries have
    per-source ones only), the per-source intervals combined as independent normal estimates of the
    question-weighted mean: SE = sqrt(sum (n_s / n)^2 SE_s^2), SE_s = width_s / 3.92."""
    metrics = exp.metrics or {}
    y, interval = _score(metrics.get("overall"), metric)
    sources = [(s.get("n"), *_score(s, metric)) for s in (metrics.get("per_source") or {}).values()]
    if y is None or interval is not None or not sources or any(None in source for source in sources):
        return y, interval
    total = sum(n for n, _, _ in sources)
    se = sum((n / total * (high - low) / 3.92) ** 2 for n, _, (low, high) in sources) ** 0.5
    return y, (y - 1.96 * se, y + 1.96 * se)


def perturbation_rates(experiments: list[Experiment], metric: str) -> Chart | None:
    """Accuracy vs perturbation rate, one line per perturbation type (restored sets as their own
    lines), each starting at rate 0 from the unperturbed experiment with the same transforms and model
    when there is one: med-s1's perturbation figure."""
    scored = []
    for exp in experiments:
        y, interval = _overall(exp, metric)
        if y is not None and exp.curation_slug is not None and not exp.tts:
            scored.append((exp, trace_chain(exp.config), y, interval))
    points: dict[str, list[tuple]] = {}
    for exp, chain, y, interval in scored:
        if not chain["type"]:
            continue
        name = chain["type"] + (" + restore" if chain["restore"] else "")
        points.setdefault(name, []).append((chain["rate"], y, interval, None))
        base = next(
            (
                (other_y, other_interval)
                for other, other_chain, other_y, other_interval in scored
                if not other_chain["type"]
                and other_chain["transforms"] == chain["transforms"]
                and (other.config.get("model") or {}).get("name")
                == (exp.config.get("model") or {}).get("name")
            ),
            None,
        )
        if base and not any(point[0] == 0 for point in points[name]):
            points[name].append((0.0, *base, None))
    if not points:
        return None
    figure = _figure(10, 4.8)
    ax = figure.add_subplot()
    series = _lines(ax, points)
    rates = sorted({point[0] for line in points.values() for point in line})
    ax.set_xticks(rates, [f"{100 * rate:.0f}%" for rate in rates])
    ax.set_xlabel("perturbation rate (0%: the unperturbed trace)")
    ax.set_ylabel(_metric_label(metric))
    title = "Perturbed reasoning traces: accuracy vs perturbation rate"
    return _chart("perturbation_rates", title, figure, series, grid="both")


def trace_formats(experiments: list[Experiment], metric: str) -> Chart | None:
    """Accuracy per trace format: one bar per curated, unperturbed experiment, labelled by its trace
    chain ("source", "step", "list", "none", ...), best first."""
    bars = []
    for exp in experiments:
        y, interval = _overall(exp, metric)
        chain = trace_chain(exp.config)
        if y is not None and exp.curation_slug is not None and not chain["type"] and not exp.tts:
            bars.append((trace_label(chain), exp.slug, y, interval))
    if not bars or all(label == "source" for label, *_ in bars):
        return None
    bars.sort(key=lambda bar: -bar[2])
    labels = [f"{wrap(label)}\n({wrap(slug)})" for label, slug, _, _ in bars]
    figure = _figure(max(10, 0.9 * len(bars)), 5.2)
    ax = figure.add_subplot()
    xs = list(range(len(bars)))
    ys, intervals = [bar[2] for bar in bars], [bar[3] for bar in bars]
    ax.bar(xs, ys, 0.7, label="trace format")
    _errorbar(ax, xs, ys, intervals, fmt="none", color="black", lw=1)
    ax.set_xticks(xs, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(_metric_label(metric))
    series = {"trace format": [(label, y) for (label, _, y, _) in bars]}
    return _chart("trace_formats", "Accuracy per reasoning-trace format", figure, series, grid="y")
