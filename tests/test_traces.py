"""Reasoning-trace transforms, perturbations and restore (meds1/curation/traces).

The LLM is a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/canned_llm.py) reached through the
`openai` backend; its replies are canned, shaped like Gemini's, preamble and all.
"""

from __future__ import annotations

import copy
import socket
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from meds1.config.compose import compose
from meds1.config.schema import PerturbationConfig, PerturbationType
from meds1.curation.traces import perturb
from meds1.curation.traces.chain import transform_traces
from meds1.curation.traces.spec import (
    apply_post,
    failed_check,
    load_perturbation_spec,
    load_transform,
    shipped_transforms,
    trace_files,
)
from meds1.errors import OutputConflictError, UserError
from meds1.stages import curate
from meds1.store.identity import config_hash
from tests.canned_llm import CannedLLMServer, canned_reply
from tests.conftest import REPO

DEMO = REPO / "meds1/data/demo_sft.jsonl"
STEP_PROMPT = "clear, step-by-step format"


@pytest.fixture(scope="module")
def server():
    with CannedLLMServer() as running:
        yield running


@pytest.fixture
def demo_rows() -> pd.DataFrame:
    rows = pd.read_json(DEMO, lines=True).dropna().head(6).reset_index(drop=True)
    rows.insert(0, "row_id", range(100, 100 + len(rows)))
    return rows


@pytest.fixture
def trace_config(tmp_path, server):
    """compose() for random-1k with the trace LLM at `server`, outputs and cache under this test."""

    def make(*overrides: str, base_url: str | None = None):
        return compose(
            [
                "experiment=random-1k",
                f"curation.trace.llm.inference.base_url={base_url or server.base_url}",
                "curation.trace.llm.inference.api_key=unused",
                "curation.trace.llm.inference.max_retries=0",
                f"paths.root={tmp_path / 'out'}",
                f"paths.cache={tmp_path / 'cache'}",
                *overrides,
            ]
        )

    return make


def reply_through(transform: str, call: str, reply: str, **inputs: str) -> tuple[str, str | None]:
    """A reply after the call's post-processing, and the first check it fails (None: it passes)."""
    spec = (
        load_transform(transform) if transform in shipped_transforms() else load_perturbation_spec(transform)
    )
    rules = next(c for c in spec.calls if c.name == call)
    text = apply_post(rules.post, reply)
    return text, failed_check(rules.checks, text, inputs)


# --- post-processing and checks on constructed replies ---------------------------------------------------


@pytest.mark.parametrize(
    ("transform", "call", "reply", "expected", "rejected"),
    [
        (
            "step",
            "trace",
            "Sure! Here it is:\n## Step 1: A\nx\n## Step 2: B\ny",
            "## Step 1: A\nx\n## Step 2: B\ny",
            None,
        ),
        (
            "step",
            "trace",
            "I can't produce steps for this.",
            "I can't produce steps for this.",
            "min_steps=1",
        ),
        ("step", "trace", "", "", "nonempty"),
        ("step", "trace", "### Step 1: A\nx", "## Step 1: A\nx", None),  # clipped inside "###"
        ("1-sentence", "trace", "  The signs\n point   to X  ", "The signs point to X.", None),
        ("1-sentence", "trace", "Word " * 200, ("Word " * 200)[:697] + "...", None),
        ("1-sentence", "trace", "Done.", "Done.", None),
        ("list", "trace", "Facts:\n- a\nb\n\n  - c  ", "- a\n- b\n- c", None),
        ("list", "trace", "no bullets at all", "- no bullets at all", None),  # med-s1: every line gets one
        ("list", "trace", "Well-known facts\n- a", "-known facts\n- a", None),  # med-s1 cut at the first '-'
        (
            "step-evidence",
            "trace",
            "Hi\n## Step 1: A\n# Evidence: case",
            "## Step 1: A\n\n### Evidence: case",
            None,
        ),
        # med-s1 clips to the line of the first arrow (the question before it goes too)
        ("decision-tree", "trace", "Tree:\nFever?\n  --> yes\n  ->no", " -> yes -> no", None),
        ("decision-tree", "trace", "Fever? -> yes", "Fever? -> yes", None),
        ("qa", "trace", "Here:\nQ: why?\n   A:  because\n  Q:  so?", "Q: why?\nA: because\nQ: so?", None),
        (
            "socratic",
            "trace",
            "Dialogue\nCardiologist: hi\n  Internist:   yes",
            "Cardiologist: hi\nInternist: yes",
            None,
        ),
        ("note", "format_type", " soapie\n", "SOAPIE", None),
        ("note", "format_type", "The best format is SOAP.", "SOAP", None),  # not a bare name: the default
        ("note", "format_type", "", "SOAP", None),
        ("note", "trace", "Note:\n## Subjective\n# Plan\n\n\n\nx", "## Subjective\n## Plan\n\nx", None),
        (
            "cot",
            "trace",
            "\nOkay, let's go.\nHere is my reasoning:\nHmm, fever.\nOkay then.",
            "Hmm, fever.\nOkay then.",
            None,
        ),
        ("cot", "trace", "Let me think.\nReasoning follows.", "", "nonempty"),  # all preamble
        ("collapse_consecutive", "merged", "## Step 1+2: Merged\ntext", "Merged\ntext", None),
        ("collapse_consecutive", "merged", "## Step 1+2:", "", "nonempty"),
    ],
)
def test_post_processing_and_checks_on_constructed_replies(transform, call, reply, expected, rejected):
    assert reply_through(transform, call, reply, cot="") == (expected, rejected)


@pytest.mark.parametrize(
    ("reply", "rejected"),
    [
        ("Sure:\n## Step 1: A\nlonger text here\n## Step 2: B\nand more", None),
        ("## Step 1: only one step, but long enough", "min_steps=2"),
        ("short", "min_chars=10"),
        ("## Step 1: A\n## Step 2: B", "longer_than=cot"),  # not longer than the perturbed input
    ],
)
def test_restore_checks_at_least_two_steps_and_longer_than_its_input(reply, rejected):
    _, failed = reply_through("restore", "restored", reply, cot="## Step 1: A\n\n## Step 2: Bx")
    assert failed == rejected


def run_writes(transform: str, reply: str) -> dict:
    spec = (
        load_transform(transform) if transform in shipped_transforms() else load_perturbation_spec(transform)
    )
    out = {}
    for column, write in spec.writes.items():
        text = apply_post(write.post, reply)
        out[column] = (text, failed_check(write.checks, text, {}))
    return out


def test_nejmcr_qa_parses_a_multi_line_question_and_rejects_unlabelled_replies():
    reply = "Question: A 50-year-old man.\nHis labs follow.\nAnswer: Sarcoidosis"
    assert run_writes("nejmcr-qa", reply) == {
        "Question": ("A 50-year-old man.\nHis labs follow.", None),
        "Response": ("Sarcoidosis", None),
    }
    bold = run_writes("nejmcr-qa", "**Question:** A man.\n**Answer:** X")  # med-s1 did not read these either
    assert bold["Question"] == ("", "nonempty")


def test_wrong_answer_reply_gives_the_last_step_and_the_response():
    parsed = run_writes("answer", "STEP: Conclusion\nIt is gout.\nRESPONSE: Gout.")
    assert parsed == {"last_step": ("Conclusion\nIt is gout.", None), "Response": ("Gout.", None)}
    assert run_writes("answer", "I will not do that.")["last_step"] == ("", "nonempty")


# --- perturbations: exact, on constructed step traces -----------------------------------------------------


def steps_of(k: int) -> list[str]:
    return [f"Title {i}\nbody {i}" for i in range(1, k + 1)]


def test_parse_and_renumber_steps_as_med_s1():
    trace = "Intro\n## Step 1: A\nx\n\n##Step 2:B\n## Step 3:   \n## Step 7: C"
    assert perturb.parse_steps(trace) == ["Intro", "A\nx", "B", "C"]  # text before step 1 becomes a step
    assert perturb.renumber(["A\nx", "B"]) == "## Step 1: A\nx\n\n## Step 2: B"


@pytest.mark.parametrize("k", [1, 2, 3, 6, 10])
@pytest.mark.parametrize("rate", [0.33, 0.66, 1.0])
def test_skip_drops_int_rate_k_steps_keeping_one_and_the_order(k, rate):
    kept = perturb.skip(steps_of(k), rate, np.random.default_rng(0))
    assert len(kept) == k - min(int(rate * k), k - 1)
    assert kept == [s for s in steps_of(k) if s in kept]  # order preserved


@pytest.mark.parametrize("k", [3, 6, 10])
@pytest.mark.parametrize("rate", [0.33, 0.66, 1.0])
def test_shuffle_moves_only_int_rate_k_steps(k, rate):
    out = perturb.shuffle(steps_of(k), rate, np.random.default_rng(1))
    assert sorted(out) == sorted(steps_of(k))
    assert sum(a != b for a, b in zip(out, steps_of(k), strict=True)) <= int(rate * k)


@pytest.mark.parametrize("rate", [0.33, 0.66, 1.0])
def test_add_irrelevant_inserts_int_rate_k_steps_from_other_rows(rate):
    own = steps_of(6)
    pool = [(0, s) for s in own] + [(1, "Other A"), (2, "Other B")]
    out = perturb.add_irrelevant(own, rate, np.random.default_rng(2), pool, owner=0)
    added = [s for s in out if s not in own]
    assert len(out) == 6 + int(rate * 6) and set(added) <= {"Other A", "Other B"}
    assert [s for s in out if s in own] == own


@pytest.mark.parametrize(
    ("k", "rate", "pairs"),
    [(7, 0.33, 2), (7, 0.66, 3), (10, 0.33, 3), (2, 0.33, 0), (2, 1.0, 1), (7, 1.0, 3), (8, 1.0, 4)],
)
def test_collapse_picks_non_overlapping_pairs(k, rate, pairs):
    chosen = perturb.collapse_pairs(k, rate, np.random.default_rng(3))
    assert len(chosen) <= pairs if rate < 1 else len(chosen) == pairs
    assert all(abs(a - b) > 1 for a in chosen for b in chosen if a != b)
    if rate >= 1:
        assert chosen == list(range(0, k - 1, 2))  # every step merged with a neighbour


def test_collapse_at_rate_1_merges_every_pair_and_med_s1s_option_keeps_only_the_first_merge():
    steps = steps_of(5)
    rng = np.random.default_rng(0)
    pairs = perturb.collapse_pairs(5, 1.0, rng)
    merged = perturb.merge(steps, {p: f"M{p}" for p in pairs})
    assert merged == ["M0", "M2", "Title 5\nbody 5"]
    overlapping = perturb.collapse_pairs(5, 1.0, rng, overlapping=True)
    assert perturb.merge(steps, {p: f"M{p}" for p in overlapping}) == ["M0"]  # med-s1's result


def test_perturbations_are_seeded_per_row():
    draw = [perturb.shuffle(steps_of(8), 1.0, perturb.row_rng(42, row)) for row in (7, 7, 8)]
    assert draw[0] == draw[1] and draw[0] != draw[2]
    assert perturb.row_rng(1, 7).random() != perturb.row_rng(2, 7).random()


@pytest.mark.parametrize("rate", [0.33, 0.66, 1.0])
def test_answer_perturbs_int_rate_n_rows(rate):
    rows = list(range(50, 80))
    chosen = perturb.answer_rows(rows, rate, seed=0)
    assert len(chosen) == int(rate * 30) and chosen <= set(rows)
    assert chosen == perturb.answer_rows(list(reversed(rows)), rate, seed=0)  # not the frame's order


# --- end to end through the openai backend ------------------------------------------------------------


EXPECTED = {  # what each shipped transform's canned reply becomes
    "step": lambda t: t.startswith("## Step 1: ") and perturb.parse_steps(t) and "Here is" not in t,
    "cot-step": lambda t: t.startswith("## Step 1: Point 1\nHmm"),
    "step-evidence": lambda t: "\n\n### Evidence:" in t and t.startswith("## Step 1:"),
    "1-sentence": lambda t: t == "The findings, taken together, point to the answer given.",
    "list": lambda t: all(line.startswith("-") for line in t.split("\n")),  # med-s1: "-" cuts anywhere
    "markdown": lambda t: t.startswith("## Findings"),
    "note": lambda t: (
        t.startswith("## Identification\nA clinician.\n## Situation\n\n") and "No reasoning" not in t
    ),
    "decision-tree": lambda t: t == " -> yes: next test -> no: stop",
    "qa": lambda t: t.startswith("Q: What is found?\nA: "),
    "socratic": lambda t: t.startswith("Cardiologist: What do we see?\nInternist: "),
    "cot": lambda t: t == "Hmm, the patient has these findings.\nSo that is it.",
    "none": lambda t: t == "",
    "nejmcr-qa": lambda t: len(t) > 100,  # the trace is unchanged: Question and Response change
    "nejmcr-clean": lambda t: t.startswith("Hmm"),
    "nejmcr-reason": lambda t: t.startswith("The presentation"),
    "nejmcr-transform": lambda t: t.startswith("The presentation"),
    "nejmcr-reason-extraction": lambda t: t.startswith("The presentation"),
    "nejmcr-reason-structure": lambda t: t.startswith("The presentation"),
    "nejmcr-reason-depth": lambda t: t.startswith("The presentation"),
    "nejmcr-reason-purity": lambda t: t.startswith("Hmm"),  # reasoning, then the clean prompt
    "nejmcr-reason-style": lambda t: t.startswith("Hmm"),
}


def test_every_shipped_transform_is_tested():
    assert set(EXPECTED) == set(shipped_transforms())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_shipped_transform_end_to_end(name, demo_rows, trace_config, server):
    cfg = trace_config(f"curation.trace.transforms=[{name}]")
    result = transform_traces(demo_rows, cfg)
    records = result.records
    assert (records["trace_status"] == "ok").all(), records["trace_status"].tolist()
    assert records["trace_original"].tolist() == demo_rows["Complex_CoT"].tolist()
    assert all(EXPECTED[name](t) for t in result.curated["Complex_CoT"]), result.curated["Complex_CoT"][0]
    if name == "nejmcr-qa":
        assert result.curated["Response"].eq("The diagnosis").all()
        assert records["trace_question"].str.startswith("A patient presents").all()
    chain = load_transform(name).chain or [name]
    assert result.stats["stages"] == {f"trace_{t}": {"ok": len(demo_rows)} for t in chain}


def test_requests_carry_med_s1s_sampling_and_token_caps(demo_rows, trace_config):
    with CannedLLMServer() as own:
        transform_traces(
            demo_rows.head(1), trace_config("curation.trace.transforms=[note]", base_url=own.base_url)
        )
    selector, note = own.bodies
    assert (selector["temperature"], selector["top_p"], selector["max_tokens"]) == (0.1, 0.95, 10)
    assert note["max_tokens"] == 4096 and note["messages"][0]["role"] == "user" and len(note["messages"]) == 1
    assert "into a ISBAR clinical note" in note["messages"][0]["content"]  # the selector's choice
    assert "## Identification\n- Who you are" in note["messages"][0]["content"]  # its section skeleton


SWEEP = [
    (t, r)
    for t in ("skip", "shuffle", "add_irrelevant", "collapse_consecutive", "answer")
    for r in (0.33, 0.66, 1.0)
]


@pytest.mark.slow
def test_a_15_point_sweep_asks_for_the_step_rewrites_once_and_a_rerun_asks_nothing(demo_rows, trace_config):
    with CannedLLMServer() as own:
        base = trace_config("curation.trace.transforms=[step]", base_url=own.base_url)

        def sweep() -> list[pd.DataFrame]:
            results = []
            for kind, rate in SWEEP:  # what compose makes of each point (composing 15 takes long)
                cfg = copy.deepcopy(base)
                cfg.curation.trace.perturbation = PerturbationConfig(type=PerturbationType(kind), rate=rate)
                results.append(transform_traces(demo_rows, cfg).records)
            return results

        first = sweep()
        asked = Counter("step" if STEP_PROMPT in p else "perturbation" for p in own.prompts)
        assert asked["step"] == len(demo_rows)
        assert asked["perturbation"] > 0
        before = own.requests
        second = sweep()
        assert own.requests == before  # everything cached, collapse merges and wrong answers included
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)  # and reproducible: same seed, same perturbations
    skip_100 = first[SWEEP.index(("skip", 1.0))]
    assert (skip_100["trace_perturbed"].map(perturb.parse_steps).map(len) == 1).all()


@pytest.mark.slow
def test_answer_makes_the_response_wrong_unless_med_s1s_option(demo_rows, trace_config):
    base = ["curation.trace.transforms=[step]", "curation.trace.perturbation.type=answer"]
    fixed = transform_traces(demo_rows, trace_config(*base, "curation.trace.perturbation.rate=0.5"))
    changed = fixed.curated["Response"] != demo_rows["Response"]
    assert changed.sum() == 3 and fixed.curated.loc[changed, "Response"].eq("A viral infection.").all()
    assert (
        fixed.curated.loc[changed, "Complex_CoT"]
        .str.endswith("Conclusion\nTherefore this is a viral infection.")
        .all()
    )
    kept = transform_traces(
        demo_rows,
        trace_config(
            *base,
            "curation.trace.perturbation.rate=0.5",
            "curation.trace.perturbation.answer_keeps_response=true",
        ),
    )
    assert kept.curated["Response"].tolist() == demo_rows["Response"].tolist()
    assert kept.curated["Complex_CoT"].tolist() == fixed.curated["Complex_CoT"].tolist()


@pytest.mark.slow
def test_a_rejected_restore_keeps_the_perturbed_trace_and_is_recorded(demo_rows, trace_config):
    def responder(prompt: str) -> str:
        if "improve this low-quality" in prompt:
            return "## Step 1: too short"  # fails min_steps
        return canned_reply(prompt)

    base = [
        "curation.trace.transforms=[step]",
        "curation.trace.perturbation.type=skip",
        "curation.trace.restore=true",
    ]
    with CannedLLMServer(responder) as own:
        kept = transform_traces(
            demo_rows, trace_config(*base, "curation.trace.max_failed_fraction=1", base_url=own.base_url)
        )
        old = transform_traces(
            demo_rows,
            trace_config(
                *base,
                "curation.trace.max_failed_fraction=1",
                "curation.trace.restore_fallback=unperturbed",
                base_url=own.base_url,
            ),
        )
    assert kept.records["trace_restored_status"].eq("rejected: restored: min_steps=2").all()
    assert kept.records["trace_status"].eq("rejected: restored: min_steps=2").all()
    assert kept.curated["Complex_CoT"].tolist() == kept.records["trace_perturbed"].tolist()
    assert old.curated["Complex_CoT"].tolist() == old.records["trace_step"].tolist()  # med-s1's fallback


@pytest.mark.slow
def test_failed_requests_are_recorded_kept_or_dropped_and_too_many_stop_the_stage(demo_rows, trace_config):
    failing = set(demo_rows["Complex_CoT"][-2:].str[:80])  # not the first: the pre-flight's row answers

    def responder(prompt: str) -> str | None:
        return None if any(f in prompt for f in failing) else canned_reply(prompt)

    with CannedLLMServer(responder) as own:
        cfg = trace_config("curation.trace.transforms=[step]", base_url=own.base_url)
        with pytest.raises(
            UserError, match=r"2 of 6 selected rows were not transformed \(trace_step failed: 2\)"
        ):
            transform_traces(demo_rows, cfg)
        loose = ["curation.trace.transforms=[step]", "curation.trace.max_failed_fraction=0.5"]
        kept = transform_traces(demo_rows, trace_config(*loose, base_url=own.base_url))
        dropped = transform_traces(
            demo_rows, trace_config(*loose, "curation.trace.on_failure=drop", base_url=own.base_url)
        )
        sent = own.requests
    assert kept.records["trace_status"].str.match(r"failed: .*HTTP 500").sum() == 2
    assert kept.curated["Complex_CoT"][-2:].tolist() == demo_rows["Complex_CoT"][-2:].tolist()  # previous
    assert len(dropped.curated) == 4 and list(dropped.dropped) == ["trace_step_failed"]
    assert sent == 6 + 2 + 2  # a failed request is not cached: each run asks for it again
    assert kept.stats["requests"]["preflight"] == 0  # retrying a row's failure is no pre-flight


# --- the pre-flight: the chain's first request goes alone ------------------------------------------------


def test_the_first_request_goes_alone_once_and_a_cached_rerun_sends_none(demo_rows, trace_config):
    with CannedLLMServer() as own:
        alone = []

        def first_alone(prompt: str) -> str:
            if not alone:
                time.sleep(0.3)  # the rest of the batch would arrive meanwhile
                alone.append(own.requests == 1)
            return canned_reply(prompt)

        own.responder = first_alone
        cfg = trace_config("curation.trace.transforms=[step]", base_url=own.base_url)
        first = transform_traces(demo_rows, cfg)
        assert alone == [True] and own.requests == len(demo_rows)  # the pre-flight's reply is reused
        assert demo_rows["Complex_CoT"][0][:80] in own.prompts[0]  # the first row's request
        again = transform_traces(demo_rows, cfg)
        more = transform_traces(demo_rows.assign(row_id=demo_rows["row_id"] + 1), cfg)  # same texts
        assert own.requests == len(demo_rows)
    assert first.stats["requests"] == {"requests": 6, "reused": 0, "sent": 6, "preflight": 1}
    assert (
        again.stats["requests"]
        == more.stats["requests"]
        == {
            "requests": 6,
            "reused": 6,
            "sent": 0,
            "preflight": 0,
        }
    )
    assert (first.records["trace_status"] == "ok").all()


def test_a_dead_trace_llm_stops_at_its_first_request(demo_rows, trace_config):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(
        UserError,
        match=r"^the first request to the trace LLM failed: failed after 1 attempts: "
        r"ClientConnectorError: Cannot connect.*; "
        r"check its endpoint \(curation.trace.llm.inference.base_url\), api_key and model name$",
    ):
        transform_traces(demo_rows, trace_config("curation.trace.transforms=[step]", base_url=dead))


def test_a_trace_llm_answering_nonsense_stops_at_its_first_request_unless_accepted(demo_rows, trace_config):
    with CannedLLMServer(lambda prompt: "I cannot help with that.") as own:
        cfg = trace_config("curation.trace.transforms=[step]", base_url=own.base_url)
        with pytest.raises(
            UserError,
            match=r"^the trace LLM's reply to its first request \(step: trace\) is unusable: min_steps=1: "
            r"'I cannot help with that.'; check curation.trace.llm \(model name, endpoint\) and the "
            r"transform's prompt, or accept untransformed rows: curation.trace.max_failed_fraction=1$",
        ):
            transform_traces(demo_rows, cfg)
        assert own.requests == 1
        loose = trace_config(
            "curation.trace.transforms=[step]", "curation.trace.max_failed_fraction=1", base_url=own.base_url
        )
        result = transform_traces(demo_rows, loose)
        assert own.requests == len(demo_rows)  # the rejected reply was cached: the rerun reuses it
    assert result.records["trace_status"].eq("rejected: trace: min_steps=1").all()
    assert result.stats["requests"]["preflight"] == 0  # the endpoint answered under this key: none owed


def test_a_user_transform_from_a_yaml_file(tmp_path, demo_rows, trace_config):
    spec = tmp_path / "shout.yaml"
    spec.write_text(
        """name: shout
calls:
  - name: out
    inputs: {cot: Complex_CoT}
    prompt: |
      Put this in a clear, step-by-step format. Text to transform:
      {cot}
      IMPORTANT: be loud.
    post: [{clip_to: "## Step 1:"}, upper]
    checks: [nonempty, {matches: "STEP 2"}]
writes: {Complex_CoT: out}
"""
    )
    result = transform_traces(demo_rows, trace_config(f"curation.trace.transforms=[{spec}]"))
    assert result.curated["Complex_CoT"].str.startswith("## STEP 1: POINT 1").all()


SHOUT = """name: shout
calls:
  - name: out
    inputs: {cot: Complex_CoT}
    prompt: |
      Put this in a clear, step-by-step format. Text to transform:
      {cot}
    post: [{clip_to: "## Step 1:"}, WORDS]
writes: {Complex_CoT: out}
"""


def test_an_edited_transform_file_changes_every_later_stages_config_hash(tmp_path, trace_config):
    spec = tmp_path / "shout.yaml"
    spec.write_text(SHOUT.replace("WORDS", "upper"))
    cfg = trace_config(f"curation.trace.transforms=[step,{spec}]", "curation.trace.restore=true")
    before = {stage: config_hash(cfg, stage) for stage in ("curate", "train")}
    assert trace_files(cfg.curation.trace).keys() == {"step", str(spec), "perturbation/restore"}
    assert {stage: config_hash(cfg, stage) for stage in before} == before  # the same text, the same hash
    spec.write_text(SHOUT.replace("WORDS", "lower"))
    after = {stage: config_hash(cfg, stage) for stage in before}
    assert all(after[stage] != before[stage] for stage in before)
    assert trace_files(trace_config().curation.trace) == {}  # no chain: the hashes from before stay


@pytest.mark.slow
def test_curate_never_reuses_an_output_made_with_an_older_transform_file(tmp_path, make_config, server):
    spec = tmp_path / "shout.yaml"
    spec.write_text(SHOUT.replace("WORDS", "upper"))
    overrides = curate_overrides(server, f"curation.trace.transforms=[{spec}]")
    first = curate.run(make_config(*overrides))
    assert curate.run(make_config(*overrides)) == first  # the same text: the output is reused
    loud = pd.read_parquet(first["curated_path"])
    spec.write_text(SHOUT.replace("WORDS", "lower"))
    edited = rf"was made from another version of curation.trace.transforms\[{spec}\] \({spec}\)"
    with pytest.raises(OutputConflictError, match=edited):
        curate.run(make_config(*overrides))
    quiet = pd.read_parquet(curate.run(make_config(*overrides, "force=true"))["curated_path"])
    assert loud["Complex_CoT"].str.startswith("## STEP 1:").all()
    assert quiet["Complex_CoT"].str.startswith("## step 1:").all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["curation.trace.transforms=[stepz]"],
            "unknown transform 'stepz'; valid: 1-sentence, cot, cot-step",
        ),
        (
            ["curation.trace.perturbation.type=skip"],
            "does not end in one: end curation.trace.transforms with step",
        ),
        (
            ["curation.trace.transforms=[step,list]", "curation.trace.perturbation.type=shuffle"],
            r"chain \[step, list\]",
        ),
        (
            [
                "curation.trace.transforms=[step]",
                "curation.trace.perturbation.type=skip",
                "curation.trace.perturbation.rate=0",
            ],
            r"rate=0.0: must be in \(0, 1\]",
        ),
        (
            [
                "curation.trace.transforms=[step]",
                "curation.trace.perturbation.type=skip",
                "curation.trace.perturbation.rate=1.5",
            ],
            r"rate=1.5: must be in \(0, 1\]",
        ),
        (["curation.trace.max_failed_fraction=2"], r"max_failed_fraction=2.0: must be in \[0, 1\]"),
    ],
)
def test_bad_trace_settings_fail_at_compose_in_one_line(overrides, message, trace_config):
    with pytest.raises(UserError, match=message) as error:
        trace_config(*overrides)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "name: x\ncalls:\n  - name: a\n    inputs: {cot: Complex_CoT}\n    prompt: '{cot} {diagnosis}'\n",
            r"names \{diagnosis\}, which is not an input",
        ),
        ("name: x\ncalls:\n  - name: a\n    prompt: hi\n    post: [{clip_too: x}]\n", "unknown rule"),
        (
            "name: x\ncalls:\n  - name: a\n    prompt: hi\n    post: [{replace: x}]\n",
            r"replace takes \[regex, replacement\]",
        ),
        (
            "name: x\ncalls:\n  - name: a\n    prompt: hi\n    checks: [{matches: '(('}]\n",
            "not a regular expression",
        ),
        (
            "name: x\ncalls:\n  - name: a\n    inputs: {c: $b}\n    prompt: '{c}'\n",
            r"reads \$b, which is not an earlier call",
        ),
        ("name: x\nwrites: {Complex_CoT: nothing}\n", "'nothing' is not a call"),
    ],
)
def test_bad_transform_files_fail_at_compose_in_one_line(tmp_path, yaml_text, message, trace_config):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml_text)
    with pytest.raises(UserError, match=message) as error:
        trace_config(f"curation.trace.transforms=[{spec}]")
    assert "\n" not in str(error.value)


def test_a_transform_reading_a_column_the_source_lacks_fails_before_any_request(
    tmp_path, demo_rows, trace_config
):
    spec = tmp_path / "dx.yaml"
    spec.write_text(
        "name: dx\ncalls:\n  - name: a\n    inputs: {d: diagnosis}\n    prompt: '{d}'\n"
        "writes: {Complex_CoT: a}\n"
    )
    with CannedLLMServer(lambda prompt: f"{prompt}, surely") as own:
        cfg = trace_config(f"curation.trace.transforms=[{spec}]", base_url=own.base_url)
        with pytest.raises(
            UserError, match="reads diagnosis, which the source lacks; source columns: row_id, Question"
        ):
            transform_traces(demo_rows, cfg)
        assert own.requests == 0
        out = transform_traces(demo_rows.assign(diagnosis="Gout"), cfg)
    assert out.curated["Complex_CoT"].eq("Gout, surely").all()


# --- the curate stage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("transforms", "gpus"), [("[step]", 2), ("[none]", 0), ("[]", 0)])
def test_curate_asks_for_the_gpus_of_a_local_trace_llm(transforms, gpus, make_config):
    from meds1.curation.resources import curate_resources

    cfg = make_config(
        "experiment=random-1k",
        f"curation.trace.transforms={transforms}",
        "curation.trace.llm.inference.backend=vllm",
        "curation.trace.llm.inference.resources.gpus=2",
    )
    assert curate_resources(cfg).gpus == gpus


def curate_overrides(server, *extra: str) -> list[str]:
    return [
        "experiment=demo",
        "curation.n_samples=5",
        f"curation.trace.llm.inference.base_url={server.base_url}",
        "curation.trace.llm.inference.api_key=unused",
        *extra,
    ]


@pytest.mark.slow
def test_curate_records_every_stage_per_row_and_trains_on_the_final_trace(make_config, server):
    cfg = make_config(
        *curate_overrides(
            server,
            "curation.trace.transforms=[step]",
            "curation.trace.perturbation.type=shuffle",
            "curation.trace.restore=true",
        )
    )
    record = curate.run(cfg)
    stats = record["stats"]["traces"]
    assert stats["chain"] == ["step"] and stats["perturbation"] == {"type": "shuffle", "rate": 1.0}
    assert stats["stages"] == {
        "trace_step": {"ok": 5},
        "trace_perturbed": {"ok": 5},
        "trace_restored": {"ok": 5},
    }
    filtered = pd.read_parquet(record["filtered_path"])
    selected = filtered[filtered["trace_status"].notna()]
    assert len(selected) == 5 and selected["trace_status"].eq("ok").all()
    for column in ("trace_original", "trace_step", "trace_perturbed", "trace_restored"):
        assert selected[column].str.len().gt(0).all(), column
    assert filtered.loc[filtered["trace_status"].isna(), "trace_step"].isna().all()  # unselected rows: none
    curated = pd.read_parquet(record["curated_path"])
    assert (
        curated["Complex_CoT"].tolist()
        == selected.set_index("row_id").loc[curated["row_id"], "trace_restored"].tolist()
    )
    from datasets import load_from_disk

    texts = load_from_disk(record["dataset_path"])["text"]
    assert all("## Thinking\n\n## Step 1:" in t for t in texts)


@pytest.mark.slow
def test_curate_without_a_trace_trains_on_the_answer_alone(make_config, server):
    from datasets import load_from_disk

    record = curate.run(make_config(*curate_overrides(server, "curation.trace.transforms=[none]")))
    texts = load_from_disk(record["dataset_path"])["text"]
    assert texts and all("## Final Response\n\n" in t and "## Thinking" not in t for t in texts)
    assert record["stats"]["traces"]["requests"] == {"requests": 0, "reused": 0, "sent": 0, "preflight": 0}


@pytest.mark.slow
def test_a_cached_sweep_sends_nothing_and_every_request_sent_is_recorded(
    tmp_path, model_cache, tiny_model_dir
):
    """Points of a perturbation sweep share their step rewrites. The first point's pre-flight goes before
    annotation, for a source row that may not be selected; the later points find the endpoint answered
    under the key, owe no pre-flight and send nothing (before, each sent one request for a row outside
    the selection that no record counted). Every request the server saw is in some point's record."""
    rows = pd.read_json(DEMO, lines=True).dropna().head(20)
    rows.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    cache = tmp_path / "cache"  # an annotation cache of its own (the endpoint never answered there)
    cache.mkdir()
    (cache / "models").symlink_to(model_cache / "models")  # the session's tiny model
    with CannedLLMServer() as own:
        records = []
        for kind in ("skip", "shuffle", "add_irrelevant"):
            overrides = curate_overrides(
                own,
                f"curation.source.path={tmp_path / 'rows.jsonl'}",
                "curation.trace.transforms=[step]",
                f"curation.trace.perturbation.type={kind}",
            )
            before = own.requests
            paths = [f"paths.root={tmp_path}", f"paths.cache={cache}"]
            records.append(curate.run(compose([*overrides, *paths])))
            sent = records[-1]["stats"]["traces"]["requests"]["sent"]
            assert own.requests - before == sent, kind
    first, *later = (record["stats"] for record in records)
    assert first["preflights"] == {"trace LLM": 1} and first["traces"]["requests"]["preflight"] == 1
    assert first["traces"]["requests"]["sent"] in (5, 6)  # 6 when the pre-flight's row was not selected
    for stats in later:
        assert stats["preflights"] == {}
        assert stats["traces"]["requests"] == {"requests": 5, "reused": 5, "sent": 0, "preflight": 0}


def test_the_preflight_picks_a_request_never_asked_and_retries_a_dead_endpoint_alone(tmp_path):
    """A failed request is no pre-flight while the endpoint answered others under the key (a row's own
    failure would stop every rerun), but is when every request under it failed (the endpoint was dead)."""
    from meds1.curation.annotators import TRACE_LLM, annotators
    from meds1.curation.traces.requests import TraceLLM, request_id

    trace = annotators(compose(["experiment=random-1k", "curation.trace.transforms=[step]"]))[TRACE_LLM]
    llm = TraceLLM(trace, str(tmp_path), seed=0, chunk_rows=10)
    cache = llm.cache("template", None)
    prompts = ["first", "second"]

    def cached(replies: dict[str, str | None]) -> None:
        ids = [request_id(p) for p in replies]
        errors = [None if reply is not None else "HTTP 500" for reply in replies.values()]
        texts = [reply or "" for reply in replies.values()]
        cache.write_chunk(
            pd.DataFrame({"row_id": ids, "reply": texts, "error": errors, "finish_reason": None})
        )

    assert llm.first_unanswered(prompts, "template", None) == "first"  # nothing asked yet
    cached({"first": None})
    assert llm.first_unanswered(prompts, "template", None) == "second"  # never asked comes first
    cached({"second": None})
    assert llm.first_unanswered(prompts, "template", None) == "first"  # all failed: the endpoint was dead
    cached({"second": "## Step 1: ok"})
    assert llm.first_unanswered(prompts, "template", None) is None  # it answered: "first" failed on its own
