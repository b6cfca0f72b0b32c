"""GRPO steps of the tiny model on CPU through run.py: rewards logged, a checkpoint, kill and resume, and two
processes (DDP over gloo) ending where one would.

The starting model is the tiny model fine-tuned for a few steps on short answers in the huatuo layout, so
that its completions end at different lengths: DAPO's overlong punishment over the last 12 of 24 tokens
then pays each completion of a question differently, which gives GRPO non-zero advantages to learn from
(the tiny model rarely reaches a right answer, so mcq and format alone would pay 0 everywhere).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meds1.config.compose import compose
from meds1.rl import data
from meds1.stages import rl as rl_stage
from meds1.stages import train
from meds1.store.identity import stage_slug
from meds1.store.workspace import stage_dir
from tests.conftest import REPO
from tests.test_train import fake_curate_output

pytestmark = pytest.mark.slow

OVERRIDES = [
    "experiment=demo-rl",
    "trainer.max_steps=30",
    "trainer.logging_steps=10",
    "rl.max_completion_length=24",
    "rl.max_steps=4",
    "rl.save_steps=1",
    "rl.num_generations=4",
    "rl.generation_batch_size=8",
    "rl.per_device_batch_size=4",
    "rl.temperature=1.5",
    "rl.rewards.overlong=1",
    "rl.overlong_cache_tokens=12",
]
SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def short_answers(cfg) -> list[list[dict]]:
    """Conversations answering the RL questions as eval asks them, in a few tokens, letters A to D."""
    questions = data.load_questions(cfg.rl)[0][:40]
    chats = []
    for number, question in enumerate(questions):
        letter = "ABCD"[number % 4]
        answer = f"## Thinking\n\nShort.\n\n## Final Response\n\nThe answer is {letter}."
        chats.append([*data.conversation(question, cfg.rl), {"role": "assistant", "content": answer}])
    return chats


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, model_cache) -> Path:
    """An output root holding the experiment's curate and train outputs (trained on short answers)."""
    root = tmp_path_factory.mktemp("rl-trained")
    cfg = compose([*OVERRIDES, "stage=train", f"paths.root={root}", f"paths.cache={model_cache}"])
    fake_curate_output(cfg, short_answers(cfg))
    train.run(cfg)
    return root


@pytest.fixture
def fresh(trained_root, tmp_path, model_cache):
    """(config, overrides) with outputs in a copy of the trained root."""
    shutil.copytree(trained_root, tmp_path / "out")
    overrides = [*OVERRIDES, "stage=rl", f"paths.root={tmp_path / 'out'}", f"paths.cache={model_cache}"]
    return compose(overrides), overrides


def run_py(overrides: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "run.py", *overrides],
        cwd=REPO,
        env=SINGLE_THREAD,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def partial_checkpoints(cfg) -> Path:
    return stage_dir(cfg, "rl").parent / ".rl.partial" / "checkpoints"


def test_grpo_steps_through_run_py_log_rewards_and_commit_the_rl_model(fresh):
    cfg, overrides = fresh
    process = run_py(overrides)
    output = process.communicate(timeout=1200)[0].decode()
    assert process.returncode == 0, output[-3000:]
    final = stage_dir(cfg, "rl")
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["loss_is_finite"] and metrics["world_size"] == 1
    history = metrics["history"]
    assert [entry["step"] for entry in history] == [1, 2, 3, 4]
    for entry in history:
        assert set(entry["rewards"]) == {"mcq", "format", "overlong"} and math.isfinite(entry["reward"])
        assert entry["kl"] is not None and 0 <= entry["clipped"] <= 1 and entry["completion_length"] > 0
    assert any(entry["reward_std"] > 0 and entry["loss"] != 0 for entry in history)  # something to learn
    assert metrics["data"]["questions"] == 173 and metrics["rows"] == 173 and metrics["init"] == "train"
    assert (final / "model" / "model.safetensors").exists() and (final / "model" / "tokenizer.json").exists()
    assert not (final / "checkpoints").exists()
    record = json.loads((Path(cfg.paths.root) / "results.json").read_text())["experiments"]
    entry = record[stage_slug(cfg, "rl")]["results"]["rl"]
    assert entry["model_path"] == str(final / "model") and entry["init_model"].endswith("train/model")
    assert "history" not in entry["metrics"] and entry["metrics_path"] == str(final / "metrics.json")
    assert entry["provenance"]


def test_a_killed_rl_run_resumes_from_its_last_checkpoint(fresh):
    cfg, overrides = fresh
    process = run_py(overrides)
    first = partial_checkpoints(cfg) / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 900
    while not first.exists():
        assert process.poll() is None, process.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    assert not stage_dir(cfg, "rl").exists()
    saved = sorted(int(p.name.split("-")[1]) for p in partial_checkpoints(cfg).glob("checkpoint-*"))
    assert saved and saved[-1] < 4

    metrics = rl_stage.run(cfg)["metrics"]
    assert (
        metrics["resumed_from"] in saved and metrics["global_step"] == 4
    )  # (a killed run records no segment)
    history = json.loads((stage_dir(cfg, "rl") / "metrics.json").read_text())["history"]
    assert [entry["step"] for entry in history] == [1, 2, 3, 4]  # the steps before the kill are kept


def test_two_processes_train_one_rl_model(fresh):
    cfg, overrides = fresh
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "run.py", *overrides]
    process = subprocess.Popen(
        command, cwd=REPO, env=SINGLE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = process.communicate(timeout=1800)[0].decode()
    assert process.returncode == 0, output[-3000:]
    assert "terminate called" not in output
    metrics = json.loads((stage_dir(cfg, "rl") / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["launcher"] == "torchrun" and metrics["ranks_agree"] is True
    assert metrics["per_device_batch_size"] == 4 and metrics["gradient_accumulation_steps"] == 1
    assert metrics["global_step"] == 4 and len(metrics["history"]) == 4 and metrics["loss_is_finite"]
