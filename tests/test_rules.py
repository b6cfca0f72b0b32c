"""meds1/config/rules.py: every setting's range, the batch vs the processes that will train, an inference
package that is missing, all refused where the config is built (compose, --cfg job, dry runs, submission)."""

import dataclasses
import subprocess
import sys
import typing

import pytest

from meds1.config import rules
from meds1.config.compose import compose
from meds1.config.rules import RANGES, Range
from meds1.config.schema import Config
from meds1.errors import UserError
from tests.conftest import REPO


def numeric_fields(schema: type, prefix: str = "") -> typing.Iterator[tuple[type, str, str]]:
    """(schema class, field name, dotted key) of every int/float setting (lists and dicts of them too)."""
    for field in dataclasses.fields(schema):
        hint = typing.get_type_hints(schema)[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        item = args[-1] if typing.get_origin(hint) in (list, dict) else args[0]
        if dataclasses.is_dataclass(item):
            yield from numeric_fields(item, f"{prefix}{field.name}.")
        elif item in (int, float):
            yield schema, field.name, prefix + field.name


def test_every_numeric_setting_has_a_range():
    missing = [key for schema, name, key in numeric_fields(Config) if name not in RANGES.get(schema, {})]
    assert missing == []


def test_range_text_and_bounds():
    assert (str(Range(0, 1, high_open=True)), str(Range(0, low_open=True)), str(Range(-2, 2))) == (
        "in [0, 1)",
        "> 0",
        "in [-2, 2]",
    )
    assert str(Range(1, also=-1, note="-1: none")) == ">= 1 or -1 (-1: none)"
    assert Range(0, 1, low_open=True).holds(1) and not Range(0, 1, low_open=True).holds(0)
    assert Range(1, also=-1).holds(-1) and not Range(1, also=-1).holds(0)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.learning_rate=-1", "trainer.learning_rate=-1.0: must be > 0"),
        ("trainer.num_epochs=0", "trainer.num_epochs=0.0: must be > 0"),
        ("trainer.warmup_ratio=1", "trainer.warmup_ratio=1.0: must be in [0, 1)"),
        ("trainer.warmup_ratio=-0.1", "trainer.warmup_ratio=-0.1: must be in [0, 1)"),
        ("trainer.weight_decay=-0.01", "trainer.weight_decay=-0.01: must be >= 0"),
        ("trainer.per_device_batch_size=0", "trainer.per_device_batch_size=0: must be >= 1"),
        ("trainer.block_size=0", "trainer.block_size=0: must be >= 1"),
        ("trainer.max_steps=0", "trainer.max_steps=0: must be >= 1 or -1"),
        ("trainer.resources.nodes=0", "trainer.resources.nodes=0: must be >= 1"),
        ("eval.temperature=-0.5", "eval.temperature=-0.5: must be >= 0"),
        ("eval.top_p=0", "eval.top_p=0.0: must be in (0, 1]"),
        ("eval.max_per_source=0", "eval.max_per_source=0: must be >= 1"),
        ("eval=tts eval.tts.budget=0", "eval.tts.budget=0: must be >= 1"),
        ("inference.tensor_parallel_size=0", "inference.tensor_parallel_size=0: must be >= 1"),
        ("inference.data_parallel_size=0", "inference.data_parallel_size=0: must be >= 1"),
        ("inference.gpu_memory_utilization=1.5", "inference.gpu_memory_utilization=1.5: must be in (0, 1]"),
        ("+curation.specialty_weights.Cardiology=-1", "curation.specialty_weights.Cardiology=-1.0: must be"),
        ("curation.quality.truncated_cot_tokens=[1024,0]", "curation.quality.truncated_cot_tokens[1]=0"),
        ("curation.specialty.llm.temperature=-1", "curation.specialty.llm.temperature=-1.0: must be >= 0"),
        ("curation.specialty.llm.inference.max_concurrency=0", "llm.inference.max_concurrency=0: must be"),
        ("model.tiny.num_heads=0", "model.tiny.num_heads=0: must be >= 1"),
        ("seed=-1", "seed=-1: must be >= 0"),
    ],
)
def test_a_value_out_of_its_range_is_refused_naming_the_key(override, expected):
    with pytest.raises(UserError) as error:
        compose(["experiment=demo", *override.split()])
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_sections_a_stage_does_not_read_are_not_checked():
    assert compose(["experiment=base", "trainer.learning_rate=-1"]).stages == ["eval"]  # base does not train
    with pytest.raises(UserError, match="trainer.learning_rate"):
        compose(["experiment=demo", "trainer.learning_rate=-1", "stage=eval"])  # the experiment trains


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["experiment=med-s1-25k", "trainer.resources.gpus=4"], "global_batch_size=2 is not divisible by"),
        (["trainer.global_batch_size=6", "trainer.resources.gpus=4"], "not divisible by the world size 4"),
        (
            ["trainer.global_batch_size=6", "trainer.resources.gpus=2", "trainer.resources.nodes=2"],
            "4: trainer",
        ),
        (
            ["trainer.global_batch_size=12", "trainer.per_device_batch_size=4", "trainer.resources.gpus=2"],
            "per_device_batch_size=4 does not divide the 6 rows",
        ),
    ],
)
def test_global_batch_must_split_over_the_training_processes(overrides, expected):
    with pytest.raises(UserError, match=expected):
        compose(["experiment=med-s1-1k", *overrides])


def test_batches_that_split_pass():
    assert compose(["experiment=med-s1-25k"]).trainer.resources.gpus == 2
    batch_16 = ["trainer.global_batch_size=16", "trainer.resources.gpus=4", "trainer.resources.nodes=2"]
    assert compose(["experiment=med-s1-1k", *batch_16]).trainer.resources.nodes == 2


def without_vllm(monkeypatch):
    real = rules.find_spec
    monkeypatch.setattr(rules, "find_spec", lambda name: None if name == "vllm" else real(name))


def test_vllm_not_installed_stops_the_stages_that_use_it_before_they_run(monkeypatch):
    without_vllm(monkeypatch)
    planned = compose(["experiment=demo", "inference=vllm"])  # composing and planning need no vLLM
    with pytest.raises(UserError, match=r'^inference.backend=vllm needs vLLM: pip install -e "\.\[vllm\]"'):
        rules.check_installed(planned)
    labeler = ["experiment=med-s1-1k", "inference=hf", "curation.specialty.llm.inference.backend=vllm"]
    with pytest.raises(UserError, match="^curation.specialty.llm.inference.backend=vllm needs vLLM"):
        rules.check_installed(compose(labeler))
    # Commands that load no vLLM engine: the curation of an experiment that evaluates on vLLM, the report.
    rules.check_installed(compose(["experiment=med-s1-25k", "stage=curate"]))
    rules.check_installed(compose(["experiment=med-s1-25k", "stage=report"]))


@pytest.mark.skipif(rules.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_installed_passes():
    rules.check_installed(compose(["experiment=demo", "inference=vllm"]))


# Trace settings and whether they ask the trace LLM anything (the `none` transform and the perturbations
# without a prompt do not; a transform with calls, `restore` and the prompted perturbations do).
TRACE_CASES = [
    (["curation.trace.transforms=[none]"], False),
    (["curation.trace.transforms=[]"], False),
    (["curation.trace.transforms=[step]"], True),
    (["curation.trace.restore=true"], True),
    (["curation.trace.transforms=[cot-step]", "curation.trace.perturbation.type=shuffle"], True),
]


@pytest.mark.parametrize(("trace", "asks"), TRACE_CASES, ids=str)
def test_one_table_of_annotators_for_the_rules_the_resources_and_the_preflights(trace, asks, monkeypatch):
    """A local trace LLM needs vLLM and GPUs exactly when the trace settings ask it anything; an endpoint
    needs its address exactly then (before, `transforms=[none]` with a vllm backend was refused without
    vLLM, and `restore=true` alone passed compose and stopped at its pre-flight: `base_url is not set`)."""
    from meds1.curation.annotators import TRACE_LLM, annotators
    from meds1.curation.resources import curate_resources

    without_vllm(monkeypatch)
    local = [
        "experiment=random-1k",
        "stage=curate",
        *trace,
        "curation.trace.llm.inference.backend=vllm",
        "curation.trace.llm.inference.resources.gpus=2",
    ]
    cfg = compose(local)
    assert annotators(cfg)[TRACE_LLM].asked == asks
    assert curate_resources(cfg).gpus == (2 if asks else 0)
    if asks:
        with pytest.raises(UserError, match="^curation.trace.llm.inference.backend=vllm needs vLLM"):
            rules.check_installed(cfg)
    else:
        rules.check_installed(cfg)
    unset = ["experiment=demo", "stage=curate", *trace]  # the demo's trace LLM has no base_url
    if not asks:
        compose(unset)
        return
    with pytest.raises(
        UserError,
        match=r"^curation.trace.llm.inference.base_url is not set \(the endpoint serving gemini-2.0-flash\)$",
    ):
        compose(unset)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["curation.specialty.method=llm"], "curation.specialty.llm.inference"),
        (
            ["curation.difficulty.enabled=true", "curation.difficulty.judge.method=llm"],
            "curation.difficulty.judge.llm.inference",
        ),
        (["curation.difficulty.enabled=true", "inference=openai"], "inference"),
    ],
)
def test_every_annotator_asked_over_an_endpoint_needs_its_address_at_compose(overrides, key):
    with pytest.raises(UserError, match=rf"^{key}.base_url is not set \(the endpoint serving "):
        compose(["experiment=demo", *overrides, f"{key}.base_url=null"])
    compose(["experiment=base", *overrides, f"{key}.base_url=null"])  # an experiment that does not curate


def test_restore_alone_without_an_endpoint_fails_its_dry_run_in_one_line(tmp_path):
    result = run_py("experiment=demo", "stage=curate", "curation.trace.restore=true", "dry_run=true")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "meds1: curation.trace.llm.inference.base_url is not set (the endpoint serving gemini-2.0-flash)"
    ]


def run_py(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python run.py ARGS`, or `python -c CODE ARGS`."""
    command = [sys.executable, "run.py", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


BAD_BATCH = ["experiment=med-s1-25k", "trainer.resources.gpus=4"]


@pytest.mark.parametrize(
    "extra", [["--cfg", "job"], ["dry_run=true"], ["dry_run=true", "hydra/launcher=slurm"]], ids=str
)
def test_command_line_refuses_before_anything_runs_or_is_queued(extra, tmp_path):
    result = run_py(*extra, *BAD_BATCH, f"paths.root={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "meds1: trainer.global_batch_size=2 is not divisible by the world size 4: trainer.resources asks "
        "for 4 GPU(s) x 1 node(s), one training process per GPU"
    ]
    assert list(tmp_path.iterdir()) == []


# run.py with its command-line check switched off, so the config reaches dispatch or the launcher plugin.
MAIN = (
    "import runpy, sys, meds1.config.cli; meds1.config.cli.check_command_line = lambda: None; "
    "sys.argv[0] = 'run.py'; runpy.run_path('run.py', run_name='__main__')"
)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["-m", "hydra/launcher=slurm"]], ids=["dispatch", "plugin"])
def test_dispatch_and_the_launcher_plugin_report_a_rule_in_one_line(launcher, tmp_path):
    result = run_py(*launcher, "trainer.learning_rate=-1", f"paths.root={tmp_path}", code=MAIN)
    assert result.returncode == 1
    assert "trainer.learning_rate=-1.0: must be > 0" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_report_dry_run_writes_nothing(tmp_path):
    (tmp_path / "results.json").write_text('{"experiments": {}}')
    result = run_py(
        "stage=report", "dry_run=true", f"paths.root={tmp_path}", "hydra.run.dir=" + str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "stage=report would read" in result.stdout
    written = {p.name for p in tmp_path.iterdir()}
    assert written <= {"results.json", "run.log", ".hydra"} and not (tmp_path / "report").exists()
    assert (tmp_path / "results.json").read_text() == '{"experiments": {}}'
