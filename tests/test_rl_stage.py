"""GRPO steps of the tiny model on CPU through run.py: rewards logged, a checkpoint, kill and resume, Ctrl-C
and the command it names, and two processes (DDP over gloo) ending where one would; the pass-rate filter
sampling a real model, and TRL's GRPOConfig taking each preset's arguments (slow: importing TRL).

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
from tests.conftest import REPO, ctrl_c_after_a_step, run_as_printed
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


def test_ctrl_c_keeps_a_checkpoint_in_one_line_and_its_command_resumes(fresh):
    """Ctrl-C in RL as in train (the same attempt and ending, meds1.stages.stop_training): a checkpoint at
    the current step, one line naming it and the command that resumes, exit 130; that command resumes."""
    _, overrides = fresh
    overrides = [*overrides, "rl.save_steps=100"]  # no scheduled checkpoint: Ctrl-C's is the only one
    cfg = compose(overrides)
    process = run_py(overrides, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    step, checkpoint, arguments = ctrl_c_after_a_step(process, "reward", "rl")  # logging_steps=1
    assert 1 <= step < 4 and checkpoint == partial_checkpoints(cfg) / f"checkpoint-{step}"
    assert (checkpoint / "trainer_state.json").exists() and not stage_dir(cfg, "rl").exists()

    assert arguments[:3] == ["run.py", "experiment=demo-rl", "stage=rl"]
    output = run_as_printed(arguments, SINGLE_THREAD)
    assert f"rl: resuming from step {step} ({checkpoint})" in output
    metrics = json.loads((stage_dir(cfg, "rl") / "metrics.json").read_text())
    assert metrics["resumed_from"] == step and metrics["global_step"] == 4 and metrics["segments"] == 2


def test_the_pass_rate_filter_samples_the_starting_model(fresh):
    """The filter's real sampling: the SFT model answers each question `samples` times through the hf
    backend, scored by mcq; the rates are multiples of 1/samples and cached."""
    cfg, _ = fresh
    cfg.rl.data.pass_rate.samples = 2
    cfg.rl.data.pass_rate.min, cfg.rl.data.pass_rate.max = -1.0, 2.0  # keep every question
    questions = data.load_questions(cfg.rl)[0][:6]
    start, identity = rl_stage.starting_model(cfg)
    rates = data.sample_pass_rates(questions, cfg, start)
    assert len(rates) == 6 and all(0 <= rate <= 1 and rate * 2 == int(rate * 2) for rate in rates)
    kept, stats = data.filter_by_pass_rate(questions, cfg, start, identity)
    assert kept == questions and stats["computed"] == 6
    assert data.filter_by_pass_rate(questions, cfg, start, identity)[1]["reused"] == 6


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


def test_trl_takes_every_argument_meds1_gives_it(tmp_path):
    """GRPOConfig accepts the arguments of each preset with vLLM (colocate and server) and FSDP: TRL's
    names as meds1 writes them (built on CPU, where no vLLM engine or process group starts)."""
    import inspect

    from trl import GRPOConfig, GRPOTrainer

    from meds1.rl.grpo import grpo_arguments

    # TRL internals meds1 relies on: the KL reference is loaded with model_init_kwargs (meds1 passes the
    # revision there), and bench/bench_rl.py times generation at _generate_single_turn.
    assert "args.model_init_kwargs" in inspect.getsource(GRPOTrainer.__init__)
    assert "completion_ids" in inspect.getsource(GRPOTrainer._generate_single_turn)

    for overrides in (["rl=dapo"], ["rl=dr-grpo", "rl.vllm.mode=server"], ["rl.fsdp.enabled=true"]):
        cfg = compose(["experiment=med-s1-1k-grpo", *overrides])
        per_device, accumulation = cfg.rl.batch_sizes(8)
        arguments = grpo_arguments(cfg.rl, tmp_path, per_device, accumulation, [1.0], cfg.seed)
        arguments |= {"bf16": False, "fsdp": "", "fsdp_config": None}  # CPU: no bf16, no FSDP here
        config = GRPOConfig(**arguments, use_cpu=True)
        assert config.use_vllm and config.loss_type == str(cfg.rl.loss_type)
