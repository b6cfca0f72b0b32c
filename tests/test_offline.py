"""What is not on this machine and cannot be fetched is one line that names the fix, not a hub traceback:
a model (`model.path=DIR`), a hub source (`curation.source.name=DIR`), a GPU for the GPU acceptance run
(tests/test_hub.py has every other hub read)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": ""}


def run_py(*overrides: str, tmp_path) -> tuple[int, list[str]]:
    command = [sys.executable, "run.py", "experiment=demo", "stage=curate", *overrides]
    return run([*command, f"paths.root={tmp_path}"], tmp_path)


def run(command: list[str], tmp_path) -> tuple[int, list[str]]:
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}  # an empty hub cache: nothing downloaded before
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if "[ERROR]" in line or "Traceback" in line]


@pytest.mark.slow
def test_a_hub_model_offline_is_one_line_naming_model_path(tmp_path):
    code, lines = run(
        [
            sys.executable,
            "run.py",
            "experiment=demo",
            "model=llama3.1-8b",
            "stage=curate",
            f"paths.root={tmp_path}",
        ],
        tmp_path,
    )
    assert code == 1
    [error] = errors(lines)
    assert "cannot load 'meta-llama/" in error and error.endswith("and set model.path=DIR")


@pytest.mark.slow
def test_a_hub_source_offline_is_one_line_naming_source_path(tmp_path):
    source = [
        "curation.source.path=null",
        "curation.source.name=FreedomIntelligence/medical-o1-reasoning-SFT",
    ]
    code, lines = run(
        [sys.executable, "run.py", "experiment=demo", "stage=curate", *source, f"paths.root={tmp_path}"],
        tmp_path,
    )
    assert code == 1
    [error] = errors(lines)
    assert "cannot load 'FreedomIntelligence/medical-o1-reasoning-SFT' (curation.source.name)" in error
    assert error.endswith("set curation.source.name=DIR")


def test_the_gpu_acceptance_run_without_a_gpu_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: accept_gpu would run")
    code, lines = run([sys.executable, "bench/accept_gpu.py"], tmp_path)
    assert (code, lines) == (2, ["accept_gpu: needs a CUDA GPU (torch sees none here); run it on a GPU node"])


def test_the_device_entry_without_a_gpu_says_so_before_installing_anything(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the entry would install the wheels and run")
    code, lines = run(
        [sys.executable, "bench/device/accept.py", "--target", str(tmp_path / "site")], tmp_path
    )
    assert (code, lines) == (
        2,
        ["accept: needs a CUDA GPU (torch sees none here); run it on the lent GPU machine"],
    )
    assert not (tmp_path / "site").exists()
