"""RL on the demo model (tiny, CPU): seconds per GRPO step against an SFT step, and the completion tokens per
second GRPO generates against meds1's hf backend generating the same prompts, all in this process.

GRPO runs the demo-rl recipe (8 completions per step: 2 questions x 4, `rl.max_completion_length` tokens at
temperature 1, KL to the starting model) through meds1's trainer (meds1.rl.grpo.build_trainer); the SFT
step is the demo recipe's (4 curated conversations) through meds1's SFT trainer. Generation inside GRPO is
timed where TRL generates a batch's completions (GRPOTrainer._generate_single_turn: transformers' generate,
or vLLM after syncing the weights); the baseline is meds1.inference's hf backend (eval's path) answering the
same prompts with the same sampling. With vLLM installed, a third row runs TRL's colocated vLLM generation
(a GPU; on vLLM's CPU build the row says why TRL cannot drive it). On a GPU node it runs on the GPU: that is
bench/accept_gpu.py's `rl` part. Run: python bench/bench_rl.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

STEPS = 4
WARMUP_STEPS = 1
MAX_TOKENS = 64


class StepClock:
    """Wall-clock seconds per optimizer step after the warm-up steps (a TrainerCallback)."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == WARMUP_STEPS:
                    clock.start = (time.perf_counter(), state.global_step)
                clock.end = (time.perf_counter(), state.global_step)

        self.callback = Callback()

    def seconds_per_step(self) -> float:
        (t0, s0), (t1, s1) = self.start, self.end
        return (t1 - t0) / (s1 - s0)


def config(cache: Path, *overrides: str):
    from meds1.config.compose import compose

    return compose(
        [
            "experiment=demo-rl",
            f"rl.max_completion_length={MAX_TOKENS}",
            "rl.temperature=1.0",  # the backend baseline samples at 1.0 too
            f"rl.max_steps={STEPS}",
            f"trainer.max_steps={STEPS}",
            "rl.save_steps=1000",
            "trainer.save_steps=1000",
            f"paths.cache={cache}",
            *overrides,
        ]
    )


def grpo(cache: Path, work: Path, *overrides: str) -> tuple[float, float]:
    """(seconds per GRPO step, completion tokens per second of generation inside it)."""
    from meds1.models import model_path
    from meds1.rl import data
    from meds1.rl.grpo import build_trainer
    from meds1.training.sft import load_model

    cfg = config(cache, *overrides)
    model, tokenizer = load_model(model_path(cfg.model, cfg.paths.cache), None, "float32", None)
    rows = data.epoch_rows(data.load_questions(cfg.rl)[0], cfg.rl, cfg.seed)
    clock = StepClock()
    trainer = build_trainer(cfg.rl, model, tokenizer, rows, work / "grpo", str(cache), 0, 1, [clock.callback])
    # TRL generates each batch's completions here (transformers' generate or vLLM, after syncing weights).
    generated = {"tokens": 0, "seconds": 0.0}
    generate = trainer._generate_single_turn

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        completion_ids, *rest = generate(*args, **kwargs)
        generated["seconds"] += time.perf_counter() - started
        generated["tokens"] += sum(len(ids) for ids in completion_ids)
        return (completion_ids, *rest)

    trainer._generate_single_turn = timed_generate
    trainer.train()
    return clock.seconds_per_step(), generated["tokens"] / generated["seconds"]


def sft_step(cache: Path, work: Path) -> float:
    from bench_train import conversations  # bench/bench_train.py (this script's folder is on sys.path)

    from meds1.models import model_path
    from meds1.training.sft import build_trainer, load_model, split_validation

    cfg = config(cache)
    model, tokenizer = load_model(model_path(cfg.model, cfg.paths.cache), None, "float32", None)
    rows, _ = split_validation(conversations(64), 0.0, 0)
    clock = StepClock()
    build_trainer(cfg.trainer, model, tokenizer, rows, None, work / "sft", 0, 1, [clock.callback]).train()
    return clock.seconds_per_step()


def backend_tokens_per_second(cache: Path) -> float:
    """meds1's hf backend (eval's path) answering the GRPO prompts: completion tokens per second."""
    from meds1.inference import Sampling, load_backend
    from meds1.models import model_path
    from meds1.rl import data

    cfg = config(cache, "inference.batch_size=8")
    rows = data.epoch_rows(data.load_questions(cfg.rl)[0], cfg.rl, cfg.seed)[:8]
    backend = load_backend(cfg.inference, cfg.model, model_path(cfg.model, cfg.paths.cache))
    conversations = [row["prompt"] for row in rows]
    sampling = Sampling(MAX_TOKENS, temperature=1.0, top_p=1.0, seed=0)
    backend.generate(conversations, sampling)  # warm-up
    started = time.perf_counter()
    tokens = sum(g.output_tokens for _ in range(STEPS) for g in backend.generate(conversations, sampling))
    return tokens / (time.perf_counter() - started)


def device() -> str:
    import torch

    return "GPU" if torch.cuda.is_available() else "CPU"


def vllm_row(cache: Path, work: Path, hf_tokens: float) -> dict:
    figure = f"tiny-model GRPO generation on {device()}: TRL's colocated vLLM vs transformers generate"
    row = {"figure": figure, "ours": None, "baseline": round(hf_tokens, 1), "ratio": None, "unit": "tokens/s"}
    from importlib.util import find_spec

    if find_spec("vllm") is None:
        return {**row, "target": "-", "note": "vLLM not installed"}
    try:
        seconds, tokens = grpo(cache, work, "rl.generator=vllm")
    except Exception as error:  # noqa: BLE001 (reported as the row's note)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        return {**row, "target": "-", "note": f"not driven here: {reason}"}
    return {**row, "ours": round(tokens, 1), "ratio": round(tokens / hf_tokens, 2), "target": "-"}


def run() -> list[dict]:
    from meds1.config.compose import compose
    from meds1.models import model_path

    with tempfile.TemporaryDirectory() as tmp:
        cache, work = Path(tmp) / "cache", Path(tmp)
        model_path(compose(["experiment=demo-rl"]).model, str(cache))  # build the tiny model once
        grpo_seconds, grpo_tokens = grpo(cache, work)
        sft_seconds = sft_step(cache, work)
        backend_tokens = backend_tokens_per_second(cache)
        vllm = vllm_row(cache, work, grpo_tokens)
    on = device()
    return [
        {
            "figure": f"tiny-model GRPO step on {on} (8 completions x {MAX_TOKENS} tokens, KL) vs SFT step",
            "ours": round(grpo_seconds, 3),
            "baseline": round(sft_seconds, 3),
            "ratio": round(grpo_seconds / sft_seconds, 2),
            "target": "-",
            "unit": "s/step",
        },
        {
            "figure": f"tiny-model generation on {on} in GRPO (TRL, transformers) vs meds1's hf backend",
            "ours": round(grpo_tokens, 1),
            "baseline": round(backend_tokens, 1),
            "ratio": round(grpo_tokens / backend_tokens, 2),
            "target": ">= 0.5 (GRPO's generation not far behind eval's)",
            "unit": "completion tokens/s",
        },
        vllm,
    ]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
