"""Run one transform's calls over rows: render each prompt, ask the trace LLM, post-process, check, write.

Each call is asked for every row still `ok`, all rows at once (so the backend's concurrency is used);
a row's outcome is `ok` with the values it writes, `rejected: <call>: <check>` (a reply that fails a
check, or an empty input) or `failed: <error>` (the request failed after the backend's retries).

A call's first request to an endpoint goes alone when a pre-flight is owed (`preflight`): a dead endpoint,
a wrong key or model name, or a reply the call's post-processing and checks reject stops the stage before
the batch is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from meds1.curation.llm import FAILED, UNPARSEABLE, check_first_reply
from meds1.curation.traces.requests import TraceLLM
from meds1.curation.traces.spec import Call, Input, Transform, apply_post, failed_check

OK = "ok"


@dataclass
class Outcome:
    status: str = OK
    values: dict[str, str] = field(default_factory=dict)  # column -> new value (when ok)
    replies: dict[str, str] = field(default_factory=dict)  # call -> post-processed reply


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _resolve(spec: Input, row: pd.Series, replies: dict[str, str], tables: dict) -> str:
    if spec.table is not None:
        return tables[spec.table][replies[spec.key[1:]]]
    if spec.source.startswith("$"):
        return replies[spec.source[1:]]
    return apply_post(spec.post, _text(row[spec.source]))


def preflight(
    transform: Transform, call: Call, prompts: list[str], inputs: list[dict], llm: TraceLLM
) -> None:
    """Send a request of `prompts` alone when a pre-flight is owed (TraceLLM.first_unanswered); stop the
    stage if it fails, or if the call rejects the reply (meds1.curation.llm.check_first_reply)."""
    prompt = llm.first_unanswered(prompts, call.prompt, call.max_new_tokens)
    if prompt is None:
        return
    request = f"{transform.name}: {call.name}"
    reply = llm.preflight(prompt, call.prompt, call.max_new_tokens, f"trace {request}")
    if reply.status != FAILED:
        bad = failed_check(call.checks, apply_post(call.post, reply.text), inputs[prompts.index(prompt)])
        if bad:
            reply = dataclasses.replace(reply, value=None, status=UNPARSEABLE, problem=bad)
    check_first_reply(llm.annotator, reply, request)


def render(
    transform: Transform, call: Call, records: list[pd.Series], outcomes: list[Outcome]
) -> tuple[list[int], list[str], list[dict]]:
    """(the rows still ok, their prompts for `call`, the inputs each prompt was filled with); a row
    with an empty input is rejected in `outcomes`."""
    live, prompts, inputs = [], [], []
    for i, row in enumerate(records):
        if outcomes[i].status != OK:
            continue
        values = {
            k: _resolve(spec, row, outcomes[i].replies, transform.tables) for k, spec in call.inputs.items()
        }
        empty = [
            k
            for k, spec in call.inputs.items()
            if spec.source and not spec.source.startswith("$") and not values[k].strip()
        ]
        if empty:
            outcomes[i].status = f"rejected: {call.name}: empty {call.inputs[empty[0]].source}"
            continue
        live.append(i)
        prompts.append(call.prompt.format(**values))
        inputs.append(values)
    return live, prompts, inputs


def run_transform(transform: Transform, rows: pd.DataFrame, llm: TraceLLM) -> list[Outcome]:
    """One Outcome per row of `rows` (which holds every column the transform's calls read)."""
    outcomes = [Outcome() for _ in range(len(rows))]
    records = [row for _, row in rows.iterrows()]
    for call in transform.calls:
        live, prompts, inputs = render(transform, call, records, outcomes)
        preflight(transform, call, prompts, inputs, llm)
        replies = llm.ask(prompts, call.prompt, call.max_new_tokens, f"trace {transform.name}: {call.name}")
        for i, values, reply in zip(live, inputs, replies, strict=True):
            if reply.status == FAILED:
                outcomes[i].status = f"failed: {reply.text}"
                continue
            text = apply_post(call.post, reply.text)
            if bad := failed_check(call.checks, text, values):
                outcomes[i].status = f"rejected: {call.name}: {bad}"
                continue
            outcomes[i].replies[call.name] = text
    for outcome in outcomes:
        if outcome.status != OK:
            continue
        for column, write in transform.writes.items():
            if write.value is not None:
                outcome.values[column] = write.value
                continue
            text = apply_post(write.post, outcome.replies[write.source])
            if bad := failed_check(write.checks, text, {}):
                outcome.status = f"rejected: {column}: {bad}"
                outcome.values = {}
                break
            outcome.values[column] = text
    return outcomes
