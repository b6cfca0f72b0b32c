"""The embedded demo end to end, exactly as a user runs it: `python run.py`."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


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
    assert set(experiments["demo"]["results"]) == {"curation", "training", "eval"}
    assert set(experiments["demo-base"]["results"]) == {"eval"}
    stats = experiments["demo"]["results"]["curation"]["stats"]
    assert stats["total_rows"] == 240 and stats["pool_rows"] == 228 and stats["selected_rows"] == 220
    assert stats["removed"]["quality/missing_Complex_CoT"] == 4
    training = experiments["demo"]["results"]["training"]["metrics"]
    assert training["last_loss"] < training["first_loss"] - 2
    for stage in ("curate", "train", "eval"):
        assert (root / "demo" / stage / "_COMPLETE.json").exists()
    assert not list(root.glob("*/.*.partial"))
    assert (root / "demo" / "train" / "model" / "config.json").exists()


def test_training_teaches_the_answer_format(demo):
    root, result = demo
    experiments = json.loads((root / "results.json").read_text())["experiments"]
    trained = experiments["demo"]["results"]["eval"]["metrics"]["overall"]
    base = experiments["demo-base"]["results"]["eval"]["metrics"]["overall"]
    assert trained["n"] == base["n"] == 100
    assert trained["unparseable"] <= 0.5 * base["unparseable"]
    assert base["unparseable"] - trained["unparseable"] >= 0.3
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
