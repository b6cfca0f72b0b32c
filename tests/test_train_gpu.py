"""Training on CUDA: one GPU in bf16 through the whole chain; FSDP2 over two processes.

Needs CUDA GPUs (deselected by default: `pytest -m gpu`; bench/accept_gpu.py runs them on a lent GPU).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meds1.config.compose import compose
from meds1.stages import curate
from meds1.store.identity import stage_slug
from meds1.store.workspace import stage_dir
from tests.conftest import REPO

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_one_gpu_trains_in_bf16_saves_bf16_and_evaluates_on_the_gpu(tmp_path, model_cache):
    """The single-GPU path of `stage=all`: bf16 compute over float32 weights with activation checkpointing
    and packing, the final model written in bf16, and the hf backend generating on the GPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    overrides = [
        "experiment=demo",
        "curation.n_samples=40",
        "trainer.num_epochs=1",
        "trainer.bf16=true",
        "trainer.gradient_checkpointing=true",
        "trainer.packing=true",
        "trainer.logging_steps=1",
        "model.dtype=bfloat16",
        f"paths.root={tmp_path}",
        f"paths.cache={model_cache}",
    ]
    cfg = compose(overrides)
    command = [sys.executable, "run.py", "stage=all", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    registry = json.loads((Path(cfg.paths.root) / "results.json").read_text())
    train = registry["experiments"][stage_slug(cfg, "train")]["results"]["train"]["metrics"]
    assert train["device"] == "cuda" and train["world_size"] == 1 and train["fsdp"] is False
    assert train["packing"] and train["last_loss"] is not None and train["loss_is_finite"]
    assert train["gpu_hours"] > 0
    saved = json.loads((stage_dir(cfg, "train") / "model" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"
    evaluated = registry["experiments"][stage_slug(cfg, "eval")]["results"]["eval"]["metrics"]
    assert evaluated["inference"]["backend"] == "hf" and evaluated["inference"]["device"] == "cuda"


def test_fsdp_two_gpus_train_and_save_a_full_model(tmp_path, model_cache):
    import torch
    from transformers import AutoModelForCausalLM

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    overrides = [
        "experiment=demo",
        "curation.n_samples=40",
        "trainer.num_epochs=1",
        "trainer.save_steps=4",
        "trainer.bf16=true",
        "trainer.gradient_checkpointing=true",
        "trainer.fsdp.enabled=true",
        f"paths.root={tmp_path}",
        f"paths.cache={model_cache}",
    ]
    cfg = compose(overrides)
    curate.run(cfg)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "run.py", "stage=train"]
    result = subprocess.run([*command, *overrides], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    registry = json.loads((Path(cfg.paths.root) / "results.json").read_text())
    metrics = registry["experiments"][stage_slug(cfg, "train")]["results"]["train"]["metrics"]
    assert metrics["fsdp"] is True and metrics["world_size"] == 2 and metrics["device"] == "cuda"
    assert metrics["global_step"] == 10 and metrics["gpu_hours"] > 0 and metrics["loss_is_finite"]
    model = AutoModelForCausalLM.from_pretrained(stage_dir(cfg, "train") / "model")
    assert sum(p.numel() for p in model.parameters()) > 0
