"""GPU training throughput: tokens/s per GPU and MFU of an 8B model, FSDP2 + packing, one process per GPU.

Needs CUDA GPUs and the model's weights (hub cache or model.path=/local/dir); not run in CI. Launch:

    torchrun --nproc_per_node=8 bench/bench_train_gpu.py [--warmup=3] [--steps=10] [--save[=DIR]]
        [--full-layers=N] [--out=FILE] [config overrides]
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
import math
import os
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
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
CHARS_PER_TOKEN = 4  # Llama-3 on English; a tokenizer of fewer per token makes more tokens than asked
TORCHTITAN_8B = 5762.0  # tokens/s/GPU, torchtitan's FSDP2 Llama-3-8B on 8xH100
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


def training_rows(tokens: int):
    """The SFT rows as chats, repeated to about `tokens` tokens (at CHARS_PER_TOKEN): what the steps train
    on, tokenized and packed before the first step. Short, the trainer would start over on them."""
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
    repeats = math.ceil(tokens * CHARS_PER_TOKEN / sum(len(m["content"]) for c in chats for m in c))
    return Dataset.from_dict({"messages": chats * repeats})


def flops_per_token(
    layers: int, hidden: int, mean_document_tokens: float, non_embedding_params: int
) -> float:
    return 6 * non_embedding_params + 12 * layers * hidden * mean_document_tokens


def figures(
    per_gpu: float,
    mean_document: float,
    layers: int,
    hidden: int,
    non_embedding: int,
    per_layer: int,
    full_layers: int,
    peak: float,
) -> dict:
    """From the trained tokens/s per GPU: the FLOP/s achieved, MFU against `peak`, and the tokens/s per GPU
    of the model of `full_layers` layers (`per_layer` parameters each) at the same FLOP/s."""
    achieved = per_gpu * flops_per_token(layers, hidden, mean_document, non_embedding)
    full_non_embedding = non_embedding + (full_layers - layers) * per_layer
    full = achieved / flops_per_token(full_layers, hidden, mean_document, full_non_embedding)
    return {
        "tokens_per_second_per_gpu": round(per_gpu, 1),
        "full_model_tokens_per_second_per_gpu": round(full, 1),
        "achieved_tflops": round(achieved / 1e12, 1),
        "peak_tflops": round(peak / 1e12, 1),
        "mfu": round(achieved / peak, 4),
        "mean_document_tokens": round(mean_document, 1),
        "layers": layers,
        "full_layers": full_layers,
    }


def measure(
    overrides: list[str],
    warmup: int = WARMUP_STEPS,
    measured: int = MEASURED_STEPS,
    save: Path | None = None,
    full_layers: int | None = None,
    report: Callable[[dict], None] = lambda result: None,
) -> dict | None:
    """Train `warmup` + `measured` steps on this process's GPU; rank 0 returns the figures, and hands them
    to `report` as soon as they are measured (before the save).

    `save`: then save the model to this folder as training does at its end (shards gathered, written in
    model.dtype), timed, and read back its dtype. `full_layers`: the layers of the model this one was cut
    from (bench/random_llama.py builds fewer where memory is short), for its tokens/s at the same FLOP/s."""
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
        per_layer = sum(p.numel() for p in model.get_decoder().layers[0].parameters())
        tokens = steps * cfg.trainer.global_batch_size * cfg.trainer.block_size
        rows, _ = split_validation(training_rows(tokens), 0.0, cfg.seed)
        clock = Clock()
        trainer = build_trainer(
            cfg.trainer, model, tokenizer, rows, None, Path(work), cfg.seed, env.world_size, [clock]
        )
        lengths = [n for block in trainer.train_dataset["seq_lengths"] for n in block]
        trainer.train()
        (t0, n0), (t1, n1) = clock.start, clock.end
        layers = config.num_hidden_layers
        result = {
            "model": Path(path).name,
            "gpus": env.world_size,
            "device": torch.cuda.get_device_name(),
            **figures(
                (n1 - n0) / (t1 - t0) / env.world_size,
                sum(lengths) / len(lengths),
                layers,
                config.hidden_size,
                non_embedding,
                per_layer,
                full_layers or layers,
                peak,
            ),
            "block_size": cfg.trainer.block_size,
            "attn_implementation": cfg.trainer.attn_implementation,
            "parameters": params,
            "fsdp": cfg.trainer.fsdp.enabled,
            "weights_dtype": cfg.trainer.weights_dtype,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        }
        if env.is_main:
            report(result)
        if save:
            started = time.perf_counter()
            save_final(trainer, tokenizer, save, cfg.model.dtype, cfg.trainer.weights_dtype, env)
            result["save_s"] = round(time.perf_counter() - started, 1)
            if env.is_main:
                saved = json.loads((save / "config.json").read_text())
                result["saved_dtype"] = saved.get("dtype") or saved.get("torch_dtype")
                report(result)
    return result if env.is_main else None


def rows_from(result: dict, save_baseline_s: float | None = None) -> list[dict]:
    """The table's rows; `save_baseline_s`: seconds to write a bf16 model of the same shape, plainly."""
    parallel = "FSDP2" if result["fsdp"] else ("DDP" if result["gpus"] > 1 else "no sharding")
    setting = (
        f"{result['gpus']}x{result['device']}, {result['model']}, {parallel}, "
        f"packing {result['block_size']}, {result['attn_implementation']}"
    )
    layers, full_layers = result["layers"], result["full_layers"]
    rows = []
    if layers != full_layers:
        rows.append(
            {
                "figure": f"SFT tokens/s per GPU of the {layers}-layer model as trained ({setting})",
                "ours": result["tokens_per_second_per_gpu"],
                "baseline": None,
                "ratio": None,
                "target": f"reported (the {full_layers}-layer model's figure is the next row)",
                "unit": "tokens/s/GPU",
            }
        )
    cut = f" at the FLOP/s measured on {layers} of them" if layers != full_layers else ""
    full = result["full_model_tokens_per_second_per_gpu"]
    rows += [
        {
            "figure": f"SFT tokens/s per GPU, {full_layers}-layer model{cut} ({setting})",
            "ours": full,
            "baseline": TORCHTITAN_8B,
            "ratio": round(full / TORCHTITAN_8B, 3),
            "target": TARGET + " (baseline: torchtitan FSDP2 Llama-3-8B)",
            "unit": "tokens/s/GPU",
        },
        {
            "figure": f"SFT model FLOP/s, MFU = ratio to the GPU's dense bf16 peak ({setting})",
            "ours": result["achieved_tflops"],
            "baseline": result["peak_tflops"],
            "ratio": result["mfu"],
            "target": "reported",
            "unit": "TFLOP/s",
        },
    ]
    if result.get("save_s") is not None:
        rows.append(
            {
                "figure": f"final save: gathered, written as {result['saved_dtype']} (baseline: the same "
                f"shape's random bf16 weights written by save_pretrained) ({setting})",
                "ours": result["save_s"],
                "baseline": save_baseline_s,
                "ratio": round(result["save_s"] / save_baseline_s, 2) if save_baseline_s else None,
                "target": "reported (the saved config's dtype must be bfloat16)",
                "unit": "s",
            }
        )
    return rows


def command(flags: list[str], overrides: list[str]) -> list[str]:
    """torchrun with one process per visible GPU, each running `measure` through this file's `main`."""
    import torch

    script = str(Path(__file__).resolve())
    gpus = f"--nproc_per_node={torch.cuda.device_count()}"
    return [sys.executable, "-m", "torch.distributed.run", gpus, script, *flags, *overrides]


def run(overrides: list[str] = (), flags: list[str] = ()) -> list[dict]:
    """Start one process per visible GPU (torchrun) and return the rows; skipped without CUDA.

    `flags`: --warmup=N, --steps=N (measured), --save[=DIR] (time the final save; keep it in DIR),
    --full-layers=N (see `measure`)."""
    import torch

    if not torch.cuda.is_available():
        raise unittest.SkipTest("no CUDA GPU here")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run(command([f"--out={out}", *flags], list(overrides)), check=True, cwd=REPO)
        return rows_from(json.loads(out.read_text()))


def main(argv: list[str]) -> None:
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in argv if a.startswith("--"))
    out = Path(flags["out"]) if flags.get("out") else None

    def report(result: dict) -> None:  # rank 0, after training and again after the save
        if out:
            out.write_text(json.dumps(result))

    with tempfile.TemporaryDirectory() as tmp:
        result = measure(
            [a for a in argv if not a.startswith("--")],
            warmup=int(flags.get("warmup", WARMUP_STEPS)),
            measured=int(flags.get("steps", MEASURED_STEPS)),
            save=Path(flags["save"] or Path(tmp) / "model") if "save" in flags else None,
            full_layers=int(flags["full-layers"]) if "full-layers" in flags else None,
            report=report,
        )
    if result is None:
        return
    print(json.dumps(result))
    if not out:
        for row in rows_from(result):
            print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
