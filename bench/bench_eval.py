"""Eval benchmarks on CPU: scoring 8k predictions, and hf backend throughput vs a one-prompt-at-a-time loop.

Run: python bench/bench_eval.py (prints one row per figure). `run()` returns the rows for the
benchmark runner. Figures are measured against a baseline in the same run:

- scoring: judge (strict extraction) + score (per source, HuatuoGPT-compatible, bootstrap) of 8,192
  predictions; the baseline is reading the same predictions file (json per line), so the ratio says
  what scoring costs relative to I/O on this machine. Outputs are real long chains of thought (the
  HuatuoGPT-o1 SFT sample in ../shared/data, with its own multiple-choice questions) ending in
  answers of the styles models write; without that folder, the shipped demo questions are used.
- every harness: judge + score with all five accuracies (strict, HuatuoGPT, MedReason, m1, med-s1) of
  8,381 questions (HuatuoGPT-o1's eval set, its five sources at their sizes) x 3 repeats, against what
  scoring cost before the harnesses (judge + one HuatuoGPT match per prediction + the same summaries
  of strict accuracy with their intervals), in the same run; the issue's bound is 2x. Outputs mix the
  layouts the harnesses cut differently ("## Final Response", "## Final Answer", \\boxed{}, empty).
- hf throughput: output tokens/s of `HFBackend.generate` (batched, left-padded, longest first) on
  the tiny model vs a naive loop that calls `model.generate` for one prompt at a time.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDS1_SHARED_DATA", REPO.parent / "shared" / "data"))
N_PREDICTIONS = 8192
N_PROMPTS = 48
NEW_TOKENS = 32


def _mcq_with_reasoning() -> list[tuple[dict, str]]:
    """(question row, chain of thought) pairs: real ones when ../shared/data is there."""
    sample = SHARED_DATA / "sft" / "huatuogpt-o1_demo_data.json"
    if sample.exists():
        rows = json.loads(sample.read_text())
        return [
            (
                {"question": r["question"], "options": r["options"], "answer_idx": r["answer_idx"]},
                r["Complex_CoT"],
            )
            for r in rows
            if isinstance(r.get("options"), dict)
        ]
    from meds1.hub import resolve_data_path

    demo = json.loads(resolve_data_path("pkg://meds1/data/demo_eval.json").read_text())
    return [
        (row, "Let me think through each option in turn. " * 40) for rows in demo.values() for row in rows
    ]


def _answer(row: dict, rng: random.Random) -> str:
    """A final response in one of the styles models write (70% right, 8% committing to nothing)."""
    letter = row["answer_idx"] if rng.random() < 0.7 else rng.choice(list(row["options"]))
    text = row["options"][letter]
    styles = [
        f"The answer is {letter}.",
        f"**{letter}. {text}**",
        f"{text} is the most likely answer here.",
        f"Therefore, the final answer is $\\boxed{{{letter}}}$.",
        "Several of these are plausible and more information would be needed.",
    ]
    return rng.choices(styles, weights=[55, 15, 12, 10, 8])[0]


def predictions() -> list[dict]:
    rng = random.Random(0)
    pairs = _mcq_with_reasoning()
    rows = []
    for i in range(N_PREDICTIONS):
        row, cot = pairs[i % len(pairs)]
        output = f"## Thinking\n\n{cot}\n\n## Final Response\n\n{_answer(row, rng)}"
        rows.append(
            {**row, "id": str(i), "source": f"S{i % 5}", "output": output, "output_tokens": len(output) // 4}
        )
    return rows


def bench_scoring() -> dict:
    from meds1.evaluation.scoring import judge, score

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "predictions.jsonl"
        file.write_text("".join(json.dumps(row) + "\n" for row in predictions()))
        started = time.perf_counter()
        rows = [json.loads(line) for line in file.read_text().splitlines()]
        read_s = time.perf_counter() - started
    started = time.perf_counter()
    score([judge(row) for row in rows])
    score_s = time.perf_counter() - started
    return {
        "figure": f"eval: score {N_PREDICTIONS} predictions (extract + per-source metrics + bootstrap)",
        "ours": score_s,
        "baseline": read_s,
        "ratio": score_s / read_s,
        "target": "< 1 s (baseline: reading the predictions file)",
        "unit": "s",
    }


HUATUO_SOURCES = {  # HuatuoGPT-o1's eval_data.json: 8,381 questions
    "MedMCQA_validation": 4183,
    "MedQA_USLME_test": 1273,
    "PubMedQA_test": 1000,
    "MMLU-Pro_Medical_test": 1535,
    "GPQA_Medical_test": 390,
}
REPEATS = 3


def repeated_predictions() -> list[dict]:
    """8,381 questions x 3 runs, sampled answers differing per run, in several answer layouts."""
    rng = random.Random(1)
    pairs = _mcq_with_reasoning()
    layouts = [
        "## Thinking\n\n{cot}\n\n## Final Response\n\n{answer}",
        "## Thinking\n\n{cot}\n\n## Final Answer\n\n{answer}",
        "<|im_start|>think\n{cot}\n<|im_start|>answer\nAnswer: {answer}",
        "{answer}",
    ]
    questions = [(source, i) for source, count in HUATUO_SOURCES.items() for i in range(count)]
    rows = []
    for run in range(REPEATS):
        for number, (source, i) in enumerate(questions):
            row, cot = pairs[number % len(pairs)]
            answer = "" if rng.random() < 0.02 else _answer(row, rng)
            output = rng.choice(layouts).format(cot=cot, answer=answer)
            rows.append({**row, "id": f"{source}{i}", "run": run, "source": source, "output": output})
    return rows


def bench_harnesses() -> dict:
    from meds1.evaluation.harnesses import huatuo_match
    from meds1.evaluation.scoring import judge, score

    rows = repeated_predictions()
    started = time.perf_counter()
    judged = [judge(row) for row in rows]
    for row in judged:
        huatuo_match(row["output"], row["options"])
    sources = {row["source"] for row in judged}
    for part in [judged, *([r for r in judged if r["source"] == s] for s in sources)]:
        _strict_summary(part)
    baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    score([judge(row) for row in rows])
    ours_s = time.perf_counter() - started
    return {
        "figure": f"eval: score every harness, {len(rows) // REPEATS} questions x {REPEATS} repeats",
        "ours": ours_s,
        "baseline": baseline_s,
        "ratio": ours_s / baseline_s,
        "target": "<= 2x (baseline: strict + HuatuoGPT scoring as before the harnesses)",
        "unit": "s",
    }


def _strict_summary(rows: list[dict]) -> tuple[float, list[float]]:
    """Strict accuracy and its bootstrap interval over questions, as the summaries compute them."""
    import numpy as np

    from meds1.evaluation.scoring import bootstrap_ci

    per_question: dict[str, list[bool]] = {}
    for row in rows:
        per_question.setdefault(row["id"], []).append(bool(row["correct"]))
    means = np.array([sum(v) / len(v) for v in per_question.values()])
    return float(means.mean()), bootstrap_ci(means)


def bench_hf_throughput() -> dict:
    import torch

    from meds1.config.compose import compose
    from meds1.evaluation.data import load_suite
    from meds1.evaluation.prompts import build_conversation
    from meds1.inference import Sampling, load_backend
    from meds1.models import model_path

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["model=tiny", "eval=demo", "inference=hf", f"paths.root={tmp}"])
        path = model_path(cfg.model, cfg.paths.cache)
        rows, _ = load_suite(list(cfg.eval.suite))
        conversations = [build_conversation(row, cfg.eval) for row in rows[:N_PROMPTS]]
        backend = load_backend(cfg.inference, cfg.model, path)
        sampling = Sampling(max_new_tokens=NEW_TOKENS)
        backend.generate(conversations[:2], sampling)  # warm up

        started = time.perf_counter()
        batched = backend.generate(conversations, sampling)
        batched_tps = sum(g.output_tokens for g in batched) / (time.perf_counter() - started)

        tokenizer, model = backend.tokenizer, backend.model
        started, tokens = time.perf_counter(), 0
        for conversation in conversations:
            ids = tokenizer(backend.render(conversation), add_special_tokens=False, return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(
                    **ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            tokens += out.shape[1] - ids["input_ids"].shape[1]
        naive_tps = tokens / (time.perf_counter() - started)
    return {
        "figure": f"eval: hf backend output tokens/s, tiny model, {N_PROMPTS} prompts, CPU",
        "ours": batched_tps,
        "baseline": naive_tps,
        "ratio": batched_tps / naive_tps,
        "target": "> 1 (batched beats one prompt at a time)",
        "unit": "tokens/s",
    }


def run() -> list[dict]:
    return [bench_scoring(), bench_harnesses(), bench_hf_throughput()]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
