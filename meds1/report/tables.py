"""The results tables: one row per experiment and eval source, pivoted for reading.

`results.csv` is the tidy form (one line per experiment x source, every number unrounded); the
Markdown file, the terminal and the HTML page show the same numbers as three pivots, experiments
down and sources across: strict accuracy with its 95% interval, the field's harnesses (HuatuoGPT-o1's,
MedReason's, m1's and med-s1's scorers on the same answers, one row each), and questions per source
with the unparseable share. `overall` pools every question of the experiment,
so it is the average over sources weighted by their number of questions (as the eval stage scores it).
`decoding` says how the answers were sampled (`T=0.5 p=0.9 2000`: temperature, top_p, max new tokens;
`greedy 2048`). Evals that asked other option orders (eval.shuffle_options) get an option-order table.
Metrics written before a field existed simply show "-" for it. With a baseline,
`paired.csv` and one more table hold the paired comparisons (meds1.report.paired).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rich.table import Table

from meds1.evaluation import harnesses
from meds1.report import provenance
from meds1.report.experiments import Experiment
from meds1.report.paired import Paired

OVERALL = "overall"
ADJUST_LABELS = {"holm": "Holm", "bh": "Benjamini-Hochberg"}  # report.adjust
MAX_SOURCE_COLUMNS = 8  # more sources than this: the tables are transposed (sources down, experiments across)


@dataclass
class SourceResult:
    experiment: str
    group: str
    source: str  # an eval source, or "overall"
    n: int | None
    accuracy: float | None  # strict: the first confident answer
    ci_low: float | None
    ci_high: float | None
    accuracy_std: float | None  # across eval.repeats runs
    accuracy_huatuo: float | None  # HuatuoGPT-compatible: max of first/last match
    huatuo_ci_low: float | None
    huatuo_ci_high: float | None
    accuracy_medreason: float | None  # the other harnesses: meds1.evaluation.harnesses
    accuracy_m1: float | None
    accuracy_medsone: float | None
    unparseable: float | None
    mean_output_tokens: float | None
    orders: int | None  # option orders asked (eval.shuffle_options + 1), None without
    worst_order_accuracy: float | None  # strict accuracy under the worst of those orders
    consistent: float | None  # share of questions right under every order
    train_samples: int | None
    tts_budget: int | None
    mean_thinking_tokens: float | None
    decoding: str  # see decoding()


@dataclass
class Pivot:
    title: str
    header: list[str]
    body: list[list[str]]
    note: str = ""


def _interval(summary: dict, key: str) -> tuple[float | None, float | None]:
    interval = summary.get(key)
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return interval[0], interval[1]
    return None, None


def decoding(exp: Experiment) -> str:
    """How the eval sampled: from the metrics' own record of it, else the recorded eval config."""
    settings = (exp.metrics or {}).get("decoding") or exp.config.get("eval") or {}
    temperature, top_p, tokens = (settings.get(k) for k in ("temperature", "top_p", "max_new_tokens"))
    if temperature is None and tokens is None:
        return "-"
    if temperature == 0:
        return f"greedy {_number(tokens)}"
    return f"T={_number(temperature)} p={_number(top_p)} {_number(tokens)}"


def _number(value) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:g}"


def source_results(experiments: list[Experiment]) -> list[SourceResult]:
    """Rows for every experiment with eval metrics: each source, then overall."""
    rows = []
    for exp in experiments:
        if not exp.metrics:
            continue
        tts = exp.tts or {}
        per_source = exp.metrics.get("per_source") or {}
        for source, summary in [*sorted(per_source.items()), (OVERALL, exp.metrics.get(OVERALL) or {})]:
            rows.append(
                SourceResult(
                    exp.slug,
                    exp.group,
                    source,
                    summary.get("n"),
                    summary.get("accuracy"),
                    *_interval(summary, "ci95"),
                    summary.get("accuracy_std"),
                    summary.get("accuracy_huatuo"),
                    *_interval(summary, "ci95_huatuo"),
                    summary.get("accuracy_medreason"),
                    summary.get("accuracy_m1"),
                    summary.get("accuracy_medsone"),
                    summary.get("unparseable"),
                    summary.get("mean_output_tokens"),
                    *_orders(summary.get("permutations")),
                    exp.train_samples,
                    tts.get("budget"),
                    tts.get("mean_thinking_tokens"),
                    decoding(exp),
                )
            )
    return rows


def _orders(permutations: dict | None) -> tuple[int | None, float | None, float | None]:
    if not permutations:
        return None, None, None
    return permutations["n"], min(permutations["accuracy"]), permutations["consistent"]


def write_csv(rows: list[SourceResult], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(SourceResult)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def write_paired_csv(rows: list[Paired], decodings: dict[str, str], path: Path) -> None:
    """paired.csv: every Paired field unrounded, plus the decoding of both arms."""
    names = [field.name for field in fields(Paired)] + ["decoding", "baseline_decoding"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                asdict(row)
                | {"decoding": decodings[row.experiment], "baseline_decoding": decodings[row.baseline]}
            )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def strict_cell(row: SourceResult) -> str:
    if row.accuracy is None:
        return "-"
    text = _pct(row.accuracy)
    if row.accuracy_std is not None:
        text += f" ±{100 * row.accuracy_std:.1f}"
    if row.ci_low is not None:
        text += f" [{_pct(row.ci_low)}, {_pct(row.ci_high)}]"
    return text


def huatuo_cell(row: SourceResult) -> str:
    text = _pct(row.accuracy_huatuo)
    if row.accuracy_huatuo is not None and row.huatuo_ci_low is not None:
        text += f" [{_pct(row.huatuo_ci_low)}, {_pct(row.huatuo_ci_high)}]"
    return text


HARNESS_LABELS = {harnesses.metric(name): label for name, label in harnesses.LABELS.items()}
HARNESS_NOTE = (
    "the same answers scored by each paper's own code (HuatuoGPT-o1@2c8d7fc, MedReason@02b51f1, "
    "m1@c65dfc6, med-s1@d15c393; meds1.evaluation.harnesses). These scorers never abstain: an answer "
    "they cannot read is given the option most like it (difflib; an empty answer: the last option), so "
    "a model that writes no usable answer, such as an untrained one, still scores about chance here and "
    "can rank above a trained model; the strict table counts such answers wrong. overall: HuatuoGPT-o1, "
    "MedReason and med-s1 weight sources by their questions; m1 averages its sources (its Table 1 Avg.)"
)


def harness_cell(row: SourceResult, field: str) -> str:
    return huatuo_cell(row) if field == "accuracy_huatuo" else _pct(getattr(row, field))


def harness_pivot(
    by_experiment: dict[str, dict[str, SourceResult]], columns: list[str], group_by: str
) -> Pivot:
    """The field's harnesses: one row per experiment and harness, sources across."""
    body = []
    for experiment, cells in by_experiment.items():
        first = next(iter(cells.values()))
        for field, label in HARNESS_LABELS.items():
            scores = [harness_cell(cells[c], field) if c in cells else "-" for c in columns]
            body.append([experiment, first.group, first.decoding, label, *scores])
    header = ["experiment", group_by, "decoding", "harness", *columns]
    return Pivot("The field's harnesses, % (same answers)", header, body, HARNESS_NOTE)


def count_cell(row: SourceResult) -> str:
    n = "-" if row.n is None else str(row.n)
    return n if row.unparseable is None else f"{n} ({100 * row.unparseable:.0f}%)"


def pivots(rows: list[SourceResult], group_by: str) -> list[Pivot]:
    """The three reading tables (see the module docstring)."""
    sources = sorted({row.source for row in rows} - {OVERALL})
    columns = [*sources, OVERALL]
    by_experiment: dict[str, dict[str, SourceResult]] = {}
    for row in rows:
        by_experiment.setdefault(row.experiment, {})[row.source] = row

    def pivot(title: str, cell, lead: list[str], lead_cells, note: str = "") -> Pivot:
        body = []
        for experiment, cells in by_experiment.items():
            first = next(iter(cells.values()))
            body.append(
                [experiment, *lead_cells(first), *(cell(cells[c]) if c in cells else "-" for c in columns)]
            )
        return Pivot(title, ["experiment", *lead, *columns], body, note)

    tables = [
        pivot(
            "Strict accuracy, % [95% CI]",
            strict_cell,
            [group_by, "decoding"],
            lambda r: [r.group, r.decoding],
        ),
        harness_pivot(by_experiment, columns, group_by),
        pivot(
            "Questions (unparseable share)",
            count_cell,
            ["train rows"],
            lambda r: ["-" if r.train_samples is None else str(r.train_samples)],
            note=f"{OVERALL}: all questions pooled, i.e. sources weighted by their number of questions",
        ),
    ]
    return [_transposed(table) for table in tables] if len(sources) > MAX_SOURCE_COLUMNS else tables


def _transposed(table: Pivot) -> Pivot:
    """Sources down and experiments across, for suites too wide to read across (m1's eleven sources)."""
    header, *body = (list(cells) for cells in zip(table.header, *table.body, strict=True))
    note = f"{table.note}; " if table.note else ""
    return Pivot(table.title, header, body, note + "one column per experiment, one row per source")


def permutation_pivot(experiments: list[Experiment]) -> Pivot | None:
    """Option-order robustness (eval.shuffle_options), experiments down and sources across; None when no
    chosen experiment asked its questions in other orders."""
    asked = [e for e in experiments if ((e.metrics or {}).get(OVERALL) or {}).get("permutations")]
    if not asked:
        return None
    sources = sorted({s for e in asked for s in e.metrics.get("per_source") or {}})
    columns = [*sources, OVERALL]
    body = []
    for exp in asked:
        summaries = {**exp.metrics["per_source"], OVERALL: exp.metrics[OVERALL]}
        orders = exp.metrics[OVERALL]["permutations"]["n"]
        cells = [_orders_cell((summaries.get(c) or {}).get("permutations")) for c in columns]
        body.append([exp.slug, str(orders), *cells])
    table = Pivot(
        "Option-order robustness, % (strict)",
        ["experiment", "orders", *columns],
        body,
        "each question asked in its own order and in the others' seeded permutations of its options "
        "(eval.shuffle_options; the same orders for every experiment): own order / the other orders' lowest-"
        "highest / consistent, the share of questions right under every order. A model that learned a "
        "letter, not an answer, loses accuracy when the order changes",
    )
    return _transposed(table) if len(sources) > MAX_SOURCE_COLUMNS else table


def _orders_cell(permutations: dict | None) -> str:
    if not permutations:
        return "-"
    own, *others = permutations["accuracy"]
    spread = f"{_pct(min(others))}-{_pct(max(others))}" if others else "-"
    return f"{_pct(own)} / {spread} / {_pct(permutations['consistent'])}"


def skipped_pivot(experiments: list[Experiment]) -> Pivot | None:
    """Rows the eval left out when loading its suite, per experiment and source, by reason; None if none."""
    body = []
    for exp in experiments:
        skipped = (exp.metrics or {}).get("skipped_rows") or {}
        if skipped and all(isinstance(count, int) for count in skipped.values()):  # before per-source counts
            skipped = {"-": skipped}
        for source, reasons in sorted(skipped.items()):
            if reasons:
                text = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
                body.append([exp.slug, source, str(sum(reasons.values())), text])
    note = (
        "rows of a partly usable benchmark that could not be scored (not in the tables above); "
        "map the benchmark's fields in eval.suite to keep them"
    )
    if not body:
        return None
    return Pivot("Skipped eval rows", ["experiment", "source", "rows", "reasons"], body, note)


def overlap_pivot(experiments: list[Experiment]) -> Pivot | None:
    """Training rows (the eval's `metrics.overlap`) and RL questions (`metrics.rl_overlap`) that restate
    questions of eval sources they were not checked against, per experiment and source; None when every
    source was checked."""
    body = []
    for exp in experiments:
        for key, what in (("overlap", "curated rows"), ("rl_overlap", "RL questions")):
            overlap = (exp.metrics or {}).get(key) or {}
            for source, counts in sorted((overlap.get("sources") or {}).items()):
                share = f"{counts['training_rows']} of {overlap['training_rows']}"
                rule = f"{overlap['method']} {overlap['rule']}"
                body.append([exp.slug, source, str(counts["questions"]), what, share, rule])
    note = (
        "eval sources the model's training data was not decontaminated against (curation.decontamination."
        "suite, rl.data.decontamination.suite): how many of its rows restate one of their questions, by the "
        "decontamination rule; a number above 0 may be inflated by contamination"
    )
    header = ["experiment", "source", "questions", "training data", "rows restating them", "rule"]
    return Pivot("Training rows that restate eval questions", header, body, note) if body else None


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _paired_cells(r: Paired, decodings: dict[str, str]) -> list[str]:
    return [
        r.experiment,
        r.source,
        decodings[r.experiment],
        str(r.n),
        str(r.unpaired),
        str(r.runs),
        _pct(r.baseline_accuracy),
        _pct(r.accuracy),
        f"{_points(r.difference)} [{_points(r.ci_low)}, {_points(r.ci_high)}]",
        f"{r.baseline_better} / {r.experiment_better}",
        f"{r.p_value:.3g}",
        "-" if r.p_adjusted is None else f"{r.p_adjusted:.3g}",
        "-" if r.mde is None else f"{100 * r.mde:.1f}" + (" (within noise)" if r.within_noise else ""),
    ]


PAIRED_HEADER = ["experiment", "source", "decoding", "n", "unpaired", "runs", "baseline", "experiment %"]
PAIRED_HEADER += ["difference [95% CI]", "b / c", "McNemar p", "p adjusted", "MDE"]


def _paired_note(adjust: str) -> str:
    return (
        "n: questions both answered (unpaired: answered by one only, left out); runs: eval runs paired by "
        "index; strict accuracy, %; difference: experiment - baseline, points, 95% paired bootstrap over "
        "questions (then their runs, with repeats); b / c: questions only the baseline / only the "
        "experiment got right (by mean over runs); "
        f"p: McNemar's exact two-sided test; adjusted: {ADJUST_LABELS[adjust]} over every row of this table "
        "(report.adjust); MDE: the smallest difference, in points, these questions detect at the two arms' "
        "accuracies with power 0.8, alpha 0.05 (meds1.report.multiplicity); within noise: |difference| < MDE"
    )


def paired_pivot(
    rows: list[Paired], baseline: str, decodings: dict[str, str], unmatched: list[str], adjust: str = "holm"
) -> Pivot:
    """The paired comparisons against `baseline`, one row per experiment and source (then overall)."""
    note = _paired_note(adjust)
    if unmatched:
        note += f". Not compared (no questions in common, or no predictions): {', '.join(unmatched)}"
    return Pivot(
        f"Paired with baseline {baseline} ({decodings[baseline]})",
        list(PAIRED_HEADER),
        [_paired_cells(r, decodings) for r in rows],
        note,
    )


def start_pivot(rows: list[Paired], decodings: dict[str, str], unmatched: list[str], adjust: str) -> Pivot:
    """Each RL model against the model it started from (meds1.report.rl), one row per source and overall."""
    note = "baseline: the eval of the model RL started from (its SFT model, or the untrained model); "
    note += _paired_note(adjust)
    if unmatched:
        note += f". No eval of the starting model (compare_sft=true evaluates it): {', '.join(unmatched)}"
    body = [[*_paired_cells(r, decodings)[:2], r.baseline, *_paired_cells(r, decodings)[2:]] for r in rows]
    return Pivot(
        "RL against the model it started from",
        [*PAIRED_HEADER[:2], "started from", *PAIRED_HEADER[2:]],
        body,
        note,
    )


def provenance_pivot(experiments: list[Experiment]) -> Pivot:
    return Pivot(
        "Provenance",
        list(provenance.HEADER),
        provenance.rows(experiments),
        "what produced each stage's record (the curation and training an experiment used are shown "
        "where they were recorded); -: none (not installed, not under SLURM, no source data) or a "
        "record made before meds1 kept provenance",
    )


def markdown(tables: list[Pivot], warnings: list[str] = ()) -> str:
    lines = ["# meds1 results", ""]
    for table in tables:
        lines += [f"## {table.title}", ""]
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join(["---", *["---:"] * (len(table.header) - 1)]) + "|")
        lines += ["| " + " | ".join(cells) + " |" for cells in table.body]
        lines += ["", table.note, ""] if table.note else [""]
    if warnings:
        lines += ["## Note: compared experiments differ in provenance", ""]
        lines += [f"- {warning}" for warning in warnings] + [""]
    return "\n".join(lines)


def to_rich(table: Pivot) -> Table:
    rich_table = Table(title=table.title, caption=table.note or None)
    for i, name in enumerate(table.header):
        justify = "left" if i < 2 else "right"
        rich_table.add_column(name, style="bold" if i == 0 else None, justify=justify, overflow="fold")
    for cells in table.body:
        rich_table.add_row(*cells)
    return rich_table


def trace_format(config: dict) -> str:
    """The chat layout the experiment trained on (meds1's curation.format.layout, or med-s1's format)."""
    fmt = (config.get("curation") or {}).get("format") if isinstance(config.get("curation"), dict) else None
    if isinstance(fmt, dict):
        return str(fmt.get("layout") or "-")
    return str(fmt or "-")


def trace_pivot(experiments: list[Experiment]) -> Pivot | None:
    """The trace study: each evaluated experiment's trace chain (transforms > perturbation > restore)
    and chat layout beside its overall accuracies; None when no chosen experiment changed its traces."""
    from meds1.report.plots import trace_chain, trace_label

    chains = {exp.slug: trace_chain(exp.config) for exp in experiments if exp.metrics}
    if not any(chain["transforms"] or chain["type"] for chain in chains.values()):
        return None
    body = []
    for exp in experiments:
        if exp.slug not in chains:
            continue
        overall = next(r for r in source_results([exp]) if r.source == OVERALL)
        trace = trace_label(chains[exp.slug]) if "curate" in (exp.config.get("stages") or []) else "-"
        rows = "-" if exp.train_samples is None else str(exp.train_samples)
        body.append(
            [exp.slug, trace, trace_format(exp.config), rows, strict_cell(overall), huatuo_cell(overall)]
        )
    return Pivot(
        "Reasoning traces",
        ["experiment", "trace", "format", "train rows", "strict accuracy, %", "HuatuoGPT-compatible, %"],
        body,
        "trace: the transforms applied to the selected rows' reasoning, then the perturbation (type rate) "
        "and restore; source: the source's own traces; -: not fine-tuned",
    )
