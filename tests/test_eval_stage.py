"""stage=eval end to end on the tiny model: outputs, repeats, budget forcing, resume after a kill,
and an OpenAI-compatible server killed mid-run."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from meds1.config.schema import BudgetForcingConfig, InferenceConfig, ModelConfig
from meds1.errors import UserError
from meds1.evaluation.budget_forcing import budget_force
from meds1.inference import Sampling, load_backend
from meds1.stages import eval as eval_stage
from meds1.store.identity import stage_slug
from meds1.store.workspace import stage_dir
from tests.conftest import REPO, start_openai_server, stop_process
from tests.proxy import CountingProxy

pytestmark = pytest.mark.slow

BASE = ["experiment=base", "model=tiny", "eval=demo", "inference=hf", "stage=eval"]
SUMMARY_KEYS = {"n", "accuracy", "accuracy_huatuo", "ci95", "unparseable", "mean_output_tokens"}


def _predictions(cfg, partial=False):
    directory = stage_dir(cfg, "eval")
    if partial:
        directory = directory.parent / ".eval.partial"
    return [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]


def test_eval_writes_predictions_metrics_table_and_registry(make_config, caplog):
    cfg = make_config(*BASE, "eval.max_per_source=3", "eval.max_new_tokens=8")
    with caplog.at_level(logging.INFO):
        record = eval_stage.run(cfg)
    predictions = _predictions(cfg)
    assert len(predictions) == 9 and len({p["id"] for p in predictions}) == 9
    for p in predictions:
        assert {"prompt", "output", "extracted", "correct", "prompt_tokens", "output_tokens"} <= set(p)
        options = "\n".join(f"{letter}. {text}" for letter, text in p["options"].items())
        assert p["prompt"] == cfg.eval.prompt.format(question=p["question"], options=options)
        assert p["run"] == 0 and p["seed"] == cfg.seed and p["error"] is None
    metrics = json.loads((stage_dir(cfg, "eval") / "metrics.json").read_text())
    assert metrics == record["metrics"]
    assert metrics["decoding"] == {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8}  # eval=demo: greedy
    transformers = metadata.version("transformers")
    assert metrics["inference"] == {
        "backend": "hf",
        "engine": f"transformers {transformers}",
        "device": "cpu",
    }
    assert set(metrics["overall"]) >= SUMMARY_KEYS and metrics["overall"]["n"] == 9
    assert set(metrics["per_source"]) == {"DemoMedMCQA", "DemoMedQA", "DemoPubMedQA"}
    assert all(set(s) >= SUMMARY_KEYS for s in metrics["per_source"].values())
    registry = json.loads((Path(cfg.paths.root) / "results.json").read_text())
    assert registry["experiments"][stage_slug(cfg, "eval")]["results"]["eval"]["metrics"] == metrics
    table = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval: ")]
    assert any("DemoPubMedQA" in line and "[" in line for line in table)
    assert any(line.split()[1] == "overall" for line in table)


def test_repeats_use_a_seed_per_run_and_report_the_spread(make_config):
    cfg = make_config(
        *BASE, "eval.max_per_source=2", "eval.max_new_tokens=6", "eval.repeats=2", "eval.temperature=1.0"
    )
    metrics = eval_stage.run(cfg)["metrics"]
    predictions = _predictions(cfg)
    assert sorted({(p["run"], p["seed"]) for p in predictions}) == [(0, 42), (1, 43)]
    assert len(predictions) == 12
    assert [p["output"] for p in predictions if p["run"] == 0] != [
        p["output"] for p in predictions if p["run"] == 1
    ]
    overall = metrics["overall"]
    assert overall["n"] == 6 and len(overall["accuracy_runs"]) == 2 and overall["accuracy_std"] >= 0
    assert metrics["seeds"] == [42, 43] and metrics["decoding"]["temperature"] == 1.0


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir):
    return load_backend(
        InferenceConfig(backend="hf", batch_size=4),
        ModelConfig(name="tiny", path=str(tiny_model_dir), dtype="float32"),
        str(tiny_model_dir),
    )


CONVERSATIONS = [
    [{"role": "user", "content": f"Question {i}: which drug causes optic neuritis?"}] for i in range(4)
]


def test_budget_forcing_caps_the_thinking_and_forces_an_answer(hf_backend):
    config = BudgetForcingConfig(enabled=True, budget=10, think_end="@@never@@", answer_max_tokens=5)
    forced = budget_force(hf_backend, CONVERSATIONS, Sampling(max_new_tokens=100), config)
    for generation in forced:
        assert generation.thinking_tokens == 10  # the model never ends its thinking: the budget does
        assert (
            generation.text.startswith("## Thinking\n\n") and "\n\n## Final Response\n\n" in generation.text
        )
        assert "Wait" not in generation.text
        assert generation.output_tokens <= 10 + 5


def test_budget_forcing_says_wait_when_the_model_stops_early(hf_backend):
    # A space ends the thinking almost at once, so the stop is overridden with "Wait" and thinking goes on.
    config = BudgetForcingConfig(enabled=True, budget=30, num_ignore=1, think_end=" ", answer_max_tokens=4)
    forced = budget_force(hf_backend, CONVERSATIONS, Sampling(max_new_tokens=100), config)
    waited = [g for g in forced if "Wait" in g.text.split("## Final Response")[0]]
    assert waited and all(g.thinking_tokens < 30 for g in waited)
    no_ignore = budget_force(
        hf_backend, CONVERSATIONS, Sampling(max_new_tokens=100), replace(config, num_ignore=0)
    )
    assert all("Wait" not in g.text for g in no_ignore)
    assert sum(g.thinking_tokens for g in no_ignore) < sum(g.thinking_tokens for g in forced)


def test_tts_eval_reports_budget_and_mean_thinking_tokens(make_config):
    cfg = make_config(
        *BASE,
        "eval.max_per_source=1",
        "eval.tts.enabled=true",
        "eval.tts.budget=8",
        "eval.tts.answer_max_tokens=4",
    )
    metrics = eval_stage.run(cfg)["metrics"]
    assert metrics["tts"]["budget"] == 8 and 0 < metrics["tts"]["mean_thinking_tokens"] <= 8
    assert all(0 < p["thinking_tokens"] <= 8 for p in _predictions(cfg))


def test_a_killed_eval_resumes_with_only_the_missing_answers(make_config, model_cache, tmp_path, caplog):
    overrides = [*BASE, "eval.max_per_source=5", "eval.max_new_tokens=16", "inference.batch_size=2"]
    cfg = make_config(*overrides)
    partial = stage_dir(cfg, "eval").parent / ".eval.partial" / "predictions.jsonl"
    process = subprocess.Popen(
        [sys.executable, "run.py", *overrides, f"paths.root={cfg.paths.root}", f"paths.cache={model_cache}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (partial.exists() and partial.read_text().count("\n") >= 4):
        assert process.poll() is None and time.monotonic() < deadline, "eval ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = len(partial.read_text().splitlines())
    assert saved < 15
    with caplog.at_level(logging.INFO):
        eval_stage.run(cfg)
    messages = [r.getMessage() for r in caplog.records]
    assert f"eval: resuming, {saved} of 15 answers already saved" in messages
    assert f"eval: run 0 (seed 42): generating {15 - saved} answers" in messages
    predictions = _predictions(cfg)
    assert len(predictions) == 15 and len({p["id"] for p in predictions}) == 15


def test_a_server_killed_mid_run_gives_recorded_failures_then_a_clean_resume(
    make_config, openai_server, tiny_model_dir, tmp_path
):
    healthy_url, model, _ = openai_server
    doomed_url, doomed = start_openai_server(tiny_model_dir, tmp_path / "doomed.log")
    try:
        with CountingProxy(doomed_url) as proxy:
            proxy.after_response = (3, doomed.kill)
            cfg = make_config(
                *BASE,
                "inference=openai",
                f"inference.base_url={proxy.base_url}",
                f"inference.served_model={model}",
                "inference.max_concurrency=2",
                "inference.max_retries=1",
                "eval.max_per_source=4",
                "eval.max_new_tokens=4",
            )
            with pytest.raises(
                UserError, match=r"generations failed after retries .* rerun the same command"
            ):
                eval_stage.run(cfg)
            saved = _predictions(cfg, partial=True)  # every line is whole JSON
            failed = [p for p in saved if p["error"]]
            assert len(saved) == 12 and len(saved) - len(failed) >= 3 and failed
            assert all(p["output"] == "" and p["correct"] is False for p in failed)

            proxy.upstream = healthy_url
            requests_before = len(proxy.started)
            metrics = eval_stage.run(cfg)["metrics"]
            assert len(proxy.started) - requests_before == len(failed)  # only the failed ones again
    finally:
        stop_process(doomed)
    assert metrics["failed"] == 0 and metrics["overall"]["n"] == 12
    assert len(_predictions(cfg)) == 12


def test_a_mapped_suite_is_evaluated_and_its_skipped_rows_counted(make_config, tmp_path):
    gpqa = [
        {
            "Question": f"Which organelle makes ATP ({i})?",
            "Correct Answer": "Mitochondrion",
            "Wrong 1": "Ribosome",
            "Wrong 2": "Golgi apparatus",
            "Wrong 3": "Lysosome",
        }
        for i in range(3)
    ]
    gpqa.append({"Question": "", "Correct Answer": "x", "Wrong 1": "y"})
    file = tmp_path / "gpqa.jsonl"
    file.write_text("".join(json.dumps(row) + "\n" for row in gpqa))
    entry = (
        f"{{path:'{file}',name:gpqa-diamond,question:Question,"
        "options:['Wrong 1','Wrong 2','Wrong 3','Correct Answer'],answer:'Correct Answer',seed:3}"
    )
    cfg = make_config(
        *BASE,
        f"eval.suite=[pkg://meds1/data/demo_eval.json,{entry}]",
        "eval.max_per_source=2",
        "eval.max_new_tokens=4",
    )
    record = eval_stage.run(cfg)
    metrics = record["metrics"]
    assert metrics["per_source"]["gpqa-diamond"]["n"] == 2 and metrics["overall"]["n"] == 8
    assert metrics["skipped_rows"] == {"gpqa-diamond": {"missing_question": 1}}
    assert metrics["suite"]["gpqa-diamond"]["questions"] == 2 and len(metrics["suite"]) == 4
    assert metrics["suite"]["gpqa-diamond"]["revisions"] == []  # a local file: no hub commit
    shuffled = [p for p in _predictions(cfg) if p["source"] == "gpqa-diamond"]
    for p in shuffled:
        assert p["options"][p["answer_idx"]] == "Mitochondrion" and p["shuffle_seed"] == 3
        assert p["prompt"].endswith("\n".join(f"{k}. {v}" for k, v in p["options"].items()))


def test_a_benchmark_with_no_usable_row_stops_the_eval_before_generation(make_config, tmp_path):
    file = tmp_path / "MedXpertQA_test.jsonl"
    file.write_text(
        json.dumps({"id": "T-1", "question": "Q", "options": {"A": "x", "B": "y"}, "label": "A"}) + "\n"
    )
    cfg = make_config(*BASE, f"eval.suite=[pkg://meds1/data/demo_eval.json,'{file}']")
    with pytest.raises(
        UserError, match=r"^MedXpertQA_test.jsonl: none of 1 rows usable: no 'answer_idx' .*label}$"
    ):
        eval_stage.run(cfg)
    assert (
        not stage_dir(cfg, "eval").exists() and not (stage_dir(cfg, "eval").parent / ".eval.partial").exists()
    )
