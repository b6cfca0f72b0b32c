"""GPU acceptance in one command, on one or more H100/H200 GPUs with nothing to download, one table:

    python bench/accept_gpu.py [--only train,eval_hf,eval_vllm,rl,tests] [--budget 420] [--out DIR]

On the device tool's lent machine, `python3 bench/device/accept.py` installs the packages missing there
and runs this. The parts run in this order, each in its own process, each within its cap and what is left
of --budget seconds (a part with less than 30 s left is skipped, saying so):

1. train: meds1's training path with the s1 recipe (bf16 compute, float32 master weights, packing into
   16,384-token blocks, activation checkpointing) for 2 + 3 steps on every visible GPU, then the final
   save (gathered, written in bf16), through bench/bench_train_gpu.py, on a Llama-3.1-8B-shaped model
   with random weights built here and as many decoder layers as fit (`layers_that_fit`): tokens/s/GPU,
   the full 32-layer model's tokens/s/GPU at the FLOP/s measured, against torchtitan's 8B figure, and
   MFU against the GPU's dense bf16 peak, beside a bf16 matrix product's rate measured first. FSDP2
   shards with 2+ GPUs; one GPU trains in one process (meds1 refuses FSDP there).
2. eval_hf: the model just trained and saved, through meds1's hf backend on the GPU (batched generate):
   output tokens/s against the same backend answering one prompt at a time. It stands in where vLLM is
   not installed, and is not the vLLM figure.
3. eval_vllm: vLLM on the 8B shape with dummy weights, 8,192 suite-length prompts of 500 output tokens:
   minutes per 8k questions, goal <= 4 (bench/bench_eval_gpu.py); skipped, saying why, without vLLM.
4. rl: bench/bench_rl.py on the GPU: seconds per GRPO step of the tiny model against an SFT step, the
   completion tokens/s TRL generates inside GRPO against meds1's hf backend, and with TRL's colocated vLLM.
5. tests: `pytest -m gpu` (`-m "gpu or vllm"` where vLLM is installed); its log goes to DIR/pytest.log.

After each part, DIR/results.json holds the machine and every result so far (default DIR:
bench/results/accept_gpu/; $MEDS1_ACCEPT_TMP: where the models are written, default the system's tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from subprocess import TimeoutExpired

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import bench_eval_gpu  # noqa: E402
import bench_train_gpu  # noqa: E402
import random_llama  # noqa: E402

from run import print_table, run_benchmark, run_group, target_met  # noqa: E402  (bench/run.py)

BUDGET_S = 420
MIN_PART_S = 30
CAPS_S = {"train": 300, "eval_hf": 90, "eval_vllm": 300, "rl": 150, "tests": 150}
TRAIN_MEMORY_SHARE = 0.55  # the rest: activations, the logits of a 16k block, allocator slack
TRAIN_STATE_BYTES = 16  # per parameter: float32 weights, gradients and Adam's two moments
DISK_SHARE = 0.8
DISK_BYTES = 8  # per parameter: the random model (bf16), the final save (float32) and its bf16 rewrite
FULL_LAYERS = random_llama.LLAMA_8B["num_hidden_layers"]
MATMUL_N = 8192


def layers_that_fit(gpus: int, bytes_per_gpu: int, free_disk: int) -> int:
    """Decoder layers of the 8B shape whose training state fits 55% of the GPUs' memory and whose three
    copies on disk fit 80% of the free disk: at least 1, at most the 8B's 32."""
    parameters = min(
        TRAIN_MEMORY_SHARE * bytes_per_gpu * gpus / TRAIN_STATE_BYTES, DISK_SHARE * free_disk / DISK_BYTES
    )
    layers = int((parameters - random_llama.embedding_parameters()) // random_llama.layer_parameters())
    return max(1, min(FULL_LAYERS, layers))


def matmul_row() -> dict:
    """The bf16 matrix product rate on random data, beside the datasheet peak that MFU is read against."""
    import torch

    a, b = (torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    measured = 10 * 2 * MATMUL_N**3 / (start.elapsed_time(end) / 1e3) / 1e12
    peak = bench_train_gpu.peak_flops(torch.cuda.get_device_name()) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return {
        "figure": f"bf16 matrix product {MATMUL_N}^3 on random data (baseline: the dense bf16 peak)",
        "ours": round(measured, 1),
        "baseline": peak,
        "ratio": round(measured / peak, 3),
        "target": "reported (what MFU can reach here)",
        "unit": "TFLOP/s",
    }


def memory_row(result: dict, total_bytes: int) -> dict:
    return {
        "figure": f"peak GPU memory allocated in training ({result['layers']} layers chosen to keep the "
        f"training state within {TRAIN_MEMORY_SHARE:.0%} of it)",
        "ours": result["peak_memory_gib"],
        "baseline": round(total_bytes / 2**30, 1),
        "ratio": round(result["peak_memory_gib"] * 2**30 / total_bytes, 3),
        "target": "reported",
        "unit": "GiB",
    }


def train(seconds: float, work: Path, out: Path) -> dict:
    import torch

    gpus = torch.cuda.device_count()
    total = torch.cuda.get_device_properties(0).total_memory
    layers = layers_that_fit(gpus, total, shutil.disk_usage(work).free)
    name = f"train ({layers} of {FULL_LAYERS} layers)"
    deadline = time.monotonic() + seconds
    rows = [matmul_row()]
    started = time.perf_counter()
    path = random_llama.build(work / f"llama-8b-shape-{layers}-layers", layers, weights=True)
    build_s = round(time.perf_counter() - started, 1)
    overrides = [
        f"model.path={path}",
        "model.dtype=bfloat16",
        "trainer.weights_dtype=float32",
        f"trainer.global_batch_size={max(4, gpus)}",
        f"trainer.fsdp.enabled={str(gpus >= 2).lower()}",
    ]
    result_file = work / "train.json"
    trained = work / f"trained-{layers}-of-{FULL_LAYERS}-layers"
    flags = ["--warmup=2", "--steps=3", f"--save={trained}", f"--full-layers={FULL_LAYERS}"]
    error = None
    try:
        command = bench_train_gpu.command([*flags, f"--out={result_file}"], overrides)
        if code := run_group(command, deadline - time.monotonic(), cwd=REPO):
            error = f"bench_train_gpu.py exited with status {code}"
    except TimeoutExpired:
        error = f"timed out after {seconds:.0f} s"
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    if result:
        rows += [*bench_train_gpu.rows_from(result, build_s), memory_row(result, total)]
        if result.get("saved_dtype") not in (None, "bfloat16"):
            error = error or f"the final save wrote {result['saved_dtype']}, not bfloat16"
    return {"benchmark": name, "rows": rows, **({"error": error} if error else {})}


def eval_hf(seconds: float, work: Path, out: Path) -> dict:
    trained = json.loads((work / "train.json").read_text()) if (work / "train.json").exists() else {}
    if trained.get("save_s") is None:
        return {"benchmark": "eval_hf", "skipped": "the train part saved no model"}
    [model] = work.glob("trained-*")
    os.environ.update(MEDS1_BENCH_BACKEND="hf", MEDS1_BENCH_MODEL=str(model))
    return run_benchmark("eval_hf (the trained model)", BENCH / "bench_eval_gpu.py", timeout=seconds)


def eval_vllm(seconds: float, work: Path, out: Path) -> dict:
    if reason := bench_eval_gpu.unavailable("vllm"):
        return {
            "benchmark": "eval_vllm",
            "skipped": f"{reason}: the vLLM figure is owed by a GPU node with vLLM",
        }
    os.environ.update(MEDS1_BENCH_BACKEND="vllm", MEDS1_BENCH_MODEL=bench_eval_gpu.RANDOM_MODEL)
    return run_benchmark("eval_vllm (random 8B)", BENCH / "bench_eval_gpu.py", timeout=seconds)


def rl(seconds: float, work: Path, out: Path) -> dict:
    """bench/bench_rl.py on the GPU: a GRPO step against an SFT step, generation inside GRPO against the hf
    backend, and TRL's colocated vLLM generation (the GPU figure)."""
    return run_benchmark("rl (tiny model, GRPO on the GPU)", BENCH / "bench_rl.py", timeout=seconds)


def tests(seconds: float, work: Path, out: Path) -> dict:
    marks = "gpu" if bench_eval_gpu.unavailable("vllm") else "gpu or vllm"
    # One process (-n 0): the GPU tests and engines each take the GPU.
    command = [sys.executable, "-m", "pytest", "-q", "-m", marks, "-n", "0", "-p", "no:cacheprovider"]
    return exit_status("tests", f"pytest -m '{marks}'", command, seconds, out / "pytest.log")


def exit_status(name: str, what: str, command: list[str], seconds: float, log: Path) -> dict:
    """Run `command` with its output in `log`; one row: its exit status and its last line."""
    try:
        with log.open("w") as output:
            code = run_group(command, seconds, cwd=REPO, stdout=output, stderr=output)
    except TimeoutExpired:
        return {"benchmark": name, "error": f"{what}: timed out after {seconds:.0f} s (see {log.name})"}
    last = ([line for line in log.read_text().splitlines() if line.strip()] or ["(no output)"])[-1]
    row = {
        "figure": f"{what}: {last.strip()}",
        "ours": float(code),
        "baseline": None,
        "ratio": None,
        "target": "<= 0",
        "unit": "exit status",
    }
    return {"benchmark": name, "rows": [row]}


PARTS = {"train": train, "eval_hf": eval_hf, "eval_vllm": eval_vllm, "rl": rl, "tests": tests}


def machine() -> dict:
    import platform

    import torch

    from meds1.store.provenance import installed_version

    properties = torch.cuda.get_device_properties(0)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpus": torch.cuda.device_count(),
        "device": torch.cuda.get_device_name(),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        **{name: installed_version(name) for name in ("torch", "transformers", "trl", "datasets", "vllm")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/accept_gpu.py", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts, comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all the parts")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "accept_gpu")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := [name for name in chosen if name not in PARTS]:
        print(
            f"accept_gpu: --only {','.join(unknown)}: no such part; parts: {', '.join(PARTS)}",
            file=sys.stderr,
        )
        return 2
    import torch

    if not torch.cuda.is_available():
        print("accept_gpu: needs a CUDA GPU (torch sees none here); run it on a GPU node", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine(), "budget_s": args.budget, "results": []}
    print(f"accept_gpu: {json.dumps(record['machine'])}", flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("MEDS1_ACCEPT_TMP")) as tmp:
        for name in chosen:
            left = min(CAPS_S[name], deadline - time.monotonic())
            started = time.perf_counter()
            if left < MIN_PART_S:
                result = {"benchmark": name, "skipped": f"no time left in the {args.budget:.0f} s budget"}
            else:
                print(f"accept_gpu: {name} (at most {left:.0f} s)", flush=True)
                result = PARTS[name](left, Path(tmp), args.out)
            result["seconds"] = round(time.perf_counter() - started, 1)
            for row in result.get("rows", []):
                row["met"] = target_met(row)
            record["results"].append(result)
            (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print_table(record["results"])
    failed = any(
        "error" in r or any(row["met"] is False for row in r.get("rows", [])) for r in record["results"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
