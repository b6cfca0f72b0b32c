"""Nothing silently overwritten or mixed, through run.py as a user runs it: another config never lands
in (or reads from) a complete output made with another config."""

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from meds1.store import registry
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command ends with (no traceback)."""
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    return output.strip().splitlines()[-1]


def test_another_eval_suite_curates_anew_and_leaves_the_first_curation_alone(tmp_path, model_cache):
    paths = [f"paths.root={tmp_path / 'out'}", f"paths.cache={model_cache}"]
    first = run("experiment=demo", "stage=curate", *paths)
    assert first.returncode == 0, first.stderr[-3000:]
    marker = tmp_path / "out" / "demo" / "curate" / "_COMPLETE.json"
    before = marker.read_text()
    record = registry.load(tmp_path / "out" / "results.json")["experiments"]["demo"]["results"]["curate"]

    suite = shutil.copy(REPO / "meds1" / "data" / "demo_eval.json", tmp_path / "my_eval.json")
    second = run("experiment=demo", "stage=curate", f"eval.suite=[{suite}]", *paths)
    assert second.returncode == 0, second.stderr[-3000:]
    assert marker.read_text() == before  # the first curated set is untouched...
    entries = registry.load(tmp_path / "out" / "results.json")["experiments"]
    assert entries["demo"]["results"]["curate"] == record  # ...and so is its record
    (slug,) = set(entries) - {"demo"}  # the other suite curated under its own slug
    assert slug.startswith("demo__eval.suite=")
    made = json.loads((tmp_path / "out" / slug / "curate" / "_COMPLETE.json").read_text())
    assert made["config_hash"] != json.loads(before)["config_hash"]
    assert entries[slug]["config"]["curation"]["decontamination"]["suite"] == [str(suite)]


def test_an_edited_experiment_is_neither_trained_on_nor_replaces_its_earlier_curation(tmp_path, model_cache):
    configs = tmp_path / "conf"
    (configs / "experiment").mkdir(parents=True)
    experiment = configs / "experiment" / "mine.yaml"
    own = "# @package _global_\ndefaults:\n  - demo\nname: mine\ncuration:\n  n_samples: {}\n"
    experiment.write_text(own.format(220))
    root = tmp_path / "out"
    paths = [f"paths.root={root}", f"paths.cache={model_cache}"]
    common = [f"--config-dir={configs}", "experiment=mine", *paths]
    curated = run(*common, "stage=curate")
    assert curated.returncode == 0, curated.stderr[-3000:]
    made = json.loads((root / "mine" / "curate" / "_COMPLETE.json").read_text())

    experiment.write_text(own.format(50))  # edited between curate and train: same name, another config
    refused = error_line(run(*common, "stage=train"))
    assert f"curated dataset at {root / 'mine' / 'curate'} was made with another config " in refused
    assert f"(hash {made['config_hash']}, finished {made['finished_at']}, by experiment=mine)" in refused
    command = refused.split("remake it with `")[1].rstrip("`")
    assert shlex.split(command) == [
        "python",
        "run.py",
        f"--config-dir={configs}",
        "experiment=mine",
        "stage=curate",
        f"paths.root={root}",
        f"paths.cache={model_cache}",
        "force=true",
    ]
    assert not (root / "mine" / "train").exists() and not (root / "mine" / ".train.partial").exists()

    again = error_line(run(*common, "stage=curate"))  # nor is the old curation replaced without force
    assert f"stage curate: {root / 'mine' / 'curate'} holds a complete output made with another " in again
    assert "To replace it add force=true; to keep both, give this run another name (name=mine-2)" in again
    assert json.loads((root / "mine" / "curate" / "_COMPLETE.json").read_text()) == made
