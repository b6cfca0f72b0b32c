"""GPU training throughput: tokens/s per GPU and MFU of an 8B model, FSDP2 + packing, one process per GPU.

Needs CUDA GPUs and the model's weights (hub cache or model.path=/local/dir); not run in CI. Launch:

    torchrun --nproc_per_node=8 bench/bench_train_gpu.py [--warmup=3] [--steps=10] [--save] [config overrides]
    srun --ntasks-per-node=8 --gpus-per-node=8 python bench/bench_train_gpu.py [config overrides]

or call `run()` (the bench runner does) on a GPU machine: it starts torchrun on every visible GPU.
Default settings: experiment=med-s1-1k (Llama-3.1-8B-Instruct, med-s1's s1-style recipe: bf16, FSDP2 full
shard, activation checkpointing) at s1's global batch 16 (med-s1's 4 does not divide over 8 GPUs), with
packing into blocks of 16,384 tokens. The training rows are the
real SFT rows in ../shared/data when present, else the shipped demo rows, repeated to fill the steps.
Target on 8xH100: >= 6,000 tokens/s/GPU (torchtitan's FSDP2 Llama-3-8B figure is 5,762).

MFU = achieved FLOP/s / peak bf16 FLOP/s, with 6 x (non-embedding parameters) + 12 x layers x hidden x
(mean packed document length) FLOPs per trained token (the attention term counts only the tokens a
token attends to within its own document: packing is block-diagonal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from importlib.util import find_spec
from pathlib import Path

DEFAULTS = [
    "experiment=med-s1-1k",
    "trainer.global_batch_size=16",
    "trainer.packing=true",
    "trainer.block_size=16384",
]
WARMUP_STEPS = 3
MEASURED_STEPS = 10
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12}
TARGET = ">= 6000 tokens/s/GPU on 8xH100"
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDS1_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_SFT = SHARED_DATA / "sft" / "huatuogpt-o1_demo_data.json"


def peak_flops(device_name: str) -> float:
    if "PEAK_TFLOPS" in os.environ:
        return float(os.environ["PEAK_TFLOPS"]) * 1e12
    for name, flops in PEAK_BF16_FLOPS.items():
        if name in device_name:
            return flops
    raise SystemExit(f"unknown peak bf16 FLOP/s for {device_name!r}: set PEAK_TFLOPS")


def training_rows(repeats: int):
    from datasets import Dataset

    from meds1.config.schema import FormatConfig
    from meds1.curation.formatting import to_messages
    from meds1.hub import resolve_data_path

    if SHARED_SFT.exists():
        rows = json.loads(SHARED_SFT.read_text())
    else:
        path = resolve_data_path("pkg://meds1/data/demo_sft.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [r for r in rows if r.get("Question") and r.get("Complex_CoT") and r.get("Response")]
    chats = [to_messages(r["Question"], r["Complex_CoT"], r["Response"], FormatConfig()) for r in rows]
    return Dataset.from_dict({"messages": chats * repeats})


def flops_per_token(config, mean_document_tokens: float, non_embedding_params: int) -> float:
    return (
        6 * non_embedding_params + 12 * config.num_hidden_layers * config.hidden_size * mean_document_tokens
    )


def measure(
    overrides: list[str], warmup: int = WARMUP_STEPS, measured: int = MEASURED_STEPS, save: bool = False
) -> dict | None:
    """Train `warmup` + `measured` steps on this process's GPU; rank 0 returns the figures.

    `save`: then save the model as training does at its end (shards gathered, written in model.dtype),
    timed, and read back its dtype."""
    import torch
    from transformers import TrainerCallback

    from meds1.config.compose import compose
    from meds1.models import model_path
    from meds1.training import distributed
    from meds1.training.sft import build_trainer, check_options, load_model, save_final, split_validation

    steps = warmup + measured
    cfg = compose([*DEFAULTS, *overrides, f"trainer.max_steps={steps}", "trainer.save_steps=100000"])
    if cfg.trainer.attn_implementation is None:
        flash = find_spec("flash_attn") is not None
        cfg.trainer.attn_implementation = "flash_attention_2" if flash else "sdpa"
    env = distributed.detect()
    check_options(cfg.trainer, env.world_size)
    peak = peak_flops(torch.cuda.get_device_name())

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            if state.global_step == warmup:
                self.start = (time.perf_counter(), state.num_input_tokens_seen)
            self.end = (time.perf_counter(), state.num_input_tokens_seen)
            control.should_save = False  # no checkpoint at the last step: only throughput is measured
            return control

    with distributed.process_group(env), tempfile.TemporaryDirectory() as work:
        path = distributed.on_main(lambda: model_path(cfg.model, cfg.paths.cache), env)
        model, tokenizer = load_model(
            path, cfg.model.revision, cfg.trainer.weights_dtype, cfg.trainer.attn_implementation
        )
        config = model.config
        params = sum(p.numel() for p in model.parameters())
        non_embedding = params - model.get_input_embeddings().weight.numel()
        rows, _ = split_validation(training_rows(repeats=60), 0.0, cfg.seed)
        clock = Clock()
        trainer = build_trainer(
            cfg.trainer, model, tokenizer, rows, None, Path(work), cfg.seed, env.world_size, [clock]
        )
        lengths = [n for block in trainer.train_dataset["seq_lengths"] for n in block]
        trainer.train()
        (t0, n0), (t1, n1) = clock.start, clock.end
        save_s = saved_dtype = None
        if save:
            started = time.perf_counter()
            final = Path(work) / "model"
            save_final(trainer, tokenizer, final, cfg.model.dtype, cfg.trainer.weights_dtype, env)
            save_s = round(time.perf_counter() - started, 1)
            if env.is_main:
                saved = json.loads((final / "config.json").read_text())
                saved_dtype = saved.get("dtype") or saved.get("torch_dtype")
    if not env.is_main:
        return None
    per_gpu = (n1 - n0) / (t1 - t0) / env.world_size
    mean_document = sum(lengths) / len(lengths)
    achieved = per_gpu * flops_per_token(config, mean_document, non_embedding)
    return {
        "model": path,
        "gpus": env.world_size,
        "device": torch.cuda.get_device_name(),
        "tokens_per_second_per_gpu": round(per_gpu, 1),
        "mfu": round(achieved / peak, 4),
        "block_size": cfg.trainer.block_size,
        "mean_document_tokens": round(mean_document, 1),
        "attn_implementation": cfg.trainer.attn_implementation,
        "parameters": params,
        "layers": config.num_hidden_layers,
        "fsdp": cfg.trainer.fsdp.enabled,
        "weights_dtype": cfg.trainer.weights_dtype,
        "save_s": save_s,
        "saved_dtype": saved_dtype,
    }


def rows_from(result: dict) -> list[dict]:
    setting = f"{result['gpus']}x{result['device']}, {result['model']}, FSDP2, packing {result['block_size']}"
    return [
        {
            "figure": f"SFT tokens/s per GPU ({setting})",
            "ours": result["tokens_per_second_per_gpu"],
            "baseline": 5762.0,
            "ratio": round(result["tokens_per_second_per_gpu"] / 5762.0, 3),
            "target": TARGET + " (baseline: torchtitan FSDP2 Llama-3-8B)",
            "unit": "tokens/s/GPU",
        },
        {
            "figure": f"SFT model FLOPs utilisation ({setting})",
            "ours": result["mfu"],
            "baseline": None,
            "ratio": None,
            "target": "report",
            "unit": "fraction of peak bf16",
        },
    ] + (
        [
            {
                "figure": f"final save, gathered, written as {result['saved_dtype']} ({setting})",
                "ours": result["save_s"],
                "baseline": None,
                "ratio": None,
                "target": "reported (the saved config's dtype must be bfloat16)",
                "unit": "s",
            }
        ]
        if result.get("save_s") is not None
        else []
    )


def run(overrides: list[str] = (), flags: list[str] = ()) -> list[dict]:
    """Start one process per visible GPU (torchrun) and return the rows; skipped without CUDA.

    `flags`: --warmup=N, --steps=N (measured), --save (time the final save)."""
    import torch

    if not torch.cuda.is_available():
        raise unittest.SkipTest("no CUDA GPU here")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={torch.cuda.device_count()}",
            str(Path(__file__).resolve()),
            f"--out={out}",
            *flags,
            *overrides,
        ]
        subprocess.run(command, check=True, cwd=REPO)
        return rows_from(json.loads(out.read_text()))


def main(argv: list[str]) -> None:
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in argv if a.startswith("--"))
    out = flags.get("out")
    result = measure(
        [a for a in argv if not a.startswith("--")],
        warmup=int(flags.get("warmup", WARMUP_STEPS)),
        measured=int(flags.get("steps", MEASURED_STEPS)),
        save="save" in flags,
    )
    if result is None:
        return
    print(json.dumps(result))
    if out:
        Path(out).write_text(json.dumps(result))
    else:
        for row in rows_from(result):
            print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
