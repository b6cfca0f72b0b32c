"""The report of RL experiments: the reward curve, and each RL model paired with the model it started from
(read from a registry written as the stages write it)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from meds1 import pipeline
from meds1.evaluation.scoring import score
from meds1.report import experiments as registry_view
from meds1.report import plots, rl
from meds1.stages import report
from meds1.store import registry
from meds1.store.identity import stage_config, stage_slug
from meds1.store.registry import registry_path
from meds1.store.workspace import stage_dir


def record(cfg, stage: str, result: dict) -> None:
    config = stage_config(cfg, stage)
    registry.update(registry_path(cfg), stage_slug(cfg, stage), stage, result, description="", config=config)


def evaluated(cfg, model: str, right: float, seed: int) -> None:
    """An eval of `model` on 60 questions, `right` of them answered correctly (which: seeded)."""
    draws = random.Random(seed)
    lines = []
    for i in range(60):
        correct = draws.random() < right
        line = {
            "id": f"q{i}",
            "source": "DemoMedQA",
            "run": 0,
            "answer_idx": "A",
            "options": {"A": "x", "B": "y"},
        }
        lines.append(
            line
            | {"extracted": "A" if correct else "B", "correct": correct, "output": "", "output_tokens": 5}
        )
    file = stage_dir(cfg, "eval") / "predictions.jsonl"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = {**score(lines), "model": model, "decoding": {"temperature": 0, "max_new_tokens": 384}}
    record(cfg, "eval", {"outputs_path": str(file), "metrics": metrics})


def rl_run(cfg, rewards: list[float]) -> None:
    final = stage_dir(cfg, "rl")
    final.mkdir(parents=True, exist_ok=True)
    steps = [
        {"step": n + 1, "reward": r, "rewards": {"mcq": r, "format": 1.0}} for n, r in enumerate(rewards)
    ]
    (final / "metrics.json").write_text(json.dumps({"global_step": len(steps), "history": steps}))
    init = str(stage_dir(cfg, "train") / "model")
    result = {
        "model_path": str(final / "model"),
        "init_model": init,
        "metrics_path": str(final / "metrics.json"),
    }
    record(cfg, "rl", result | {"metrics": {"global_step": len(steps)}})


def test_the_report_draws_the_reward_curves_and_pairs_each_rl_model_with_its_sft_model(make_config):
    cfgs = [make_config("experiment=demo-rl", f"rl.beta={beta}") for beta in (0.0, 0.04)]
    sft = pipeline.sft_variant(cfgs[0])
    evaluated(sft, str(stage_dir(cfgs[0], "train") / "model"), 0.4, seed=0)
    for number, cfg in enumerate(cfgs):
        rl_run(cfg, [0.1, 0.2 + number / 10, 0.4])
        evaluated(cfg, str(stage_dir(cfg, "rl") / "model"), 0.7, seed=number + 1)

    data = registry_view.load_registry(registry_path(cfgs[0]))
    chosen = registry_view.experiments(data, sorted(data["experiments"]), "rl.beta")
    curve = plots.reward_curve(chosen)
    assert set(curve.series) == {stage_slug(cfg, "eval") for cfg in cfgs}  # a sweep's runs side by side
    assert curve.series[stage_slug(cfgs[1], "eval")] == [(1, 0.1), (2, 0.30000000000000004), (3, 0.4)]
    pivot = rl.start_comparison(data, chosen, Path(cfgs[0].paths.root), "rl.beta")
    assert pivot.title == "RL against the model it started from"
    started = {row[2] for row in pivot.body}
    assert started == {"demo-rl-sft"} and len(pivot.body) == 4  # two RL models x (one source + overall)
    overall = [row for row in pivot.body if row[1] == "overall"]
    assert all(float(row[8].split()[0]) > 0 for row in overall)  # RL answered more right than its SFT model

    written = report.run(make_config("experiment=demo-rl", "stage=report"))
    out = Path(cfgs[0].paths.root) / "report"
    assert (out / "reward_curve.png").exists() and str(out / "reward_curve.png") in written["files"]
    assert "RL against the model it started from" in (out / "results.md").read_text()


def test_an_rl_run_without_the_eval_of_its_starting_model_is_not_paired(make_config):
    cfg = make_config("experiment=demo-rl")
    rl_run(cfg, [0.0, 0.5])
    evaluated(cfg, str(stage_dir(cfg, "rl") / "model"), 0.6, seed=3)
    data = registry_view.load_registry(registry_path(cfg))
    chosen = registry_view.experiments(data, sorted(data["experiments"]), "rl.beta")
    assert rl.start_comparison(data, chosen, Path(cfg.paths.root), "rl.beta") is None
    assert plots.reward_curve(chosen).series["demo-rl: mcq"] == [
        (1, 0.0),
        (2, 0.5),
    ]  # one run: each reward too


def test_the_rl_model_is_paired_with_the_eval_of_its_start_asked_as_its_own_eval(make_config):
    cfg = make_config("experiment=demo-rl", "eval.max_new_tokens=128")
    sft = pipeline.sft_variant(cfg)
    start = str(stage_dir(cfg, "train") / "model")
    evaluated(pipeline.sft_variant(make_config("experiment=demo-rl")), start, 0.4, seed=0)  # 384 tokens
    evaluated(sft, start, 0.4, seed=1)  # asked as the RL model's eval: 128 tokens
    rl_run(cfg, [0.1, 0.3])
    evaluated(cfg, str(stage_dir(cfg, "rl") / "model"), 0.7, seed=2)
    data = registry_view.load_registry(registry_path(cfg))
    chosen = registry_view.experiments(data, [stage_slug(cfg, "eval")], "rl.beta")
    pivot = rl.start_comparison(data, chosen, Path(cfg.paths.root), "rl.beta")
    assert {row[2] for row in pivot.body} == {stage_slug(sft, "eval")}  # not demo-rl-sft's 384 tokens
