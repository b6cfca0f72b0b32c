"""Nothing silently overwritten or mixed, through run.py as a user runs it: another config never lands
in (or reads from) a complete output made with another config."""

import json
import shlex
import shutil
import subprocess
import sys

import pandas as pd
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


def test_a_trained_model_is_evaluated_on_a_new_benchmark_without_curating_or_training_again(
    tmp_path, model_cache
):
    """Issue 28: "evaluate my model on MedBullets" after stage=all evaluates the model already trained, and
    says how many of its training rows restate the new benchmark's questions."""
    root = tmp_path / "out"
    small = ["curation.n_samples=12", "trainer.max_steps=1", "eval.max_per_source=2", "eval.max_new_tokens=4"]
    common = [
        "experiment=demo",
        *small,
        "compare_base=false",
        f"paths.root={root}",
        f"paths.cache={model_cache}",
    ]
    made = run(*common)
    assert made.returncode == 0, made.stderr[-3000:]
    slug = "demo__curation.n_samples=12__trainer.max_steps=1"  # the trained model's
    trained = json.loads((root / slug / "train" / "_COMPLETE.json").read_text())
    training = pd.read_parquet(root / "demo__curation.n_samples=12" / "curate" / "curated.parquet")
    restated = [
        {"question": text, "options": {"A": "yes", "B": "no"}, "answer_idx": "A"}
        for text in training["Question"][:3]
    ]
    bench = tmp_path / "medbullets_op4.jsonl"
    bench.write_text("".join(json.dumps(row) + "\n" for row in restated))

    evaluated = run(*common, "stage=eval", f"eval.suite=[{bench}]")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert sorted(p.name for p in root.iterdir() if (p / "curate").exists()) == [
        "demo__curation.n_samples=12"
    ]
    assert json.loads((root / slug / "train" / "_COMPLETE.json").read_text()) == trained  # not trained again
    entries = registry.load(root / "results.json")["experiments"]
    (other,) = [s for s in entries if "eval.suite" in s]
    record = entries[other]["results"]["eval"]
    assert record["identity"]["input"] == {"stage": "train", "slug": slug, "hash": trained["config_hash"]}
    assert record["metrics"]["overlap"]["sources"] == {"medbullets_op4": {"questions": 2, "training_rows": 2}}
    chosen = f"report.experiments=[{other}]"  # a slug with "=", no inner quotes
    report = run(
        "stage=report", f"paths.root={root}", chosen, "report.outputs=[markdown]", "report.status=false"
    )
    assert report.returncode == 0, report.stderr[-3000:]
    markdown = (root / "report" / "results.md").read_text()
    assert "Training rows that restate eval questions" in markdown and "2 of 12" in markdown


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
    refused = message(run(*common, "stage=train"))
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


def message(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command ends with, without its log prefix."""
    return error_line(result).split("] - ", 1)[1]


def keep_lines(path, n: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))


def skipped(result: subprocess.CompletedProcess, stage: str) -> bool:
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return f"{stage}: " in result.stdout + result.stderr and "is complete for this config; skipping" in (
        result.stdout + result.stderr
    )


def test_an_edited_curation_source_is_never_taken_for_the_old_one(tmp_path, model_cache):
    """The first case of issue 24: a researcher fixes the rows file and curates again."""
    rows = shutil.copy(REPO / "meds1" / "data" / "demo_sft.jsonl", tmp_path / "rows.jsonl")
    root = tmp_path / "out"
    command = ["experiment=demo", "stage=curate", f"curation.source.path={rows}", f"paths.root={root}"]
    command.append(f"paths.cache={model_cache}")
    made = run(*command)
    assert made.returncode == 0, made.stderr[-3000:]
    (directory,) = root.glob("demo__*/curate")
    first = json.loads((directory / "_COMPLETE.json").read_text())
    assert skipped(run(*command), "curate")  # the same file: skipped
    assert json.loads((directory / "_COMPLETE.json").read_text()) == first

    keep_lines(rows, 60)
    refused = message(run(*command))
    assert refused == (
        f"stage curate: {directory} was made from another version of curation.source.path ({rows}) "
        f"(hash {first['config_hash']}, finished {first['finished_at']}, by experiment=demo "
        f"curation.source.path={rows}). To remake it from the files as they are now add force=true; to keep "
        "both, give this run another name (name=demo-2)"
    )
    assert json.loads((directory / "_COMPLETE.json").read_text()) == first  # left alone
    remade = run(*command, "force=true")
    assert remade.returncode == 0, remade.stderr[-3000:]
    assert json.loads((directory / "_COMPLETE.json").read_text())["record"]["stats"]["total_rows"] == 60
    assert skipped(run(*command), "curate")  # and the fixed file's output is found again


def test_an_edited_eval_suite_file_is_never_taken_for_the_old_one(tmp_path, model_cache):
    suite = tmp_path / "my_eval.json"
    questions = json.loads((REPO / "meds1" / "data" / "demo_eval.json").read_text())
    suite.write_text(json.dumps(questions))
    root = tmp_path / "out"
    command = [
        "experiment=demo",
        "stage=eval",
        "stages=[eval]",
        f"eval.suite=[{suite}]",
        "eval.max_per_source=2",
    ]
    command += ["eval.max_new_tokens=4", f"paths.root={root}", f"paths.cache={model_cache}"]
    made = run(*command)
    assert made.returncode == 0, made.stderr[-3000:]
    (directory,) = root.glob("demo__*/eval")
    first = json.loads((directory / "_COMPLETE.json").read_text())
    assert skipped(run(*command), "eval")

    source = next(iter(questions))
    questions[source][0]["question"] += " (corrected)"
    suite.write_text(json.dumps(questions))
    refused = message(run(*command))
    assert refused.startswith(
        f"stage eval: {directory} was made from another version of eval.suite[0] ({suite}) "
        f"(hash {first['config_hash']}, "
    ) and refused.endswith(
        "To remake it from the files as they are now add force=true; to keep both, give "
        "this run another name (name=demo-2)"
    )
    remade = run(*command, "force=true")
    assert remade.returncode == 0, remade.stderr[-3000:]
    record = json.loads((directory / "_COMPLETE.json").read_text())["record"]
    fingerprints = {s: r["fingerprint"] for s, r in record["metrics"]["suite"].items()}
    assert fingerprints[source] != first["record"]["metrics"]["suite"][source]["fingerprint"]
    assert skipped(run(*command), "eval")


def test_train_after_an_edited_source_without_curating_again_refuses(tmp_path, model_cache):
    rows = shutil.copy(REPO / "meds1" / "data" / "demo_sft.jsonl", tmp_path / "rows.jsonl")
    root = tmp_path / "out"
    common = ["experiment=demo", f"curation.source.path={rows}", "curation.n_samples=8"]
    common += ["trainer.max_steps=1", f"paths.root={root}", f"paths.cache={model_cache}"]
    for stage in ("curate", "train"):
        made = run(*common, f"stage={stage}")
        assert made.returncode == 0, made.stderr[-3000:]
    assert skipped(run(*common, "stage=train"), "train")  # the same file: skipped

    keep_lines(rows, 60)  # the source is fixed, curate not rerun
    refused = message(run(*common, "stage=train"))
    (trained,) = root.glob("demo__*/train")
    command = refused.split("remake it with `")[1].split("`")[0]
    assert f"stage train: {trained} was made from another version of curation.source.path ({rows})" in (
        refused
    )
    assert shlex.split(command) == [
        "python",
        "run.py",
        "experiment=demo",
        "stage=curate",
        *common[1:],
        "force=true",
    ]
    forced = message(run(*common, "stage=train", "force=true"))  # forcing train alone reads no stale rows
    (curated,) = root.glob("demo__*/curate")
    assert forced.startswith(f"curated dataset at {curated} was made from another version of curation.source")
    assert forced.endswith(f"remake it with `{command}`")
    remade = run(*shlex.split(command)[2:])
    assert remade.returncode == 0, remade.stderr[-3000:]
    again = run(*common, "stage=train", "force=true")
    assert again.returncode == 0, again.stderr[-3000:]
