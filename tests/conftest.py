"""Shared fixtures: composed configs pointed at temp dirs, and the real rows in ../shared/data."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from meds1.config.compose import compose
from meds1.config.schema import Config

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDS1_SHARED_DATA", REPO.parent / "shared" / "data"))


def cap_threads() -> None:
    """Give each pytest-xdist worker its share of the cores, for torch here and for every process a test
    starts (they inherit the environment): two torch processes that each take every core of a 2-core
    machine slow each other ~10x."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)


cap_threads()  # before anything imports torch


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    """The slow tier (`pytest -m slow`) holds what starts a vLLM engine or needs a SLURM cluster too."""
    for item in items:
        if item.get_closest_marker("vllm") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


def shared_models_dir(tmp_path_factory) -> Path:
    """One folder for the tiny model across the session's xdist workers (it is built under a lock)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "models"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache for the session (per xdist worker), whose `models/` all workers share, so the tiny model
    is built once."""
    cache = tmp_path_factory.mktemp("cache")
    models = shared_models_dir(tmp_path_factory)
    models.mkdir(exist_ok=True)
    (cache / "models").symlink_to(models, target_is_directory=True)
    return cache


@pytest.fixture
def make_config(tmp_path, model_cache):
    """compose(overrides) with outputs under this test's tmp_path and the session's model cache."""

    def _make(*overrides: str) -> Config:
        return compose([*overrides, f"paths.root={tmp_path / 'out'}", f"paths.cache={model_cache}"])

    return _make


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set MEDS1_SHARED_DATA)")
    return SHARED_DATA


def shipped_tiny_model(models_dir: Path) -> Path:
    """The tiny demo model as shipped (conf/model/tiny.yaml), under `models_dir`; tests build no other."""
    from meds1.models import ensure_tiny_model

    return ensure_tiny_model(compose(["model=tiny"]).model.tiny, models_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> Path:
    return shipped_tiny_model(model_cache / "models")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_openai_server(model_dir: Path, log: Path) -> tuple[str, subprocess.Popen]:
    """Start `transformers serve` for `model_dir` on a free local port; (base_url, process) once healthy."""
    port = _free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            ["transformers", "serve", str(model_dir), "--port", str(port), "--host", "127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"transformers serve did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return f"{base}/v1", process


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def report_registry(tmp_path_factory, model_cache) -> Path:
    """The output root of a results registry with sweeps, a shared curation and test-time-scaling runs
    (see tests/report_registry.py), built once; copy it before changing anything under it."""
    from tests.report_registry import build

    root = tmp_path_factory.mktemp("report-registry") / "out"
    return build(lambda *overrides: compose([*overrides, f"paths.root={root}", f"paths.cache={model_cache}"]))


@pytest.fixture(scope="session")
def openai_server(tiny_model_dir, tmp_path_factory):
    """A real OpenAI-compatible server (`transformers serve`) for the tiny model on 127.0.0.1.

    Yields (base_url, model_name, process); stopped by its PID at the end of the session.
    """
    if shutil.which("transformers") is None:
        pytest.skip("`transformers` CLI not found (pip install 'transformers[serving]')")
    base_url, process = start_openai_server(tiny_model_dir, tmp_path_factory.mktemp("server") / "serve.log")
    yield base_url, str(tiny_model_dir), process
    stop_process(process)


def ctrl_c_after_a_step(process: subprocess.Popen, logged: str, stage: str) -> tuple[int, Path, list[str]]:
    """Ctrl-C (SIGINT) to a `run.py` process once it logs a step (`logged`: a key of its step log). It must
    exit 130 with one error line naming the checkpoint it kept and the command that resumes from it; returns
    (step, checkpoint, that command's arguments after `python`)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if f"'{logged}'" in line:
            process.send_signal(signal.SIGINT)
            break
    lines += process.stdout.read().splitlines()
    assert process.wait(timeout=600) == 130, "".join(lines[-20:])
    [error] = [line for line in lines if re.search(r"\[ERROR\]|Traceback|KeyboardInterrupt", line)]
    said = re.search(
        rf"{stage}: interrupted \(Ctrl-C\) at step (\d+); its checkpoint is kept in (\S+), "
        r"and `(.+)` resumes from it$",
        error.strip(),
    )
    assert said, error
    python, *arguments = shlex.split(said[3])
    assert python == "python", said[3]
    return int(said[1]), Path(said[2]), arguments


def run_as_printed(arguments: list[str], env: dict) -> str:
    """A `python ARGUMENTS` command meds1 printed, run with this interpreter; its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr
