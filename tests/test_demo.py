"""The embedded demo end to end, exactly as a user runs it: `python run.py`."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# The tiny model's demo training losses (`results.train.metrics`: first_loss is the mean over steps
# 1-10, last_loss over steps 321-330; logging_steps=10), pinned as torchtune pins its recipes' losses.
# Measured with `python run.py stage=curate` then `python run.py stage=train` (conf/model/tiny.yaml,
# conf/trainer/cpu.yaml: 330 steps, fp32, one process, seed 42; log "loss 7.352 -> 4.014") on this
# project's 2-core CPU machine, 2026-11-30. Re-measure them the same way whenever the tiny model, the demo
# rows or the CPU recipe change.
DEMO_FIRST_LOSS = 7.352
DEMO_LAST_LOSS = 4.014
FIRST_TOLERANCE = 0.02
LAST_TOLERANCE = 0.1  # 330 steps of fp32 CPU kernels drift further apart between machines


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "run.py", f"paths.root={root}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_demo_runs_every_stage_into_the_registry(demo):
    root, _ = demo
    experiments = json.loads((root / "results.json").read_text())["experiments"]
    assert set(experiments["demo"]["results"]) == {"curate", "train", "eval"}
    assert set(experiments["demo-base"]["results"]) == {"eval"}
    stats = experiments["demo"]["results"]["curate"]["stats"]
    assert stats["total_rows"] == 240 and stats["pool_rows"] == 228 and stats["selected_rows"] == 220
    assert stats["removed"]["quality/missing_Complex_CoT"] == 4
    training = experiments["demo"]["results"]["train"]["metrics"]
    assert training["last_loss"] < training["first_loss"] - 2
    for stage in ("curate", "train", "eval"):
        assert (root / "demo" / stage / "_COMPLETE.json").exists()
    assert not list(root.glob("*/.*.partial"))
    assert (root / "demo" / "train" / "model" / "config.json").exists()


def test_demo_losses_match_the_pinned_values(demo):
    root, _ = demo
    metrics = json.loads((root / "results.json").read_text())["experiments"]["demo"]["results"]["train"]
    metrics = metrics["metrics"]
    assert metrics["first_loss"] == pytest.approx(DEMO_FIRST_LOSS, abs=FIRST_TOLERANCE)
    assert metrics["last_loss"] == pytest.approx(DEMO_LAST_LOSS, abs=LAST_TOLERANCE)


def opens_with_the_layout(root, experiment: str) -> float:
    rows = [json.loads(line) for line in (root / experiment / "eval" / "predictions.jsonl").open()]
    return sum(row["output"].startswith("## Thinking") for row in rows) / len(rows)


def test_training_teaches_the_answer_format(demo):
    """What training reliably changes is the layout: the trained model opens its answers as the training
    rows do, the untrained one never does. How many of its answers end in a readable option varies from run
    to run (unparseable 50% and 68% in two runs of this recipe, 14% in an earlier one; 99% untrained): 63
    of the 240 demo rows are open-ended questions whose Response names no option, and which of its answers
    this 3-layer model ends in 'The answer is X.' moves with the float rounding of 330 CPU steps."""
    root, result = demo
    experiments = json.loads((root / "results.json").read_text())["experiments"]
    trained = experiments["demo"]["results"]["eval"]["metrics"]["overall"]
    base = experiments["demo-base"]["results"]["eval"]["metrics"]["overall"]
    assert trained["n"] == base["n"] == 100
    assert opens_with_the_layout(root, "demo") >= 0.9 and opens_with_the_layout(root, "demo-base") == 0
    assert base["unparseable"] - trained["unparseable"] >= 0.15
    assert "demo-base" in result.stdout and "overall" in result.stdout  # the side-by-side table


def test_rerun_skips_completed_stages(demo):
    root, _ = demo
    result = subprocess.run(
        [sys.executable, "run.py", f"paths.root={root}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0
    log = result.stdout + result.stderr
    for stage in ("curate", "train", "eval"):
        assert f"{stage}: {root / 'demo' / stage} is complete for this config; skipping" in log
