"""When an annotator fails, curate says so: pre-flight requests, unusable-annotation limits, empty selections.

Endpoints: a scripted OpenAI-compatible server (tests/scripted_server.py) that answers nonsense or fails
for marked rows, `transformers serve` with the tiny model (real noise), and a closed port (nothing
listening). Requests are counted at the server.
"""

import dataclasses
import socket
import subprocess
import sys

import pandas as pd
import pytest

from meds1.config.compose import compose
from meds1.config.schema import InferenceConfig
from meds1.curation.cache import AnnotationCache
from meds1.curation.specialty import is_labeled_or_tried
from meds1.curation.unusable import check_usable
from meds1.errors import UserError
from meds1.stages import curate
from tests.conftest import REPO
from tests.scripted_server import ScriptedServer

DEMO = REPO / "meds1/data/demo_sft.jsonl"
ROWS = 20
JUDGE = "expert medical knowledge evaluator"  # in the judge's prompt
LABELER = "medical education expert"  # in the labeler's prompt
NONSENSE = "the the of and zebra"


def source(tmp_path, marks: dict[int, str] | None = None) -> str:
    """The first 20 complete demo rows as a source of their own; `marks` appends a marker to a row's
    question, which the scripted server reads to answer that row badly."""
    rows = pd.read_json(DEMO, lines=True).dropna().head(ROWS).reset_index(drop=True)
    rows["Question"] += f" ({tmp_path.name})"
    for row, mark in (marks or {}).items():
        rows.loc[row, "Question"] += f" {mark}"
    file = tmp_path / f"rows-{len(list(tmp_path.glob('rows-*')))}.jsonl"
    rows.to_json(file, orient="records", lines=True)
    return str(file)


def answer(path: str, prompt: str) -> str | int:
    """Base answers on /completions, verdicts and labels on /chat/completions; markers make them bad."""
    if not path.endswith("/chat/completions"):
        return 400 if "[fail-answer]" in prompt else "A short answer."
    if "[fail]" in prompt:
        return 400
    if "[nonsense]" in prompt:
        return NONSENSE
    return "The answers differ. No" if JUDGE in prompt else "Cardiology. SPECIALTY: 030"


def labeler(url: str, *extra: str) -> list[str]:
    return [
        "experiment=demo",
        "curation.n_samples=5",
        "curation.specialty.method=llm",
        f"curation.specialty.llm.inference.base_url={url}",
        "curation.specialty.llm.inference.max_retries=0",
        *extra,
    ]


def difficulty(url: str, *extra: str) -> list[str]:
    """The base model and an llm judge, both over openai."""
    return [
        "experiment=demo",
        "curation.n_samples=5",
        "curation.difficulty.enabled=true",
        "inference=openai",
        f"inference.base_url={url}",
        "inference.max_retries=0",
        "curation.difficulty.judge.method=llm",
        f"curation.difficulty.judge.llm.inference.base_url={url}",
        "curation.difficulty.judge.llm.inference.max_retries=0",
        *extra,
    ]


def trace(url: str, *extra: str) -> list[str]:
    """The step transform by the trace LLM over openai."""
    return [
        "experiment=demo",
        "curation.n_samples=5",
        "curation.trace.transforms=[step]",
        f"curation.trace.llm.inference.base_url={url}",
        "curation.trace.llm.inference.max_retries=0",
        *extra,
    ]


def closed_port_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture
def server():
    with ScriptedServer(answer) as running:
        yield running


# --- the limit itself ----------------------------------------------------------------------------


def statuses(unusable: int, total: int = ROWS) -> pd.Series:
    return pd.Series(["unparseable"] * unusable + ["labeled"] * (total - unusable))


@pytest.mark.parametrize(("unusable", "stops"), [(0, False), (1, False), (2, True)])
def test_the_limit_is_a_share_of_rows_exactly_at_it_passes(unusable, stops):
    rows = statuses(unusable)  # 1 of 20 is exactly 0.05
    replies = pd.Series([f"reply {i}\nline two" for i in range(ROWS)])
    key = "curation.specialty.max_unusable_fraction"
    if not stops:
        check_usable("specialty labeler", rows, ["labeled"], replies, key, 0.05)
        return
    with pytest.raises(UserError) as stop:
        check_usable("specialty labeler", rows, ["labeled"], replies, key, 0.05, kept_in="/cache/x")
    message = str(stop.value)
    assert "\n" not in message
    assert message == (
        "specialty labeler: 2 of 20 rows unusable (unparseable 2), above "
        "curation.specialty.max_unusable_fraction=0.05; e.g. unparseable: 'reply 0\\nline two'; "
        "all replies are kept in /cache/x; fix the specialty labeler or accept this: "
        "curation.specialty.max_unusable_fraction=0.1"
    )


def test_counts_by_reason_and_a_cut_example_of_the_commonest():
    rows = pd.Series(["failed", "unparseable", "unparseable", "ok"])
    replies = pd.Series(["HTTP 401", "x" * 500, "y", "Yes"])
    with pytest.raises(UserError, match=r"3 of 4 rows unusable \(unparseable 2, failed 1\)") as stop:
        check_usable("judge", rows, ["ok"], replies, "k", 0.5)
    assert f"e.g. unparseable: '{'x' * 160}'...;" in str(stop.value) and "k=0.75" in str(stop.value)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_limits_outside_zero_one_fail_at_compose(value):
    for key in ("difficulty", "difficulty.judge", "specialty"):
        with pytest.raises(
            UserError, match=rf"curation.{key}.max_unusable_fraction={value}: must be in \[0, 1\]"
        ):
            compose(["experiment=med-s1-1k", f"curation.{key}.max_unusable_fraction={value}"])


# --- pre-flight ----------------------------------------------------------------------------------


def test_a_dead_labeler_stops_at_its_first_request(tmp_path, make_config):
    cfg = make_config(*labeler(closed_port_url()), f"curation.source.path={source(tmp_path)}")
    with pytest.raises(
        UserError,
        match=r"^the first request to the specialty labeler failed: failed after 1 attempts: "
        r"ClientConnectorError: Cannot connect.*; "
        r"check its endpoint \(curation.specialty.llm.inference.base_url\), api_key and model name$",
    ):
        curate.run(cfg)
    assert cfg.curation.specialty.max_unusable_fraction == 0.05  # the default


@pytest.mark.parametrize(
    ("dead", "message", "sent"),
    [
        ("inference.base_url", r"^the first request to the base model failed: .*\(inference.base_url\)", 0),
        (
            "curation.difficulty.judge.llm.inference.base_url",
            r"^the first request to the judge failed: .*\(curation.difficulty.judge.llm.inference.base_url\)",
            1,  # the base model's pre-flight, which went first
        ),
    ],
)
def test_a_dead_base_model_or_judge_stops_at_its_first_request(
    dead, message, sent, server, tmp_path, make_config
):
    cfg = make_config(
        *difficulty(server.base_url, f"{dead}={closed_port_url()}"),
        f"curation.source.path={source(tmp_path)}",
    )
    with pytest.raises(UserError, match=message):
        curate.run(cfg)
    assert server.count() == sent  # nothing annotated


def test_a_dead_trace_llm_stops_curate_at_its_first_request(tmp_path, make_config):
    cfg = make_config(*trace(closed_port_url()), f"curation.source.path={source(tmp_path)}")
    with pytest.raises(
        UserError,
        match=r"^the first request to the trace LLM failed: failed after 1 attempts: "
        r"ClientConnectorError: Cannot connect.*; "
        r"check its endpoint \(curation.trace.llm.inference.base_url\), api_key and model name$",
    ):
        curate.run(cfg)


def test_a_dead_trace_llm_stops_curate_before_any_annotation(tmp_path, make_config):
    """The trace chain runs after selection, hours later; its pre-flight goes before the annotators."""
    rows = pd.read_json(source(tmp_path), lines=True)
    rows["Complex_CoT"] += f" ({tmp_path.name})"  # step requests no other test has cached
    rows.to_json(tmp_path / "traces.jsonl", orient="records", lines=True)
    with ScriptedServer(answer) as labeler_server:
        cfg = make_config(
            *trace(closed_port_url(), *labeler(labeler_server.base_url)[1:]),
            f"curation.source.path={tmp_path / 'traces.jsonl'}",
        )
        with pytest.raises(UserError, match=r"^the first request to the trace LLM failed"):
            curate.run(cfg)
        assert labeler_server.count() == 1  # the labeler's own pre-flight; no row was labeled


@pytest.mark.parametrize("status", [401, 404])  # a wrong api_key, an unknown model name
def test_an_endpoint_refusing_the_request_stops_at_the_first_one(status, tmp_path, make_config):
    with ScriptedServer(lambda path, prompt: status) as refusing:
        cfg = make_config(*labeler(refusing.base_url), f"curation.source.path={source(tmp_path)}")
        with pytest.raises(
            UserError,
            match=rf"^the first request to the specialty labeler failed: HTTP {status}: .*; check its",
        ):
            curate.run(cfg)
        assert refusing.count() == 1


def test_a_labeler_answering_nonsense_stops_at_its_first_request(tmp_path, make_config):
    with ScriptedServer(lambda path, prompt: NONSENSE) as nonsense:
        cfg = make_config(*labeler(nonsense.base_url), f"curation.source.path={source(tmp_path)}")
        with pytest.raises(
            UserError,
            match=r"^the specialty labeler's reply to its first request is unusable after 3 attempt\(s\): "
            r"'the the of and zebra'; check curation.specialty.llm \(model name, endpoint\) and its prompt, "
            r"or accept unusable replies: curation.specialty.max_unusable_fraction=1$",
        ):
            curate.run(cfg)
        assert nonsense.count() == 3  # the pre-flight's attempts, nothing more


def test_accepting_every_unusable_label_still_stops_an_empty_selection(tmp_path, make_config):
    """max_unusable_fraction=1 lets a nonsense labeler through; every row unlabeled -> dropped -> 0 rows."""
    with ScriptedServer(lambda path, prompt: NONSENSE) as nonsense:
        cfg = make_config(
            *labeler(
                nonsense.base_url,
                "curation.specialty.max_unusable_fraction=1",
                "curation.specialty.llm.attempts=1",
            ),
            f"curation.source.path={source(tmp_path)}",
        )
        with pytest.raises(
            UserError,
            match=r"^curate selected 0 of 20 rows \(removed: specialty/no_specialty_assigned 20\); "
            r"each row's reason is in .*/\.curate\.partial/filtered\.parquet; change the curation settings",
        ):
            curate.run(cfg)
        assert nonsense.count() == 1 + ROWS  # the pre-flight, then each row once


def test_n_samples_zero_selects_nothing_and_stops(tmp_path, make_config):
    cfg = make_config("experiment=demo", "curation.n_samples=0", f"curation.source.path={source(tmp_path)}")
    with pytest.raises(
        UserError, match=r"^curate selected 0 of 20 rows \(removed: selection/not_selected 20\)"
    ):
        curate.run(cfg)


def test_one_preflight_per_annotator_before_any_annotation_and_none_when_cached(
    server, tmp_path, make_config
):
    path = source(tmp_path)
    cfg = make_config(
        *difficulty(server.base_url, *labeler(server.base_url)[1:]), f"curation.source.path={path}"
    )
    stats = curate.run(cfg)["stats"]
    kinds = [
        "base" if not p.endswith("/chat/completions") else "judge" if JUDGE in q else "labeler"
        for p, q in server.requests
    ]
    assert sorted(kinds[:3]) == ["base", "judge", "labeler"]  # the three pre-flights come first
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "base": ROWS + 1,
        "judge": ROWS + 1,
        "labeler": ROWS + 1,
    }
    assert stats["verdicts"] == {"incorrect": ROWS} and stats["specialty_status"] == {"labeled": ROWS}

    server.requests.clear()
    again = curate.run(
        make_config(
            *difficulty(server.base_url, *labeler(server.base_url)[1:]),
            f"curation.source.path={path}",
            "force=true",
        )
    )
    assert server.requests == []  # everything cached: no annotator makes requests, so none is pre-flown
    assert again["stats"]["selected_rows"] == 5


def test_a_dry_run_sends_nothing(server, tmp_path):
    overrides = [
        *difficulty(server.base_url, *labeler(server.base_url)[1:], *trace(server.base_url)[1:]),
        f"curation.source.path={source(tmp_path)}",
    ]
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            *overrides,
            "stage=curate",
            "dry_run=true",
            f"paths.root={tmp_path / 'out'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing run" in result.stdout
    assert server.requests == []


def test_a_preflight_is_owed_to_an_endpoint_that_has_not_answered_under_its_key(tmp_path):
    from meds1.curation.annotators import LABELER, annotators
    from meds1.curation.llm import owed_request

    cfg = compose(["experiment=med-s1-1k"])
    endpoint = annotators(cfg)[LABELER]
    local = dataclasses.replace(endpoint, inference=InferenceConfig(backend="hf"))
    cache = AnnotationCache(tmp_path, "specialties", {"k": 1})
    answered = is_labeled_or_tried
    assert owed_request(local, cache, [3, 4], answered) is None  # a local model is not asked alone
    assert owed_request(endpoint, cache, [], answered) is None  # nothing to ask
    assert owed_request(endpoint, cache, [3, 4], answered) == 3
    cache.write_chunk(pd.DataFrame({"row_id": [3], "specialty_status": ["failed"]}))
    assert owed_request(endpoint, cache, [3, 4], answered) == 4  # never asked comes first
    cache.write_chunk(pd.DataFrame({"row_id": [4], "specialty_status": ["failed"]}))
    assert owed_request(endpoint, cache, [3, 4], answered) == 3  # every one failed: the endpoint was dead
    cache.write_chunk(pd.DataFrame({"row_id": [9], "specialty_status": ["unparseable"]}))
    assert owed_request(endpoint, cache, [3, 4], answered) is None  # it answered (if badly): none owed
