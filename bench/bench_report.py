"""Benchmark: `stage=report` (tables, the five plots, index.html, stage status) for a registry of a
handful and of a hundred experiments, against the way med-s1 made the same figures: one script per
figure, each re-reading results.json (and the table re-reading it per experiment, as med-s1 read one
summary file per experiment), drawn with pyplot at 300 dpi with a tight bounding box.

A third figure adds `report.baseline`: paired comparisons of 7 experiments with a baseline, each
reading a full-suite predictions.jsonl (7,991 questions, ~3 KB a line), against the obvious way
(pandas read_json + merge per pair, an index bootstrap of 1,000 resamples, scipy's binomtest).

Both sides run in this process after a warm-up (imports excluded); each figure is the best of a few
runs, in CPU seconds of this process (what a wall clock shows on an idle machine: the work is one
thread), since wall time on a shared machine mostly measures the other tenants.
Run: python bench/bench_report.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from meds1.config.compose import compose
from meds1.stages import report
from meds1.store import registry
from meds1.store.identity import make_slug

SOURCES = {
    "MedMCQA_validation": 4183,
    "MedQA_USLME_test": 1273,
    "PubMedQA_test": 1000,
    "MMLU-Pro_Medical_test": 1535,
}
METHODS = ("s1", "random", "embedding-diversity")
SIZES = (1000, 5000, 10000, 25000)
SPECIALTIES = [f"Specialty {i}" for i in range(40)]


def summary(n: int, accuracy: float) -> dict:
    return {
        "n": n,
        "accuracy": accuracy,
        "accuracy_huatuo": accuracy + 0.01,
        "ci95": [accuracy - 0.02, accuracy + 0.02],
        "unparseable": 0.03,
        "mean_output_tokens": 500.0,
    }


def entry(index: int) -> tuple[str, dict]:
    """The index-th experiment of a sweep over selection method x sample size x seed."""
    method, size = METHODS[index % len(METHODS)], SIZES[(index // len(METHODS)) % len(SIZES)]
    seed = index // (len(METHODS) * len(SIZES))
    overrides = [f"curation.n_samples={size}", f"seed={seed}"]
    name = f"{method}-sweep"
    accuracy = 0.5 + 0.02 * SIZES.index(size) + 0.01 * METHODS.index(method)
    per_source = {s: summary(n, accuracy - 0.01 * i) for i, (s, n) in enumerate(SOURCES.items())}
    total = sum(SOURCES.values())
    pooled = sum(v["accuracy"] * v["n"] for v in per_source.values()) / total
    metrics = {"overall": summary(total, pooled), "per_source": per_source}
    if index % 10 == 9:
        metrics["tts"] = {"budget": 512 * (1 + index % 4), "mean_thinking_tokens": 400.0 * (1 + index % 4)}
    removed = {"quality/cot_truncated": 361, "difficulty/base_model_correct": 9000}
    removed["selection/not_selected"] = 16000 - min(size, 16000)
    stats = {
        "total_rows": 25371,
        "selected_rows": min(size, 16000),
        "removed": removed,
        "specialties": {s: 1 + (i * 7 + index) % 50 for i, s in enumerate(SPECIALTIES)},
    }
    config = {
        "name": name,
        "stages": ["curate", "train", "eval"],
        "overrides": overrides,
        "curation": {"method": method, "n_samples": size},
        "model": {"name": "llama3.1-8b"},
    }
    results = {"curate": {"stats": stats}, "train": {"metrics": {}}, "eval": {"metrics": metrics}}
    return make_slug(name, overrides), {"description": "", "config": config, "results": results}


def write_registry(root: Path, count: int) -> None:
    registry.add_experiments(root / "results.json", dict(entry(i) for i in range(count)))


def write_predictions(root: Path, count: int) -> None:
    """A predictions.jsonl per experiment (seeded correctness, output text of a realistic size)."""
    import numpy as np

    data = registry.load(root / "results.json")
    output = "Let me work through the findings step by step before choosing. " * 45
    for index, slug in enumerate(sorted(data["experiments"])[:count]):
        correct = np.random.default_rng(index).random(sum(SOURCES.values())) < 0.5 + 0.02 * index
        file = root / slug / "eval" / "predictions.jsonl"
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("w") as f:
            questions = ((s, i) for s, n in SOURCES.items() for i in range(n))
            for ok, (source, i) in zip(correct, questions, strict=True):
                line = {
                    "id": f"{source}-{i}",
                    "source": source,
                    "prompt": "Q" * 700,
                    "run": 0,
                    "output": output,
                }
                f.write(
                    json.dumps(line | {"extracted": "A", "correct": bool(ok), "output_tokens": 700}) + "\n"
                )
        data["experiments"][slug]["results"]["eval"]["outputs_path"] = str(file)
    registry.write_json_atomic(root / "results.json", data)


def naive_paired(cfg) -> None:
    """Each pair the obvious way: pandas reads both files whole, merges on id, bootstraps indices."""
    import numpy as np
    import pandas as pd
    from scipy.stats import binomtest

    root = Path(cfg.paths.root)
    entries = json.loads((root / "results.json").read_text())["experiments"]
    files = {s: e["results"]["eval"].get("outputs_path") for s, e in entries.items()}
    base = pd.read_json(files[cfg.report.baseline], lines=True)
    for slug, file in files.items():
        if slug == cfg.report.baseline or not file:
            continue
        merged = base.merge(pd.read_json(file, lines=True), on=["id", "run"], suffixes=("_b", "_o"))
        for _, group in [("overall", merged), *merged.groupby("source_b")]:
            d = group["correct_o"].to_numpy(float) - group["correct_b"].to_numpy(float)
            draws = np.random.default_rng(0).integers(0, len(d), (1000, len(d)))
            np.percentile(d[draws].mean(axis=1), [2.5, 97.5])
            b, c = int((d < 0).sum()), int((d > 0).sum())
            binomtest(min(b, c), b + c, 0.5) if b + c else None


def ours(cfg) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        report.run(cfg)


def naive(cfg) -> None:
    """med-s1's way: a script per figure, each loading results.json; pyplot; 300 dpi; tight bbox."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(cfg.paths.root)
    registry_file, out = root / "results.json", root / "naive"
    out.mkdir(exist_ok=True)
    lines = []
    for slug in json.loads(registry_file.read_text())["experiments"]:
        metrics = json.loads(registry_file.read_text())["experiments"][slug]["results"]["eval"]["metrics"]
        for source, s in [*metrics["per_source"].items(), ("overall", metrics["overall"])]:
            lines.append(
                f"{slug},{source},{s['n']},{s['accuracy']},{s['ci95'][0]},{s['ci95'][1]},{s['accuracy_huatuo']}"
            )
    (out / "results.csv").write_text("\n".join(lines))

    def figure(name: str, draw) -> None:
        experiments = json.loads(registry_file.read_text())["experiments"]
        fig, ax = plt.subplots(figsize=(10, 4.8))
        draw(ax, experiments)
        with warnings.catch_warnings():  # a legend of 120 experiments does not fit; med-s1 drew it anyway
            warnings.simplefilter("ignore")
            ax.legend(fontsize="small")
            plt.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=300, bbox_inches="tight")
        plt.close(fig)

    def efficiency(ax, experiments):
        for method in METHODS:
            points = sorted(
                (
                    e["results"]["curate"]["stats"]["selected_rows"],
                    100 * e["results"]["eval"]["metrics"]["overall"]["accuracy"],
                )
                for e in experiments.values()
                if e["config"]["curation"]["method"] == method
                and "tts" not in e["results"]["eval"]["metrics"]
            )
            ax.errorbar(*zip(*points, strict=True), yerr=2, marker="o", label=method, capsize=3)

    def per_source(ax, experiments):
        width = 0.8 / len(experiments)
        for i, (slug, e) in enumerate(experiments.items()):
            values = [100 * s["accuracy"] for s in e["results"]["eval"]["metrics"]["per_source"].values()]
            ax.bar([j + i * width for j in range(len(values))], values, width, yerr=2, label=slug)

    def scaling(ax, experiments):
        points = [
            (m["tts"]["mean_thinking_tokens"], 100 * m["overall"]["accuracy"])
            for m in (e["results"]["eval"]["metrics"] for e in experiments.values())
            if "tts" in m
        ]
        ax.plot(*zip(*sorted(points), strict=True), marker="o", label="tts")

    def funnel(ax, experiments):
        for i, (slug, e) in enumerate(experiments.items()):
            stats, left = e["results"]["curate"]["stats"], []
            rows = stats["total_rows"]
            for removed in stats["removed"].values():
                rows -= removed
                left.append(rows)
            ax.barh(
                [j + i / len(experiments) for j in range(len(left))], left, 1 / len(experiments), label=slug
            )

    def specialties(ax, experiments):
        for i, (slug, e) in enumerate(experiments.items()):
            counts = e["results"]["curate"]["stats"]["specialties"]
            ax.barh(
                [j + i / len(experiments) for j in range(20)],
                sorted(counts.values())[-20:],
                1 / len(experiments),
                label=slug,
            )

    for name, draw in [
        ("efficiency", efficiency),
        ("per_source", per_source),
        ("scaling", scaling),
        ("funnel", funnel),
        ("specialties", specialties),
    ]:
        figure(name, draw)


def best_time(work, cfg, repeats: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of `repeats` runs."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work(cfg)
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(times)


def run() -> list[dict]:
    rows = []
    for count, target, repeats in ((8, "<= 2 s", 3), (120, "<= 10 s", 2)):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_registry(root, count)
            cfg = compose(["stage=report", f"paths.root={root}"])
            ours(cfg)  # warm-up: imports, font cache
            naive(cfg)
            (ours_s, ours_wall), (naive_s, naive_wall) = (
                best_time(ours, cfg, repeats),
                best_time(naive, cfg, repeats),
            )
        rows.append(
            {
                "figure": f"report of {count} experiments (tables, plots, html, status), CPU s",
                "ours": round(ours_s, 3),
                "baseline": round(naive_s, 3),
                "ratio": round(naive_s / ours_s, 2),
                "target": target,
                "unit": "s",
                "note": f"wall {ours_wall:.1f} s vs {naive_wall:.1f} s; load {os.getloadavg()[0]:.1f}",
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_registry(root, 8)
        write_predictions(root, 8)
        baseline = sorted(registry.load(root / "results.json")["experiments"])[0]
        cfg = compose(["stage=report", f"paths.root={root}", f'report.baseline="{baseline}"'])
        plain = compose(["stage=report", f"paths.root={root}"])
        ours(cfg)
        naive_paired(cfg)
        (with_s, with_wall), (without_s, _), (naive_s, naive_wall) = (
            best_time(ours, cfg, 3),
            best_time(ours, plain, 3),
            best_time(naive_paired, cfg, 3),
        )
    rows.append(
        {
            "figure": "paired comparisons: 7 experiments vs a baseline, 7,991 questions each, CPU s",
            "ours": round(with_s - without_s, 3),
            "baseline": round(naive_s, 3),
            "ratio": round(naive_s / (with_s - without_s), 2),
            "target": "<= 2 s",
            "unit": "s",
            "note": f"the whole report {with_s:.2f} s vs {without_s:.2f} s without a baseline; "
            f"wall {with_wall:.1f} s vs {naive_wall:.1f} s; load {os.getloadavg()[0]:.1f}",
        }
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
