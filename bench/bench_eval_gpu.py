"""GPU eval benchmark: the HuatuoGPT-o1 suite (~8k questions) with an 8B model on vLLM, one GPU.

Run on a CUDA machine with `pip install -e ".[vllm]"`:

    MEDS1_EVAL_DATA=/path/to/eval python bench/bench_eval_gpu.py

It reports generation wall time and output tokens/s against the floor: at ~500 output tokens per
answer, one H100 needs ~3.2 min for 8,381 questions (~21.8k output tokens/s); the target is
<= 4 min. The floor is scaled by the mean answer length actually generated, so a model that writes
longer answers is not blamed for it. Without CUDA or vLLM it is skipped, saying why.

Settings (environment): MEDS1_EVAL_DATA (folder of eval files; default ../shared/data/eval, which
lacks GPQA: 7,991 questions), MEDS1_BENCH_MODEL (default meta-llama/Llama-3.1-8B-Instruct),
MEDS1_BENCH_MAX_NEW_TOKENS (default 2048), MEDS1_BENCH_DP (engines; default 1).

`MEDS1_BENCH_MODEL=random-8b` needs nothing downloaded: a Llama-3.1-8B-shaped model with random weights
(bench/random_llama.py; vLLM's dummy loader), 8,192 prompts (the suite's questions, repeated as needed;
the shipped demo questions when the suite folder is absent), every answer exactly 500 tokens (ignore_eos).

`MEDS1_BENCH_BACKEND=hf` (with MEDS1_BENCH_MODEL=DIR, a saved model) measures meds1's hf backend on the
GPU instead, where vLLM is not installed: 128 suite prompts, 64 per generate(), up to 256 new tokens,
against the same backend answering prompts one at a time (bench/accept_gpu.py's eval_hf part).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import unittest
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RANDOM_MODEL = "random-8b"
RANDOM_PROMPTS = 8192
RANDOM_NEW_TOKENS = 500
FLOOR_S = 3.2 * 60  # one H100, 8,381 questions, ~500 output tokens each
FLOOR_QUESTIONS = 8381
FLOOR_MEAN_TOKENS = 500
TARGET_S = 4 * 60
HF_PROMPTS = 128
HF_BATCH = 64
HF_NEW_TOKENS = 256
HF_SINGLE = 4


def unavailable(backend: str = "vllm") -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if backend == "vllm" and find_spec("vllm") is None:
        return "vLLM is not installed (pip install -e '.[vllm]')"
    return None


def run() -> list[dict]:
    backend = os.environ.get("MEDS1_BENCH_BACKEND", "vllm")
    if backend not in ("vllm", "hf"):
        raise SystemExit(f"bench_eval_gpu: MEDS1_BENCH_BACKEND={backend}: vllm or hf")
    reason = unavailable(backend)
    if reason:
        raise unittest.SkipTest(reason)
    from meds1.config.compose import compose
    from meds1.evaluation.data import load_suite
    from meds1.evaluation.prompts import build_conversation

    data = os.environ.get("MEDS1_EVAL_DATA", str(REPO.parent / "shared" / "data" / "eval"))
    model = os.environ.get("MEDS1_BENCH_MODEL", "meta-llama/Llama-3.1-8B-Instruct")
    if backend == "hf":
        if not Path(data).exists():
            data = "pkg://meds1/data/demo_eval.json"
        cfg = compose(["experiment=base", "inference=hf", f"model.path={model}", "inference.dtype=bfloat16"])
        rows, _ = load_suite([data])
        conversations = [build_conversation(rows[i % len(rows)], cfg.eval) for i in range(HF_PROMPTS)]
        return hf_rows(cfg, model, conversations)
    overrides = ["experiment=base", "inference=vllm", f"model.path={model}"]
    overrides.append(f"inference.data_parallel_size={os.environ.get('MEDS1_BENCH_DP', '1')}")
    if model == RANDOM_MODEL:
        overrides += ["inference.max_model_len=4096", "+inference.engine_args.load_format=dummy"]
        if not Path(data).exists():
            data = "pkg://meds1/data/demo_eval.json"
    cfg = compose(overrides)
    rows, _ = load_suite([data])
    conversations = [build_conversation(row, cfg.eval) for row in rows]
    max_new_tokens = int(os.environ.get("MEDS1_BENCH_MAX_NEW_TOKENS", cfg.eval.max_new_tokens))
    fixed = model == RANDOM_MODEL
    if fixed and cfg.inference.data_parallel_size != 1:
        raise SystemExit("bench_eval_gpu: MEDS1_BENCH_MODEL=random-8b runs one engine (MEDS1_BENCH_DP=1)")
    with tempfile.TemporaryDirectory() as tmp:
        if fixed:
            from random_llama import build  # bench/random_llama.py (this script's folder is on sys.path)

            model = str(build(Path(tmp) / RANDOM_MODEL))
            conversations = [conversations[i % len(conversations)] for i in range(RANDOM_PROMPTS)]
            max_new_tokens = RANDOM_NEW_TOKENS
        load_s, wall_s, tokens = generate(cfg, model, conversations, max_new_tokens, fixed)
    return throughput_rows(len(conversations), tokens, wall_s, load_s, Path(model).name)


def generate(
    cfg, model: str, conversations: list, max_new_tokens: int, fixed: bool
) -> tuple[float, float, int]:
    """(engine start s, generation wall s, output tokens); `fixed`: every answer exactly max_new_tokens."""
    from meds1.inference import Sampling, load_backend
    from meds1.inference.vllm import stream_answers

    started = time.perf_counter()
    backend = load_backend(cfg.inference, cfg.model, model)
    load_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        if fixed:  # straight to the engine: Sampling has no ignore_eos
            rendered = [backend.render(c) for c in conversations]
            encoded = backend.tokenizer(rendered, add_special_tokens=False)["input_ids"]
            params = {"max_tokens": max_new_tokens, "temperature": 0.0, "ignore_eos": True}
            counts = []
            stream_answers(backend.llm, [(i, ids, params) for i, ids in enumerate(encoded)],
                           lambda i, g: counts.append(g.output_tokens))  # fmt: skip
            tokens = sum(counts)
        else:
            generations = backend.generate(conversations, Sampling(max_new_tokens=max_new_tokens))
            tokens = sum(g.output_tokens for g in generations)
        wall_s = time.perf_counter() - started
    finally:
        backend.close()
    return load_s, wall_s, tokens


def hf_rows(cfg, model: str, conversations: list) -> list[dict]:
    """meds1's hf backend on the GPU: output tokens/s with HF_BATCH prompts per generate(), against the
    same backend answering the first HF_SINGLE of them one at a time; greedy, up to HF_NEW_TOKENS each."""
    from meds1.inference import Sampling, load_backend

    backend = load_backend(cfg.inference, cfg.model, model)
    sampling = Sampling(max_new_tokens=HF_NEW_TOKENS)

    def tokens_per_second(batch_size: int, prompts: list) -> float:
        backend.batch_size = batch_size
        started = time.perf_counter()
        generations = backend.generate(prompts, sampling)
        return sum(g.output_tokens for g in generations) / (time.perf_counter() - started)

    try:
        backend.generate(conversations[:2], Sampling(max_new_tokens=8))  # CUDA context, kernels, allocator
        batched = tokens_per_second(HF_BATCH, conversations)
        single = tokens_per_second(1, conversations[:HF_SINGLE])
    finally:
        backend.close()
    what = (
        f"{len(conversations)} suite prompts, {HF_BATCH} per generate(), <= {HF_NEW_TOKENS} new tokens, "
        f"{Path(model).name}; stand-in for vLLM"
    )
    return [
        {
            "figure": f"eval gpu: hf backend output tokens/s ({what}; baseline: one prompt at a time)",
            "ours": round(batched, 1),
            "baseline": round(single, 1),
            "ratio": round(batched / single, 2),
            "target": "reported (the vLLM figure is bench_eval_gpu.py's)",
            "unit": "tokens/s",
        }
    ]


def throughput_rows(questions: int, tokens: int, wall_s: float, load_s: float, model: str) -> list[dict]:
    mean_tokens = tokens / questions
    # The floor for this run: the H100 floor's token rate applied to this run's tokens.
    floor_tps = FLOOR_QUESTIONS * FLOOR_MEAN_TOKENS / FLOOR_S
    floor_s = tokens / floor_tps
    what = f"{questions} questions, {model}, mean {mean_tokens:.0f} output tokens"
    minutes_8k = wall_s / 60 * RANDOM_PROMPTS / questions
    return [
        {
            "figure": f"eval gpu: vLLM generation wall time ({what})",
            "ours": wall_s,
            "baseline": floor_s,
            "ratio": wall_s / floor_s,
            "target": f"<= {TARGET_S * tokens / (FLOOR_QUESTIONS * FLOOR_MEAN_TOKENS):.0f} s "
            f"(4 min at 8,381 x 500 tokens; floor {floor_s:.0f} s)",
            "unit": "s",
        },
        {
            "figure": f"eval gpu: minutes per 8,192 questions at this answer length ({what})",
            "ours": minutes_8k,
            "baseline": 5.0,
            "ratio": minutes_8k / 5.0,
            "target": "<= 4 min (baseline: the seed's ~5 min)",
            "unit": "min",
        },
        {
            "figure": f"eval gpu: vLLM output tokens/s ({what})",
            "ours": tokens / wall_s,
            "baseline": floor_tps,
            "ratio": tokens / wall_s / floor_tps,
            "target": ">= 0.8 of the floor's rate (3.2 min vs 4 min)",
            "unit": "tokens/s",
        },
        {
            "figure": "eval gpu: vLLM engine start (load + CUDA graphs)",
            "ours": load_s,
            "baseline": None,
            "ratio": None,
            "target": "reported, not targeted",
            "unit": "s",
        },
    ]


if __name__ == "__main__":
    try:
        for row in run():
            print(json.dumps(row))
    except unittest.SkipTest as skipped:
        sys.exit(f"bench_eval_gpu: skipped: {skipped}")
