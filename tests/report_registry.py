"""A results registry as real runs leave it: several experiments, sweeps, a shared curation, an
eval-only base model, test-time-scaling runs and one experiment with metrics from before the
current metrics schema. Entries are written through `meds1.store.registry` under the slugs that the
composed configs give, exactly as the stages do. Evals (but the old one) leave a predictions.jsonl
whose per-source correct counts are those of their metrics; the sweep and the learning-rate run
record provenance (one sweep eval ran a different vLLM), the others were recorded before it."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from meds1.store import registry
from meds1.store.identity import stage_config, stage_slug
from meds1.store.registry import registry_path
from meds1.store.workspace import stage_dir

DECODING = (
    "T=0.5 p=0.9 2000"  # how the default eval decodes (HuatuoGPT-o1's settings), as the report labels it
)
SOURCES = ("MedMCQA_validation", "MedQA_USLME_test", "PubMedQA_test")
SIZES = {"MedMCQA_validation": 400, "MedQA_USLME_test": 200, "PubMedQA_test": 100}


def summary(n: int, correct: int, huatuo: int, *, old: bool = False) -> dict:
    if old:  # what the first eval stage wrote
        return {"n": n, "accuracy": correct / n, "unparseable": 0.1}
    accuracy = correct / n
    return {
        "n": n,
        "accuracy": accuracy,
        "accuracy_huatuo": huatuo / n,
        "ci95": [accuracy - 0.04, accuracy + 0.04],
        "unparseable": 0.05,
        "mean_output_tokens": 321.0,
    }


def source_counts(rate: float) -> dict[str, tuple[int, int, int]]:
    """(questions, strict correct, HuatuoGPT-compatible correct) per source for one accuracy rate
    (a bit lower on MedQA)."""
    counts = {}
    for source, n in SIZES.items():
        correct = round(n * (rate - (0.1 if source == "MedQA_USLME_test" else 0.0)))
        counts[source] = (n, correct, min(n, correct + 3))
    return counts


def metrics(rate: float, *, old: bool = False, tts: dict | None = None) -> dict:
    """Per-source counts from one accuracy rate, pooled into overall."""
    counts = source_counts(rate)
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    result = {
        "overall": summary(*total, old=old),
        "per_source": {s: summary(*c, old=old) for s, c in counts.items()},
    }
    return {**result, "tts": tts} if tts else result


def curation_stats(n: int, method: str) -> dict:
    pool = 16000
    selected = min(n, pool)
    removed = {
        "difficulty/base_model_correct": 9000,
        "quality/cot_truncated": 361,
        "quality/missing_Response": 10,
    }
    if selected < pool:
        removed["selection/not_selected"] = pool - selected
    cardiology = selected // 2
    return {
        "total_rows": pool + 9371,
        "pool_rows": pool,
        "selected_rows": selected,
        "n_requested": n,
        "method": method,
        "removed": removed,
        "specialties": {"Cardiology": cardiology, "Neurology": selected - cardiology - 10, "Dermatology": 10},
        "cot_tokens": {"min": 12, "median": 600.0, "mean": 640.0, "max": 4000},
    }


DEVICES = {
    "curate": {"kind": "cpu", "name": "AMD EPYC 7763", "count": 1, "cuda": None},
    "train": {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 4, "cuda": "12.4"},
    "eval": {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1, "cuda": "12.4"},
}


def provenance(stage: str, job_id: int, vllm: str = "0.8.5") -> dict:
    """A stage's provenance as the stages record it."""
    packages = {"torch": "2.6.0", "transformers": "4.51.3", "trl": "0.17.0", "datasets": "3.5.0"}
    return {
        "meds1": {"version": "0.1.0", "commit": "b971d66a0c1e8f1d2f7f3f5d1c0e9a8b7c6d5e4f", "dirty": False},
        "python": "3.11.9",
        "packages": {**packages, "vllm": vllm, "hydra-core": "1.3.2"},
        "device": DEVICES[stage],
        "slurm": {"job_id": str(job_id), "nodes": "gpu-a01"},
        "source": {"revision": "fc0a5d1", "fingerprint": "3f8e2a9c41d07b55"},
    }


def write_predictions(cfg, counts: dict[str, tuple[int, int, int]], seed: int) -> Path:
    """predictions.jsonl with `correct` of each source's `n` questions right (which ones: seeded)."""
    file = stage_dir(cfg, "eval") / "predictions.jsonl"
    file.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for source, (n, correct, _) in counts.items():
        right = set(random.Random(f"{seed}/{source}").sample(range(n), correct))
        for i in range(n):
            answer = "ABCD"[i % 4]
            extracted = answer if i in right else "ABCD"[(i + 1) % 4]
            line = {"id": f"{source}/{i}", "source": source, "run": 0, "seed": cfg.seed, "answer_idx": answer}
            lines.append(json.dumps(line | {"extracted": extracted, "correct": i in right}))
    file.write_text("\n".join(lines) + "\n")
    return file


def record(cfg, stage: str, result: dict) -> str:
    slug = stage_slug(cfg, stage)
    config = stage_config(cfg, stage)
    registry.update(registry_path(cfg), slug, stage, result, description=cfg.description, config=config)
    return slug


def run_experiment(
    cfg, rate: float | None, *, old: bool = False, tts: dict | None = None, job: int | None = None, vllm=None
) -> None:
    """Record the experiment's curation, training and eval (those in its stages; eval only with a rate),
    with provenance when it ran under SLURM job `job` (stage jobs job, job+1, job+2)."""
    root = Path(cfg.paths.root)
    made = {
        stage: {"provenance": provenance(stage, job + i)} if job else {} for i, stage in enumerate(DEVICES)
    }
    if job and vllm:
        made["eval"]["provenance"]["packages"]["vllm"] = vllm
    if "curate" in cfg.stages:
        stats = curation_stats(cfg.curation.n_samples, cfg.curation.method)
        record(cfg, "curate", {"stats": stats, **made["curate"]})
    if "train" in cfg.stages:
        trained = {"model_path": str(root / "model"), "metrics": {"last_loss": 0.5}}
        record(cfg, "train", trained | made["train"])
    if rate is not None:
        result = metrics(rate, old=old, tts=tts)
        evaluated = {"metrics": result, **made["eval"]}
        if not old:
            evaluated["outputs_path"] = str(write_predictions(cfg, source_counts(rate), round(rate * 1000)))
        record(cfg, "eval", evaluated)


EXPECTED_SLUGS = {
    "med-s1-1k__curation.n_samples=1000",
    "med-s1-1k__curation.n_samples=5000",
    "random-1k__curation.n_samples=1000",
    "random-1k__curation.n_samples=5000",
    "med-s1-25k",
    "med-s1-1k",
    "med-s1-1k__trainer.learning_rate=2e-05",
    "base",
    "med-s1-1k__eval.max_new_tokens=512",
    "med-s1-1k__eval.max_new_tokens=4096",
}
# A sample-size sweep for two selection methods: (experiment, n_samples, overall rate, old metrics schema).
SWEEP = [
    ("med-s1-1k", 1000, 0.50, False),
    ("med-s1-1k", 5000, 0.60, False),
    ("random-1k", 1000, 0.45, False),
    ("random-1k", 5000, 0.50, True),
]
OTHER_VLLM = "0.9.0"  # the vLLM of random-1k__curation.n_samples=1000's eval
# Test-time scaling of one model: (thinking budget, overall rate, mean thinking tokens).
TTS = [(512, 0.52, 480.0), (4096, 0.58, 2900.0)]


def build(make_config) -> Path:
    """Write the fixture registry under make_config's root; returns the root."""
    for i, (experiment, n, rate, old) in enumerate(SWEEP):
        overrides = [f"experiment={experiment}", f"curation.n_samples={n}"]
        # Slugs as meds1 named them from the override text, before slugs by value: the 1000-row points
        # restate their experiment's own size, yet have their own slug (registries keep such entries).
        cfg = dataclasses.replace(make_config(*overrides), overrides=overrides)
        job = None if old else 1000 + 10 * i  # the old-schema eval predates provenance too
        run_experiment(cfg, rate, old=old, job=job, vllm=OTHER_VLLM if i == 2 else None)
    run_experiment(make_config("experiment=med-s1-25k"), 0.62)
    run_experiment(make_config("experiment=med-s1-1k"), None, job=2000)  # curated and trained, not evaluated
    cfg = make_config("experiment=med-s1-1k", "trainer.learning_rate=2e-05")
    run_experiment(cfg, 0.55, job=3000)  # trained on the curation above
    run_experiment(make_config("experiment=base"), 0.40)
    for budget, rate, thinking in TTS:
        cfg = make_config("experiment=med-s1-1k", f"eval.max_new_tokens={budget}")
        tts = {"budget": budget, "mean_thinking_tokens": thinking}
        record(cfg, "eval", {"metrics": metrics(rate, tts=tts)})
    root = Path(make_config().paths.root)
    assert set(registry.load(root / "results.json")["experiments"]) == EXPECTED_SLUGS
    return root
