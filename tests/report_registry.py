"""A results registry as real runs leave it: several experiments, sweeps, a shared curation, an
eval-only base model, test-time-scaling runs and one experiment with metrics from before the
current metrics schema. Entries are written through `meds1.registry` under the slugs that the
composed configs give, exactly as the stages do."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meds1 import registry
from meds1.paths import registry_path, stage_slug

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


def metrics(rate: float, *, old: bool = False, tts: dict | None = None) -> dict:
    """Per-source counts from one accuracy rate (a bit lower on MedQA), pooled into overall."""
    counts = {}
    for source, n in SIZES.items():
        correct = round(n * (rate - (0.1 if source == "MedQA_USLME_test" else 0.0)))
        counts[source] = (n, correct, min(n, correct + 3))
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


def record(cfg, stage: str, section: str, result: dict) -> str:
    slug = stage_slug(cfg, stage)
    registry.update(registry_path(cfg), slug, section, result, description=cfg.description, config=cfg)
    return slug


def run_experiment(cfg, rate: float | None, *, old: bool = False, tts: dict | None = None) -> None:
    """Record the experiment's curation, training and eval (those in its stages; eval only with a rate)."""
    root = Path(cfg.paths.root)
    if "curate" in cfg.stages:
        record(
            cfg, "curate", "curation", {"stats": curation_stats(cfg.curation.n_samples, cfg.curation.method)}
        )
    if "train" in cfg.stages:
        record(cfg, "train", "training", {"model_path": str(root / "model"), "metrics": {"last_loss": 0.5}})
    if rate is not None:
        record(cfg, "eval", "eval", {"metrics": metrics(rate, old=old, tts=tts)})


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
# Test-time scaling of one model: (thinking budget, overall rate, mean thinking tokens).
TTS = [(512, 0.52, 480.0), (4096, 0.58, 2900.0)]


def build(make_config) -> Path:
    """Write the fixture registry under make_config's root; returns the root."""
    for experiment, n, rate, old in SWEEP:
        overrides = [f"experiment={experiment}", f"curation.n_samples={n}"]
        # Slugs as meds1 named them from the override text, before slugs by value: the 1000-row points
        # restate their experiment's own size, yet have their own slug (registries keep such entries).
        cfg = dataclasses.replace(make_config(*overrides), overrides=overrides)
        run_experiment(cfg, rate, old=old)
    run_experiment(make_config("experiment=med-s1-25k"), 0.62)
    run_experiment(make_config("experiment=med-s1-1k"), None)  # curated and trained once, not evaluated
    run_experiment(make_config("experiment=med-s1-1k", "trainer.learning_rate=2e-05"), 0.55)  # same curation
    run_experiment(make_config("experiment=base"), 0.40)
    for budget, rate, thinking in TTS:
        cfg = make_config("experiment=med-s1-1k", f"eval.max_new_tokens={budget}")
        tts = {"budget": budget, "mean_thinking_tokens": thinking}
        record(cfg, "eval", "eval", {"metrics": metrics(rate, tts=tts)})
    root = Path(make_config().paths.root)
    assert set(registry.load(root / "results.json")["experiments"]) == EXPECTED_SLUGS
    return root
