"""Every report plot drawn with long names: nothing clipped, the legend inside the figure, the plot not
squeezed."""

from __future__ import annotations

import json
import warnings

import pytest

from meds1.report import plots
from meds1.report.experiments import Experiment

LONG = "demo__curation.n_samples=40,trainer.learning_rate=2e-05,trainer.num_train_epochs=5,eval=m1"
SOURCES = ["MedMCQA_validation", "MedQA_USLME_test", "PubMedQA_test", "MMLU-Pro_Medical_test"]


def summary(accuracy: float) -> dict:
    return {
        "n": 100,
        "accuracy": accuracy,
        "ci95": [accuracy - 0.05, accuracy + 0.05],
        "accuracy_m1": accuracy,
    }


def experiment(
    slug: str, accuracy: float, rows: int | None, trace: dict | None = None, tts: dict | None = None
):
    metrics = {"overall": summary(accuracy), "per_source": {s: summary(accuracy) for s in SOURCES}}
    if tts:
        metrics["tts"] = tts
    curation = None
    if rows:
        curation = {
            "selected_rows": rows,
            "total_rows": 5000,
            "removed": {"quality/too_short": 100, "selection/not_selected": 4900 - rows},
            "specialties": {"Cardiology, vascular and thoracic": rows // 2, "Neurology": rows - rows // 2},
        }
    config = {"curation": {"trace": trace}} if trace else {}
    return Experiment(
        slug, "", config, LONG if rows else "-", slug, metrics, curation, f"{slug}-curate" if rows else None
    )


def rl_run(slug: str, directory, rewards: list[float]) -> Experiment:
    """An RL experiment whose metrics.json holds a reward history (mcq and format each step)."""
    history = [
        {"step": step, "reward": r, "rewards": {"mcq": r / 2, "format": r}}
        for step, r in enumerate(rewards, 1)
    ]
    path = directory / f"{len(list(directory.iterdir()))}.json"
    path.write_text(json.dumps({"history": history}))
    exp = experiment(slug, 0.4, None)
    exp.rl = {"metrics_path": str(path)}
    return exp


def long_named_experiments(directory) -> list[Experiment]:
    found = [experiment(f"{LONG},curation.n_samples={n}", 0.3 + n / 10000, n) for n in (40, 400, 1000)]
    found.append(experiment(f"{LONG}-base-model-not-fine-tuned", 0.25, None))
    found += [
        experiment(
            f"{LONG},trace={kind}{rate}",
            0.4 - rate / 10,
            1000,
            {"transforms": ["step"], "perturbation": {"type": kind, "rate": rate} if rate else None},
        )
        for kind in ("skip", "shuffle")
        for rate in (0, 0.33, 1.0)
    ]
    found.append(experiment(f"{LONG},trace=list", 0.35, 1000, {"transforms": ["list"]}))
    found.append(
        experiment(
            f"{LONG}__eval.tts.budget=512", 0.31, None, tts={"budget": 512, "mean_thinking_tokens": 400}
        )
    )
    found += [rl_run(f"{LONG}-grpo,rl.beta={beta}", directory, [0.1, 0.2, 0.15, 0.3]) for beta in (0, 0.04)]
    return found


@pytest.mark.parametrize("metric", ["accuracy", "accuracy_m1"])
def test_every_plot_keeps_long_names_inside_the_figure(metric, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied because axes sizes collapsed"
        charts = plots.charts(long_named_experiments(tmp_path), metric)
    assert {chart.name for chart in charts} == set(plots.CHART_NAMES)
    for chart in charts:
        figure = chart.figure
        renderer = figure.canvas.get_renderer()
        inside = figure.bbox.padded(1)
        ax = figure.axes[0]
        drawn = [ax.get_tightbbox(renderer)]  # the plot with its title, axis labels and tick labels
        for legend in figure.legends:
            drawn.append(legend.get_window_extent(renderer))
            drawn += [text.get_window_extent(renderer) for text in legend.get_texts()]
            lines = [line for text in legend.get_texts() for line in text.get_text().split("\n")]
            assert max(map(len, lines)) <= plots.LABEL_CHARS, chart.name
        for box in drawn:
            assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), (chart.name, box)
        plot = ax.get_window_extent(renderer)
        assert plot.width > 0.45 * figure.bbox.width, chart.name  # no label takes half the figure
        assert plot.height > 2 * figure.dpi, chart.name


def test_wrap_breaks_a_slug_at_its_separators():
    assert plots.wrap("demo__curation.n_samples=40,trainer.learning_rate=2e-05", 30) == (
        "demo__curation.n_samples=40,\ntrainer.learning_rate=2e-05"
    )
    assert plots.wrap("short") == "short"
    assert plots.wrap("x" * 50, 20) == "x" * 20 + "\n" + "x" * 20 + "\n" + "x" * 10
