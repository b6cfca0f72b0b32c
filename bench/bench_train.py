"""Training throughput of the tiny model on CPU: packed padding-free batches vs plain padded batches.

Both runs train the same demo conversations with the demo recipe (global batch 4, block 1024) for the
same number of optimizer steps in this process; the figure is non-padding tokens per second of training
(the Trainer's own count and clock). Packing fills each row of the batch with whole conversations and
computes no pad tokens. Run: python bench/bench_train.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

STEPS = 8
WARMUP_STEPS = 2


def conversations(n_rows: int = 220):
    """The shipped demo rows as chat conversations, formatted like the curate stage does."""
    from datasets import Dataset

    from meds1.config.schema import FormatConfig
    from meds1.curation.formatting import to_messages
    from meds1.hub import resolve_data_path

    rows = [
        json.loads(line)
        for line in resolve_data_path("pkg://meds1/data/demo_sft.jsonl").read_text().splitlines()
    ]
    rows = [r for r in rows if r.get("Question") and r.get("Complex_CoT") and r.get("Response")][:n_rows]
    chats = [to_messages(r["Question"], r["Complex_CoT"], r["Response"], FormatConfig()) for r in rows]
    return Dataset.from_dict({"messages": chats})


def tokens_per_second(packing: bool, cache: Path, work: Path) -> float:
    """Non-padding tokens per second over the steps after warm-up."""
    from transformers import TrainerCallback

    from meds1.config.compose import compose
    from meds1.models import model_path
    from meds1.training.sft import build_trainer, load_model, split_validation

    cfg = compose(
        [
            "experiment=demo",
            f"trainer.packing={str(packing).lower()}",
            f"trainer.max_steps={STEPS}",
            "trainer.save_steps=1000",
            f"paths.cache={cache}",
        ]
    )
    model, tokenizer = load_model(
        model_path(cfg.model, cfg.paths.cache), None, cfg.trainer.weights_dtype, None
    )
    train_rows, _ = split_validation(conversations(), 0.0, cfg.seed)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == WARMUP_STEPS:
                self.start = (time.perf_counter(), state.num_input_tokens_seen)
            self.end = (time.perf_counter(), state.num_input_tokens_seen)

    clock = Clock()
    trainer = build_trainer(
        cfg.trainer, model, tokenizer, train_rows, None, work / str(packing), 0, 1, [clock]
    )
    trainer.train()
    (t0, n0), (t1, n1) = clock.start, clock.end
    return (n1 - n0) / (t1 - t0)


def run() -> list[dict]:
    from meds1.config.compose import compose
    from meds1.models import model_path

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        model_path(compose(["experiment=demo"]).model, str(cache))  # build the tiny model once
        padded = tokens_per_second(False, cache, Path(tmp))
        packed = tokens_per_second(True, cache, Path(tmp))
    return [
        {
            "figure": "tiny-model SFT throughput on CPU, packed padding-free vs padded batches",
            "ours": round(packed, 1),
            "baseline": round(padded, 1),
            "ratio": round(packed / padded, 2),
            "target": ">= 1.0 (packing never slower per real token)",
            "unit": "non-padding tokens/s",
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
