import os
import subprocess
import sys

import pytest

from meds1.config.cli import check_overrides, quote_names
from tests.conftest import REPO

OWN_EXPERIMENT = """# @package _global_
defaults:
  - demo
name: my-exp
seed: 7
stage: curate
dry_run: true
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture
def own_configs(tmp_path):
    """A config directory outside the package holding experiment/my-exp.yaml (Hydra's --config-dir)."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my-exp.yaml").write_text(OWN_EXPERIMENT)
    return tmp_path


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["experiment=nope"],
            "unknown experiment 'nope'; valid: alphamed, base, demo, demo-rl, huatuo-o1-rl",
        ),
        (["stage=deploy"], "stage='deploy': valid: curate, train, rl, eval, all, report"),
        (
            ["model=gpt9"],
            "unknown model 'gpt9'; valid: huatuo-o1-8b, llama3.1-8b, nemotron-nano-8b, qwen2.5-7b, qwq-32b, "
            "tiny",
        ),
        (["curation.n_sample=5"], "unknown config key 'curation.n_sample' (did you mean 'n_samples'?)"),
        (["trainer.lr=1"], "valid keys in trainer: recipe, learning_rate"),
        (["curation.n_samples=abc"], "curation.n_samples=abc: expected an integer"),
        (["trainer.learning_rate=fast"], "trainer.learning_rate=fast: expected a number"),
        (["dry_run=maybe"], "dry_run=maybe: expected true or false"),
        (["curation.method=foo"], "curation.method='foo': valid: s1, random, all, embedding-diversity"),
        (["curation.specialty.method=magic"], "curation.specialty.method='magic': valid: llm, embedding"),
        (["curation.difficulty.judge.method=vibes"], "judge.method='vibes': valid: llm, match"),
        (["curation.format.layout=plain"], "format.layout='plain': valid: huatuo, s1, think, nemotron"),
        (["trainer.report_to=[wandb,mlflowx]"], "trainer.report_to[1]='mlflowx': valid: tensorboard, wandb"),
        (["trainer.weights_dtype=fp8"], "trainer.weights_dtype='fp8': valid: float32, bfloat16, float16"),
        (["trainer.fsdp.checkpoint_format=zip"], "checkpoint_format='zip': valid: sharded, full"),
        (["inference.backend=tgi"], "inference.backend='tgi': valid: hf, openai, vllm"),
        (["model.build=big"], "model.build='big': valid: tiny"),
        (
            ["report.metric=f1"],
            "report.metric='f1': valid: accuracy, accuracy_huatuo, accuracy_medreason, accuracy_m1, "
            "accuracy_medsone",
        ),
        (["report.adjust=bonferroni"], "report.adjust='bonferroni': valid: holm, bh"),
        (
            ["report.baselines=[m2]"],
            "report.baselines: unknown baseline 'm2'; valid: huatuogpt-o1, m1, medreason, medsone",
        ),
        (["report.outputs=[pdf]"], "report.outputs[0]='pdf': valid: markdown, csv, plots, html"),
        (["curation.n_samples=-1"], "curation.n_samples=-1: must be >= 0"),
        (
            ["curation.decontamination.threshold=2"],
            "curation.decontamination.threshold=2.0: must be in (0, 1]",
        ),
        (["eval.tts.layout=r1"], "eval.tts.layout='r1': valid: huatuo, s1, think, nemotron"),
        (["curation.pool=most"], "curation.pool='most': valid: all, quality, filtered"),
        (["curation.uniform_fraction=1.5"], "curation.uniform_fraction=1.5: must be in [0, 1]"),
        (["curation.specialty.method=none"], "curation.method=s1 samples across specialties"),
        (
            ["curation.difficulty.enabled=true", "curation.difficulty.prompt='Q: {query}'"],
            "curation.difficulty.prompt has a bad placeholder ('query'); valid: {question}",
        ),
        (
            ["curation.format.assistant_template='{thinking}'"],
            "assistant_template has a bad placeholder ('thinking'); valid: {cot}, {response}",
        ),
        (["trainer.validation_fraction=1.0"], "trainer.validation_fraction=1.0: must be in [0, 1)"),
        (["eval.repeats=0"], "eval.repeats=0: must be >= 1"),
        (["eval.tts.enabled=true", "inference=openai"], "use inference=hf or inference=vllm"),
        (["curation.n_samples=1,2"], "Ambiguous value for argument 'curation.n_samples=1,2'"),
        (["curation.n_samples=[1"], "cannot parse 'curation.n_samples=[1'"),
        (["+seed=3"], "An item is already at 'seed'"),
    ],
)
def test_bad_settings_are_named_with_the_valid_choices(overrides, expected):
    problem = check_overrides(overrides)
    assert expected in problem and "\n" not in problem


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=med-s1-1k"],
        ["experiment='med-s1-1k'"],  # quoted values are valid Hydra
        ["experiment=med-s1-25k", "stage=eval"],
        ["curation.method=embedding-diversity", "trainer.report_to=[tensorboard]"],
        ["+curation.source.columns.q=Question"],
        ["hydra.verbose=true"],
        ["experiment=base", "curation.specialty.method=none"],  # base does not curate: curation rules idle
        ["stage=report", "report.experiments=demo"],  # one name, not a list
        ["stage=report", "report.baseline='experiment=med-s1-1k curation.n_samples=5000'"],  # as typed
    ],
)
def test_good_settings_pass(overrides):
    assert check_overrides(overrides) is None


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        (
            "report.experiments=[demo__curation.n_samples=40]",
            "report.experiments=['demo__curation.n_samples=40']",
        ),
        (
            "report.experiments=[demo__seed=1,base,med-s1-*]",
            "report.experiments=['demo__seed=1','base','med-s1-*']",
        ),
        (
            "report.experiments=['demo__seed=1',base]",
            "report.experiments=['demo__seed=1',base]",
        ),  # quoted: kept
        ("report.experiments=demo__seed=1", "report.experiments='demo__seed=1'"),
        (
            "report.baseline=med-s1-1k__curation.n_samples=5000",
            "report.baseline='med-s1-1k__curation.n_samples=5000'",
        ),
        (
            'report.baseline="med-s1-1k__curation.n_samples=5000"',
            'report.baseline="med-s1-1k__curation.n_samples=5000"',
        ),
        ("report.experiments=[demo,base]", "report.experiments=[demo,base]"),
        ("curation.n_samples=a=b", "curation.n_samples=a=b"),  # not a name: Hydra's error stands
    ],
)
def test_slugs_with_an_equals_sign_need_no_inner_quotes(typed, read):
    assert quote_names([typed]) == [read]
    if typed.startswith("report."):
        assert check_overrides(["stage=report", typed]) is None


def test_deleting_one_item_of_a_list_is_one_line():
    problem = check_overrides(["experiment=base", "eval=m1", "~eval.suite.4"])
    assert problem == (
        "~eval.suite.4: Hydra deletes keys, not the items of a list: set eval.suite to the list without it "
        "(docs/evaluation.md: leaving a source out)"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=tiny,llama3.1-8b", "stage=curate,eval"], None),
        (["experiment=glob(med-s1-*)"], None),
        (["curation.n_samples=range(100,400,100)"], None),
        (["experiment=demo,nope"], "unknown experiment 'nope'"),
        (["stage=curate,bogus"], "stage='bogus': valid: curate"),
        (["experiment=glob(med-*)", "curation.method=foo"], "curation.method='foo'"),
        (["curation.n_samples=range(-1,2)"], "curation.n_samples=-1: must be >= 0"),
    ],
)
def test_every_sweep_point_is_checked(overrides, expected):
    problem = check_overrides(overrides, multirun=True)
    assert problem == expected or (expected is not None and expected in problem)


def test_own_experiments_from_a_config_dir_or_search_path(own_configs):
    assert "unknown experiment 'my-exp'" in check_overrides(["experiment=my-exp"])
    assert check_overrides(["experiment=my-exp"], config_dir=str(own_configs)) is None
    assert check_overrides([f"hydra.searchpath=[file://{own_configs}]", "experiment=my-exp"]) is None
    assert check_overrides(["experiment=my-exp,demo"], config_dir=str(own_configs), multirun=True) is None
    problem = check_overrides(["experiment=my-exp", "seed=x"], config_dir=str(own_configs))
    assert problem == "seed=x: expected an integer"
    assert "no such directory" in check_overrides([], config_dir=str(own_configs / "absent"))


def test_an_experiment_sets_seed_stage_and_dry_run(own_configs):
    """conf/config.yaml's own values come before the experiment's, so the experiment wins."""
    result = run_cli("--config-dir", str(own_configs), "experiment=my-exp", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert {"name: my-exp", "seed: 7", "stage: curate", "dry_run: true"} <= set(result.stdout.splitlines())
    searched = run_cli(
        f"hydra.searchpath=[file://{own_configs}]", "experiment=my-exp", "seed=8", "--cfg", "job"
    )
    assert {"seed: 8", "stage: curate"} <= set(searched.stdout.splitlines())  # the command line still wins


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["experiment=nope"], "experiment 'nope'"),
        (["stage=deploy"], "stage='deploy'"),
        (["curation.n_sample=5"], "'curation.n_sample'"),
        (["curation.n_samples=abc", "--cfg", "job"], "curation.n_samples=abc: expected an integer"),
        (["curation.method=foo", "dry_run=true"], "curation.method='foo': valid: s1, random"),
        (["-m", "experiment=demo,nope"], "unknown experiment 'nope'"),
    ],
)
def test_run_py_fails_in_one_line_without_traceback(args, named):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("meds1: ") and named in lines[0]


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
    assert result.returncode == 1 and "run only stage=train or stage=rl under torchrun" in output
    assert "Traceback" not in output and not (tmp_path / "demo").exists()  # only Hydra's logs
