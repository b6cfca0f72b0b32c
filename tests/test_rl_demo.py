"""`python run.py experiment=demo-rl`, exactly as docs/rl.md gives it: curate -> SFT -> GRPO -> eval of the
RL model and of the SFT model it started from, then the report with the reward curve and the pairing."""

import json
import math
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_demo_rl_runs_the_chain_into_the_registry_and_the_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "run.py", "experiment=demo-rl", f"paths.root={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    experiments = json.loads((tmp_path / "results.json").read_text())["experiments"]
    assert set(experiments["demo-rl"]["results"]) == {"curate", "train", "rl", "eval"}
    assert set(experiments["demo-rl-sft"]["results"]) == {"eval"}
    rl = experiments["demo-rl"]["results"]["rl"]
    assert rl["init_model"] == experiments["demo-rl"]["results"]["train"]["model_path"]
    evaluated = experiments["demo-rl"]["results"]["eval"]
    assert evaluated["metrics"]["model"] == rl["model_path"]
    assert evaluated["identity"]["input"]["stage"] == "rl"

    history = json.loads((tmp_path / "demo-rl" / "rl" / "metrics.json").read_text())["history"]
    assert [entry["step"] for entry in history] == list(range(1, 13))
    assert all(0 <= entry["reward"] <= 1.5 and math.isfinite(entry["kl"]) for entry in history)
    assert any(entry["reward_std"] > 0 for entry in history)  # groups differ: GRPO had advantages

    report = tmp_path / "report"
    with Image.open(report / "reward_curve.png") as curve:
        assert curve.width > 0 and curve.height > 0
    paired = (report / "results.md").read_text().split("## RL against the model it started from")[1]
    assert "| demo-rl | overall | demo-rl-sft |" in paired
