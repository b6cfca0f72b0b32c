"""GPU acceptance in one command, on one H100/H200 with nothing to download (about 8 min), one table:

    python bench/accept_gpu.py

1. eval: vLLM on a random Llama-3.1-8B-shaped model (config built here, dummy weights), 8,192 suite-length
   prompts, every answer 500 tokens (ignore_eos): minutes per 8k questions, goal <= 4
   (bench/bench_eval_gpu.py with MEDS1_BENCH_MODEL=random-8b, in its own process).
2. train: meds1's training path with the s1 recipe (bf16 compute, float32 master weights, packing into
   16,384-token blocks, activation checkpointing) for 2 + 3 steps on every visible GPU, then the final
   save (shards gathered, written in bf16): tokens/s/GPU and MFU (bench/bench_train_gpu.py). The model is
   the 8B's shape with as many decoder layers as fit (float32 weights + gradients + Adam: 16 bytes per
   parameter, on 55% of the GPUs' memory; all 32 on 8 GPUs); MFU carries over to the full model. FSDP2
   shards with 2+ GPUs; with one GPU meds1 trains in one process without FSDP (it refuses FSDP there).
3. `pytest -m "gpu or vllm"`: the GPU tests and the vLLM engine contract on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import bench_train_gpu  # noqa: E402
import random_llama  # noqa: E402
from bench_eval_gpu import RANDOM_MODEL  # noqa: E402

from run import print_table, run_benchmark, target_met  # noqa: E402  (bench/run.py)

TRAIN_MEMORY_SHARE = 0.55  # the rest: activations, the logits of a 16k block, allocator slack


def layers_that_fit(gpus: int, bytes_per_gpu: int) -> int:
    states = TRAIN_MEMORY_SHARE * bytes_per_gpu * gpus / 16  # parameters whose fp32 training state fits
    layers = int((states - random_llama.embedding_parameters()) // random_llama.layer_parameters())
    return max(1, min(random_llama.LLAMA_8B["num_hidden_layers"], layers))


def evaluation() -> dict:
    os.environ["MEDS1_BENCH_MODEL"] = RANDOM_MODEL
    return run_benchmark("eval_gpu (random 8B)", BENCH / "bench_eval_gpu.py", timeout=None)


def training() -> dict:
    import torch

    gpus = torch.cuda.device_count()
    layers = layers_that_fit(gpus, torch.cuda.get_device_properties(0).total_memory)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ.get("MEDS1_ACCEPT_TMP")) as tmp:
        path = random_llama.build(Path(tmp) / f"llama-8b-shape-{layers}-layers", layers, weights=True)
        overrides = [
            f"model.path={path}",
            "model.dtype=bfloat16",
            "trainer.weights_dtype=float32",
            f"trainer.global_batch_size={max(4, gpus)}",
            f"trainer.fsdp.enabled={str(gpus >= 2).lower()}",
        ]
        try:
            rows = bench_train_gpu.run(overrides, ["--warmup=2", "--steps=3", "--save"])
        except subprocess.CalledProcessError as error:
            return {"benchmark": f"train ({layers} layers)", "error": str(error), "seconds": 0}
    seconds = round(time.perf_counter() - started, 1)
    return {"benchmark": f"train ({layers} of 32 layers)", "rows": rows, "seconds": seconds}


def tests() -> dict:
    started = time.perf_counter()
    # One process (-n 0): the GPU tests and engines each take the GPU.
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or vllm", "-n", "0", "-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(result.stdout[-4000:], result.stderr[-2000:], sep="\n", file=sys.stderr)
    row = {
        "figure": f"pytest -m 'gpu or vllm': {summary}",
        "ours": float(result.returncode),
        "baseline": None,
        "ratio": None,
        "target": "<= 0",
        "unit": "exit status",
    }
    return {"benchmark": "tests", "rows": [row], "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("accept_gpu: needs a CUDA GPU (torch sees none here); run it on a GPU node", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = [evaluation(), training(), tests()]
    for result in results:
        for row in result.get("rows", []):
            row["met"] = target_met(row)
    print_table(results)
    print(f"accept_gpu: {time.perf_counter() - started:.0f} s in all", file=sys.stderr)
    return (
        1
        if any("error" in r or any(row["met"] is False for row in r.get("rows", [])) for r in results)
        else 0
    )


if __name__ == "__main__":
    sys.exit(main())
