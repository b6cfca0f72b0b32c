import os
import subprocess
import sys

import pytest

from meds1.cli import check_argument
from tests.conftest import REPO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("experiment=nope", "unknown experiment 'nope'; valid: base, demo, med-s1-1k"),
        ("stage=deploy", "unknown stage 'deploy'; valid: curate, train, eval, all, report"),
        ("model=gpt9", "unknown model 'gpt9'; valid:"),
        ("curation.n_sample=5", "unknown config key 'curation.n_sample' (did you mean 'n_samples'?)"),
        ("trainer.lr=1", "valid keys in trainer: recipe, learning_rate"),
        ("stage=curate,bogus", "unknown stage 'bogus'"),
    ],
)
def test_bad_arguments_are_named_with_the_valid_choices(argument, expected):
    assert expected in check_argument(argument)


@pytest.mark.parametrize(
    "argument",
    [
        "experiment=med-s1-1k",
        "stage=eval",
        "curation.n_samples=1,2",
        "curation.source.columns.q=Question",
        "hydra.verbose=true",
        "-m",
        "model=tiny,llama3.1-8b",
        "+seed=3",
    ],
)
def test_good_arguments_pass(argument):
    assert check_argument(argument) is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["experiment=nope"], "experiment 'nope'"),
        (["stage=deploy"], "stage 'deploy'"),
        (["curation.n_sample=5"], "'curation.n_sample'"),
    ],
)
def test_run_py_fails_in_one_line_without_traceback(args, named):
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0]


def test_only_train_runs_under_torchrun(tmp_path):
    """Several processes (torchrun's WORLD_SIZE) share the train stage; any other stage would run N times."""
    result = subprocess.run(
        [sys.executable, "run.py", "stage=all", f"paths.root={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "run only stage=train under torchrun" in output
    assert "Traceback" not in output and not (tmp_path / "demo").exists()  # only Hydra's logs
