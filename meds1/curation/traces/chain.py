"""Reasoning-trace research on the selected rows: transform the traces, perturb them, restore them.

`curation.trace.transforms` is a chain of transforms (YAML data, see meds1/curation/traces/spec.py) applied in
order to the selected rows after selection and before formatting, as med-s1 did; a perturbation then
changes the step trace the chain produced (meds1/curation/traces/perturb.py), and `restore` asks the
LLM to repair it. Every LLM request goes through the trace LLM's cache (requests.py).

Each row records what happened to it (returned as `records`, saved in filtered.parquet): the source
trace (`trace_original`), the trace after each stage (`trace_<transform>`, `trace_perturbed`,
`trace_restored`) with that stage's status (`..._status`: ok, `rejected: <check>`, `failed: <error>`),
and `trace_status`/`trace_stage`: the first status that is not ok, and where. A row that is not ok keeps
its previous trace (`on_failure=keep`, med-s1's behaviour for an empty result) or leaves the training
set (`drop`). More than `max_failed_fraction` of the rows not ok stops the stage with the counts and one
example, rather than training a "step" model on mostly untransformed traces.

Before any annotator runs, `preflight_traces` sends the chain's first request for one source row when a
pre-flight is owed (meds1.curation.llm.owed_request), so a dead trace endpoint stops curate in seconds
rather than after hours of annotation (its reply is cached, and reused should that row be selected).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from meds1.config.schema import Config, PerturbationConfig, TraceConfig
from meds1.curation import COT, QUESTION, RESPONSE
from meds1.curation.annotators import TRACE_LLM, annotators
from meds1.curation.traces import perturb
from meds1.curation.traces.calls import OK, Outcome, preflight, render, run_transform
from meds1.curation.traces.requests import TraceLLM
from meds1.curation.traces.spec import Transform, expand, load_perturbation_spec
from meds1.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class TraceResult:
    curated: pd.DataFrame  # the rows that stay, with their new Question/Complex_CoT/Response
    records: pd.DataFrame  # per selected row: the trace after each stage and its status
    dropped: dict[str, pd.Index]  # filter reason -> rows that leave (on_failure=drop)
    stats: dict


def requested(trace: TraceConfig) -> bool:
    return bool(trace.transforms) or trace.perturbation.type is not None or trace.restore


def check_columns(transforms: list[Transform], columns) -> None:
    """Every column a transform reads exists (checked before any request)."""
    for transform in transforms:
        if missing := sorted(transform.columns() - set(columns)):
            raise UserError(
                f"curation.trace.transforms: {transform.name} ({transform.path}) reads "
                f"{', '.join(missing)}, which the source lacks; "
                f"source columns: {', '.join(map(str, columns))}"
            )


def kind(status: str) -> str:
    return status.split(":", 1)[0]


class Chain:
    """The selected rows' texts as the stages change them, and each row's record."""

    def __init__(self, curated: pd.DataFrame, trace: TraceConfig):
        self.frame = curated.copy()
        self.trace = trace
        self.records = pd.DataFrame({"trace_original": curated[COT]}, index=curated.index)
        self.status = pd.Series(OK, index=curated.index, dtype=object)
        self.failed_stage = pd.Series(None, index=curated.index, dtype=object)
        self.active = pd.Series(True, index=curated.index)
        self.stages: dict[str, dict[str, int]] = {}

    def rows(self) -> pd.DataFrame:
        return self.frame[self.active]

    def apply(
        self, stage: str, index: pd.Index, outcomes: list[Outcome], keep: pd.Series | None = None
    ) -> None:
        """Write each ok row's values; record every row's status; a row that is not ok keeps its texts (or
        `keep`'s trace), or leaves with on_failure=drop."""
        statuses = [outcome.status for outcome in outcomes]
        written: dict[str, dict] = {}  # column -> {row: value}: one write per column, not per cell
        for i, outcome in zip(index, outcomes, strict=True):
            if outcome.status == OK:
                for column, value in outcome.values.items():
                    written.setdefault(column, {})[i] = value
                continue
            if keep is not None:
                self.frame.at[i, COT] = keep[i]
            if self.status[i] == OK:
                self.status[i], self.failed_stage[i] = outcome.status, stage
            if self.trace.on_failure == "drop":
                self.active[i] = False
        for column, values in written.items():
            self.frame.loc[list(values), column] = list(values.values())
        self.records.loc[index, stage] = self.frame.loc[index, COT]
        self.records.loc[index, f"{stage}_status"] = statuses
        self.stages[stage] = dict(Counter(kind(s) for s in statuses))


def stage_name(chain: Chain, transform: str) -> str:
    name, n = f"trace_{transform}", 2
    while name in chain.records:
        name, n = f"trace_{transform}_{n}", n + 1
    return name


def perturbation_outcomes(chain: Chain, trace: TraceConfig, seed: int, llm: TraceLLM) -> list[Outcome]:
    """Each active row's perturbed trace (and Response, for `answer`), or why it was not perturbed."""
    rows, cfg = chain.rows(), trace.perturbation
    steps = {i: perturb.parse_steps(str(t)) for i, t in rows[COT].items()}
    outcomes = {i: Outcome() for i in rows.index}
    fewest = 1 if cfg.type in ("add_irrelevant", "answer") else 2
    for i in rows.index:
        if len(steps[i]) < fewest:
            outcomes[i].status = f"rejected: perturbation: {len(steps[i])} step(s)"
    todo = [i for i in rows.index if outcomes[i].status == OK]
    rngs = {i: perturb.row_rng(seed, rows.at[i, "row_id"]) for i in todo}
    if cfg.type in ("skip", "shuffle"):
        change = perturb.skip if cfg.type == "skip" else perturb.shuffle
        for i in todo:
            outcomes[i].values[COT] = perturb.renumber(change(steps[i], cfg.rate, rngs[i]))
    elif cfg.type == "add_irrelevant":
        groups = {text: g for g, text in enumerate(dict.fromkeys(rows[COT].astype(str)))}
        pool = [(groups[str(rows.at[i, COT])], s) for i in rows.index for s in steps[i]]
        for i in todo:
            added = perturb.add_irrelevant(steps[i], cfg.rate, rngs[i], pool, groups[str(rows.at[i, COT])])
            outcomes[i].values[COT] = perturb.renumber(added)
    elif cfg.type == "collapse_consecutive":
        collapse(steps, todo, rngs, cfg, llm, outcomes)
    elif cfg.type == "answer":
        wrong_answers(rows, steps, todo, seed, cfg, llm, outcomes)
    return [outcomes[i] for i in rows.index]


def collapse(
    steps: dict, todo: list, rngs: dict, cfg: PerturbationConfig, llm: TraceLLM, outcomes: dict
) -> None:
    """The LLM merges each chosen pair of consecutive steps (all rows' pairs asked at once)."""
    pairs = [
        (i, p)
        for i in todo
        for p in perturb.collapse_pairs(len(steps[i]), cfg.rate, rngs[i], cfg.collapse_overlapping)
    ]
    asks = pd.DataFrame(
        {
            "avg_words": [
                str(int((perturb.words(steps[i][p]) + perturb.words(steps[i][p + 1])) / 2)) for i, p in pairs
            ],
            "first": [steps[i][p] for i, p in pairs],
            "second": [steps[i][p + 1] for i, p in pairs],
        }
    )
    merges: dict = {i: {} for i in todo}
    for (i, p), outcome in zip(
        pairs, run_transform(load_perturbation_spec("collapse_consecutive"), asks, llm), strict=True
    ):
        if kind(outcome.status) == "failed":
            outcomes[i].status = outcome.status
        merges[i][p] = outcome.replies.get("merged", "")  # an empty merge keeps its pair (med-s1)
    for i in todo:
        if outcomes[i].status == OK:
            outcomes[i].values[COT] = perturb.renumber(perturb.merge(steps[i], merges[i]))


def wrong_answers(
    rows: pd.DataFrame,
    steps: dict,
    todo: list,
    seed: int,
    cfg: PerturbationConfig,
    llm: TraceLLM,
    outcomes: dict,
) -> None:
    """For int(rate x N) rows the LLM writes a wrong last step and Response (med-s1: the step only)."""
    chosen = perturb.answer_rows(rows["row_id"].tolist(), cfg.rate, seed)
    wrong = [i for i in todo if int(rows.at[i, "row_id"]) in chosen]
    spec = load_perturbation_spec("answer")
    if cfg.answer_keeps_response:  # med-s1: the wrong RESPONSE was parsed and thrown away
        spec = dataclasses.replace(spec, writes={k: w for k, w in spec.writes.items() if k != RESPONSE})
    asks = pd.DataFrame(
        {
            QUESTION: rows.loc[wrong, QUESTION].tolist(),
            "last_step": [steps[i][-1] for i in wrong],
            RESPONSE: rows.loc[wrong, RESPONSE].tolist(),
        }
    )
    for i, outcome in zip(wrong, run_transform(spec, asks, llm), strict=True):
        if outcome.status == OK:
            last = outcome.values.pop("last_step")
            outcome.values[COT] = perturb.renumber(perturb.replace_last_step(steps[i], last))
        outcomes[i] = outcome


PREFLIGHT_ROWS = 100  # source rows whose requests the early pre-flight picks from (the first not cached)


def trace_llm(cfg: Config) -> TraceLLM:
    return TraceLLM(annotators(cfg)[TRACE_LLM], cfg.paths.cache, cfg.seed, cfg.curation.annotation_chunk)


def first_request(trace: TraceConfig) -> Transform | None:
    """The transform whose first call is the chain's first LLM request, when that request is made from
    the source rows as they are: the first transform (if it calls the LLM), else `restore` alone."""
    transforms = expand(trace.transforms)
    if transforms:
        return transforms[0] if transforms[0].calls else None
    return load_perturbation_spec("restore") if trace.restore else None


def preflight_traces(pool: pd.DataFrame, cfg: Config, llm: TraceLLM) -> int:
    """The chain's first LLM request for a row of `pool` (the source rows that passed the quality
    filter), sent alone when a pre-flight is owed (calls.preflight: the first of the first
    PREFLIGHT_ROWS rows' requests that is not cached); it stops curate if the endpoint is dead or its
    reply unusable. Returns the requests sent (0 or 1), which `llm.counts` records."""
    trace = cfg.curation.trace
    check_columns(expand(trace.transforms), pool.columns)
    first = first_request(trace)
    if first is None or not len(pool):
        return 0
    records = [row for _, row in pool.head(PREFLIGHT_ROWS).iterrows()]
    call = first.calls[0]
    _, prompts, inputs = render(first, call, records, [Outcome() for _ in records])
    before = llm.counts["preflight"]
    try:
        preflight(first, call, prompts, inputs, llm)
    finally:
        llm.close()
    return llm.counts["preflight"] - before


def transform_traces(curated: pd.DataFrame, cfg: Config, llm: TraceLLM | None = None) -> TraceResult:
    """Apply `curation.trace` to the selected rows (see the module docstring); `llm` is the stage's trace
    LLM, whose counts include its early pre-flight."""
    trace = cfg.curation.trace
    transforms = expand(trace.transforms)
    check_columns(transforms, curated.columns)
    chain = Chain(curated, trace)
    llm = llm or trace_llm(cfg)
    try:
        for transform in transforms:
            rows = chain.rows()
            chain.apply(stage_name(chain, transform.name), rows.index, run_transform(transform, rows, llm))
        unperturbed = chain.frame[COT].copy()
        if trace.perturbation.type is not None:
            index = chain.rows().index
            chain.apply("trace_perturbed", index, perturbation_outcomes(chain, trace, cfg.seed, llm))
        if trace.restore:
            rows = chain.rows()
            fallback = unperturbed if trace.restore_fallback == "unperturbed" else None
            outcomes = run_transform(load_perturbation_spec("restore"), rows, llm)
            chain.apply("trace_restored", rows.index, outcomes, keep=fallback)
    finally:
        llm.close()
    for column, record in ((QUESTION, "trace_question"), (RESPONSE, "trace_response")):
        if not chain.frame[column].equals(curated[column]):
            chain.records[record] = chain.frame[column]
    chain.records["trace_status"] = chain.status
    chain.records["trace_stage"] = chain.failed_stage
    stats = trace_stats(chain, transforms, trace, llm)
    check_failed_fraction(chain, trace)
    dropped = chain.status[~chain.active]
    reasons = {
        f"{stage}_{kind(status)}": group.index
        for (stage, status), group in pd.DataFrame(
            {"stage": chain.failed_stage[dropped.index], "status": dropped.map(kind)}
        ).groupby(["stage", "status"])
    }
    return TraceResult(chain.frame[chain.active], chain.records, reasons, stats)


def trace_stats(chain: Chain, transforms: list[Transform], trace: TraceConfig, llm: TraceLLM) -> dict:
    perturbation = trace.perturbation
    return {
        "chain": [t.name for t in transforms],
        "perturbation": None
        if perturbation.type is None
        else {"type": str(perturbation.type), "rate": perturbation.rate},
        "restore": trace.restore,
        "rows": len(chain.status),
        "not_ok": int((chain.status != OK).sum()),
        "dropped": int((~chain.active).sum()),
        "stages": chain.stages,
        "requests": dict(llm.counts),
    }


def check_failed_fraction(chain: Chain, trace: TraceConfig) -> None:
    bad = chain.status[chain.status != OK]
    if not len(chain.status) or len(bad) / len(chain.status) <= trace.max_failed_fraction:
        return
    counts = Counter(
        f"{stage} {kind(s)}" for stage, s in zip(chain.failed_stage[bad.index], bad, strict=True)
    )
    example = bad.index[0]
    raise UserError(
        f"curation.trace: {len(bad)} of {len(chain.status)} selected rows were not transformed "
        f"({', '.join(f'{k}: {n}' for k, n in sorted(counts.items()))}), above "
        f"curation.trace.max_failed_fraction={trace.max_failed_fraction}; e.g. row_id "
        f"{chain.frame.at[example, 'row_id']}: {str(bad[example])[:300]!r}. Finished requests are cached: "
        "fix the endpoint or the transform and rerun, or raise max_failed_fraction"
    )
