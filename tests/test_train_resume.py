"""Training that is killed, preempted, interrupted (Ctrl-C) or spread over two processes ends where an
uninterrupted run ends.

Two processes run as torchrun starts them, then as SLURM starts tasks (SLURM_* variables, no torchrun).

The tiny model on 40 curated demo rows, global batch 4, 2 epochs: 20 optimizer steps, a checkpoint every 3.
"""

import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from meds1.config.compose import compose
from meds1.errors import Interrupted
from meds1.stages import curate, train
from meds1.store.identity import stage_slug
from meds1.store.workspace import stage_dir
from tests.conftest import REPO, ctrl_c_after_a_step, run_as_printed

pytestmark = pytest.mark.slow

OVERRIDES = [
    "experiment=demo",
    "curation.n_samples=40",
    "trainer.num_epochs=2",
    "trainer.save_steps=3",
    "trainer.logging_steps=1",
]
STEPS = math.ceil(40 / 4) * 2


@pytest.fixture(scope="module")
def curated_root(tmp_path_factory, model_cache) -> Path:
    root = tmp_path_factory.mktemp("curated")
    curate.run(compose([*OVERRIDES, f"paths.root={root}", f"paths.cache={model_cache}"]))
    return root


@pytest.fixture
def fresh_run(curated_root, tmp_path, model_cache):
    """(config, command-line overrides) for a fresh output root that already holds the curated rows.

    Training runs on one thread per process: on a small shared CI machine, a tiny model trains several
    times faster that way than with threads competing for the cores.
    """
    import torch

    shutil.copytree(curated_root, tmp_path / "out")
    overrides = [*OVERRIDES, f"paths.root={tmp_path / 'out'}", f"paths.cache={model_cache}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield compose(overrides), overrides
    torch.set_num_threads(threads)


SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def partial_checkpoints(cfg) -> Path:
    return stage_dir(cfg, "train").parent / ".train.partial" / "checkpoints"


def wait_for_checkpoint(cfg, process=None, timeout=600) -> None:
    first = partial_checkpoints(cfg) / "checkpoint-3" / "trainer_state.json"
    deadline = time.monotonic() + timeout
    while not first.exists():
        assert process is None or process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def saved_steps(cfg) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in partial_checkpoints(cfg).glob("checkpoint-*"))


def assert_not_complete(cfg) -> None:
    final = stage_dir(cfg, "train")
    assert not final.exists() and not (final.parent / ".train.partial" / "_COMPLETE.json").exists()


def test_killed_run_resumes_from_its_last_checkpoint(fresh_run):
    cfg, overrides = fresh_run
    process = subprocess.Popen(
        [sys.executable, "run.py", "stage=train", *overrides],
        cwd=REPO,
        env=SINGLE_THREAD,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_checkpoint(cfg, process)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    assert_not_complete(cfg)
    saved = saved_steps(cfg)
    assert saved and saved[-1] < STEPS

    metrics = train.run(cfg)["metrics"]
    assert metrics["resumed_from"] in saved and metrics["resumed_from"] % 3 == 0
    assert metrics["global_step"] == STEPS and metrics["rows"] == 40
    final = stage_dir(cfg, "train")
    assert (final / "_COMPLETE.json").exists() and (final / "model" / "model.safetensors").exists()
    assert not (final / "checkpoints").exists()


def test_ctrl_c_keeps_a_checkpoint_in_one_line_and_its_command_resumes_counting_both_runs(fresh_run):
    """Ctrl-C before any scheduled checkpoint (save_steps beyond the run): one line naming the checkpoint it
    saved and the command that resumes, exit 130; that command resumes from that step, and the record's
    runtime counts both runs."""
    _, overrides = fresh_run
    overrides = [*overrides, "trainer.save_steps=100"]
    cfg = compose(overrides)
    process = subprocess.Popen(
        [sys.executable, "run.py", "stage=train", *overrides],
        cwd=REPO,
        env=SINGLE_THREAD,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal starts it
    )
    step, checkpoint, arguments = ctrl_c_after_a_step(process, "loss", "train")  # logging_steps=1
    assert 1 <= step < STEPS and checkpoint == partial_checkpoints(cfg) / f"checkpoint-{step}"
    assert (checkpoint / "trainer_state.json").exists() and saved_steps(cfg) == [step]
    assert_not_complete(cfg)

    assert arguments[:3] == ["run.py", "experiment=demo", "stage=train"]
    output = run_as_printed(arguments, SINGLE_THREAD)
    assert f"train: resuming from step {step} ({checkpoint})" in output
    results = json.loads((Path(cfg.paths.root) / "results.json").read_text())
    metrics = results["experiments"][stage_slug(cfg, "train")]["results"]["train"]["metrics"]
    assert metrics["resumed_from"] == step and metrics["global_step"] == STEPS and metrics["segments"] == 2
    segments = (stage_dir(cfg, "train") / "segments.jsonl").read_text().splitlines()
    runs = [json.loads(segment) for segment in segments]
    assert [(run["from_step"], run["to_step"]) for run in runs] == [(0, step), (step, STEPS)]
    assert metrics["total_runtime_s"] == pytest.approx(sum(run["runtime_s"] for run in runs), abs=0.02)
    assert metrics["total_runtime_s"] > metrics["train_runtime_s"] == runs[1]["runtime_s"]


class CtrlC(logging.Handler):
    """Presses Ctrl-C when training starts, and again when meds1 says it will checkpoint first."""

    def emit(self, record):
        if any(text in record.getMessage() for text in ("Running training", "SIGINT received")):
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_twice_stops_at_once_and_the_rerun_says_it_starts_over_counting_the_cut_run(fresh_run, caplog):
    cfg, overrides = fresh_run
    cfg = compose([*overrides, "trainer.save_steps=100"])
    loggers = [logging.getLogger("transformers.trainer"), logging.getLogger("meds1.training.preemption")]
    level = loggers[0].level
    loggers[0].setLevel(logging.INFO)
    for logger in loggers:
        logger.addHandler(CtrlC())
    try:
        with pytest.raises(Interrupted, match=r"^train: interrupted \(Ctrl-C\); the work it kept is in "):
            train.run(cfg)
    finally:
        loggers[0].setLevel(level)
        for logger in loggers:
            logger.handlers = [h for h in logger.handlers if not isinstance(h, CtrlC)]
    [cut] = [json.loads(line) for line in (partial_checkpoints(cfg).parent / "segments.jsonl").open()]
    assert cut["from_step"] == 0 and cut["runtime_s"] > 0 and saved_steps(cfg) == []

    with caplog.at_level(logging.INFO, logger="meds1"):
        metrics = train.run(cfg)["metrics"]
    assert (
        f"train: starting over from step 0: the 1 earlier run(s) here stopped at step {cut['to_step']}, "
        "before any checkpoint was saved (every trainer.save_steps=100 steps)"
    ) in caplog.messages
    assert metrics["resumed_from"] is None and metrics["global_step"] == STEPS and metrics["segments"] == 2
    both = metrics["train_runtime_s"] + cut["runtime_s"]
    assert metrics["total_runtime_s"] == pytest.approx(both, abs=0.02)


class HandedOver(Exception):
    """Raised by the handler installed before training, standing in for submitit's requeue handler."""


def test_signal_checkpoints_then_hands_over_to_the_previous_handler(fresh_run):
    cfg, _ = fresh_run

    def previous_handler(signum, frame):
        raise HandedOver(signum)

    def send_signal_after_first_checkpoint():
        wait_for_checkpoint(cfg)
        os.kill(os.getpid(), signal.SIGUSR2)

    before = signal.signal(signal.SIGUSR2, previous_handler)
    try:
        sender = threading.Thread(target=send_signal_after_first_checkpoint, daemon=True)
        sender.start()
        with pytest.raises(HandedOver):
            train.run(cfg)
        sender.join()
        assert signal.getsignal(signal.SIGUSR2) is previous_handler  # ours was removed again
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert_not_complete(cfg)
    stopped_at = saved_steps(cfg)[-1]
    assert 3 <= stopped_at < STEPS

    metrics = train.run(cfg)["metrics"]
    assert metrics["resumed_from"] == stopped_at
    assert metrics["global_step"] == STEPS and metrics["segments"] == 2


def torchrun(overrides: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "run.py", "stage=train"]
    return subprocess.Popen(
        [*command, *overrides], cwd=REPO, env=SINGLE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def free_job_id() -> int:
    """A SLURM job id whose derived rendezvous port (29500 + id % 20000) is free here."""
    for job_id in range(random.randrange(20000), 20000 * 2):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 29500 + job_id % 20000))
            except OSError:
                continue
        return job_id
    raise RuntimeError("no free port")


def slurm_tasks(overrides: list[str], n: int = 2) -> list[subprocess.Popen]:
    """What `srun --ntasks=n` starts on one node: n copies of the command, told apart by SLURM_* variables."""
    job = {"SLURM_JOB_ID": str(free_job_id()), "SLURM_NTASKS": str(n), "SLURM_NNODES": "1"}
    job["SLURM_JOB_NODELIST"] = "localhost"
    return [
        subprocess.Popen(
            [sys.executable, "run.py", "stage=train", *overrides],
            cwd=REPO,
            env={**SINGLE_THREAD, **job, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(n)
    ]


def test_two_processes_stop_together_then_resume_as_slurm_tasks(fresh_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, overrides = fresh_run
    first = torchrun(overrides)
    try:
        wait_for_checkpoint(cfg, first)
        workers = {p.environ().get("RANK"): p for p in psutil.Process(first.pid).children(recursive=True)}
        os.kill(workers["1"].pid, signal.SIGUSR2)  # rank 1 alone gets the signal
        output = first.communicate(timeout=600)[0].decode()
    finally:
        first.kill()
    assert first.returncode != 0, output[-3000:]
    assert_not_complete(cfg)
    stopped_at = saved_steps(cfg)[-1]
    assert 3 <= stopped_at < STEPS
    checkpoint = partial_checkpoints(cfg) / f"checkpoint-{stopped_at}"
    # Both ranks saved the same step: each wrote its own RNG state into that checkpoint.
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()

    tasks = slurm_tasks(overrides)
    outputs = [task.communicate(timeout=900)[0].decode() for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    results = json.loads((Path(cfg.paths.root) / "results.json").read_text())
    metrics = results["experiments"][stage_slug(cfg, "train")]["results"]["train"]["metrics"]
    assert metrics["world_size"] == 2 and metrics["launcher"] == "slurm"
    assert metrics["per_device_batch_size"] == 2 and metrics["gradient_accumulation_steps"] == 1
    assert metrics["resumed_from"] == stopped_at and metrics["global_step"] == STEPS
    assert metrics["ranks_agree"] is True and metrics["loss_is_finite"] and metrics["segments"] == 2

    model_dir = stage_dir(cfg, "train") / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    question = [{"role": "user", "content": "Which nerve is injured?"}]
    prompt = tokenizer.apply_chat_template(
        question, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_a_finished_two_process_train_exits_0_every_time(curated_root, tmp_path, model_cache):
    """Every rank shuts down cleanly after success (process group destroyed once nothing holds it): an abort
    at exit (`terminate called without an active exception`) would make SLURM's afterok cancel the eval."""
    for attempt in range(3):
        root = tmp_path / f"run-{attempt}"
        shutil.copytree(curated_root, root)
        overrides = [*OVERRIDES, "trainer.max_steps=4", f"paths.root={root}", f"paths.cache={model_cache}"]
        process = torchrun(overrides)
        output = process.communicate(timeout=900)[0].decode()
        assert process.returncode == 0, output[-3000:]
        assert "terminate called" not in output
        cfg = compose(overrides)
        assert (stage_dir(cfg, "train") / "_COMPLETE.json").exists()
