"""FSDP2 on CUDA: two processes shard the tiny model in bf16, checkpoint, and save one loadable model.

Needs two CUDA GPUs (deselected by default: `pytest -m gpu`).
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
