"""Every `python run.py ...` command in README.md and docs/ works as written, so the docs cannot drift
from the code.

Each command is checked as run.py checks it before anything runs (the whole command line composed, every
sweep point built and validated: what `--cfg job` does first). A command that runs or submits stages
needing no earlier output (the demo, `stage=all`, `stage=curate`, SLURM submissions) then runs through
run.py in this process as a dry run, with its outputs under a temp root: the plan is built (SLURM's too)
and nothing runs or is submitted. `stage=train`, `rl`, `eval` and `report` need outputs that are absent here,
so the check is theirs. Only paths are adapted: `paths.root`, and an own `--config-dir` made as the docs
say to make it.
"""

from __future__ import annotations

import logging
import re
import runpy
import shlex
import sys

import pytest

from meds1.config.cli import check_overrides
from tests.conftest import REPO
from tests.test_medsone_experiments import EXPERIMENTS

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INLINE = re.compile(r"`([^`]*\brun\.py\b[^`]*)`")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# Stages whose inputs are earlier outputs: absent here, so these commands are checked, not dry-run.
NEEDS_OUTPUTS = ("train", "rl", "eval", "report")


def code_lines(text: str):
    """(line number, text) of each command line in fenced blocks (backslash continuations joined), and
    of each inline code span outside them."""
    fenced, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            start = start or number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending, start = "", 0
        else:
            yield from ((number, span) for span in INLINE.findall(line))


def run_py_command(line: str) -> tuple[dict[str, str], list[str]] | None:
    """(environment assignments, arguments) of the `run.py` call in a shell line, or None."""
    tokens = shlex.split(line, comments=True)
    if "run.py" not in tokens or "..." in tokens:  # `python run.py ...` in prose stands for any command
        return None
    at = tokens.index("run.py")
    head = tokens[:at]
    head = head[len(head) - head[::-1].index("&&") :] if "&&" in head else head  # `pip install ... && ...`
    env = dict(token.split("=", 1) for token in head if ASSIGNMENT.match(token))
    return env, tokens[at + 1 :]


def documented_commands() -> dict[str, tuple[dict[str, str], list[str]]]:
    """Each distinct documented command, by where it is first written (`page:line`)."""
    found: dict[str, tuple[dict[str, str], list[str]]] = {}
    for page in PAGES:
        for number, line in code_lines(page.read_text()):
            command = run_py_command(line)
            if command and command not in found.values():
                found[f"{page.relative_to(REPO)}:{number}"] = command
    return found


COMMANDS = documented_commands()


def parse(args: list[str]):
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(args)


@pytest.fixture(scope="module")
def config_dirs(tmp_path_factory) -> dict[str, str]:
    """The own config folders the docs name, made as the docs say: `~/my-conf` from the demo experiment
    (docs/config.md) and with m1's suite without GPQA (docs/evaluation.md), `medsone-conf` by
    `python -m meds1.medsone experiments` (docs/medsone.md)."""
    import json

    from meds1.medsone.experiments import import_experiments

    own = tmp_path_factory.mktemp("my-conf")
    (own / "experiment").mkdir()
    demo = (REPO / "conf/experiment/demo.yaml").read_text()
    (own / "experiment/my-exp.yaml").write_text(demo.replace("name: demo", "name: my-exp"))
    (own / "eval").mkdir()
    evaluation = (REPO / "docs/evaluation.md").read_text()
    block = evaluation.split("# ~/my-conf/eval/m1-no-gpqa.yaml")[1].split("```")[0]
    (own / "eval/m1-no-gpqa.yaml").write_text(block.split("\n", 1)[1])

    medsone = tmp_path_factory.mktemp("medsone")
    experiments = {
        **EXPERIMENTS,
        "medqa-1k-random-skip-33-restore": {  # as in med-s1@d15c393 results.json
            "model_key": "llama3.1:8b",
            "curation": {"method": "random", "format": "huatuo", "n_samples": 1000, "extract": "step",
                         "perturbation": {"type": "skip", "rate": 0.33}, "restore": True},
            "training_params": EXPERIMENTS["medqa-1k-random-step-extract"]["training_params"],
            "datasets": "same as base-step-prompt",
        },
    }  # fmt: skip
    results = medsone / "med-s1-results.json"
    results.write_text(json.dumps({"experiments": {n: {"config": c} for n, c in experiments.items()}}))
    import_experiments(results, medsone / "conf", source="som-shahlab/med-s1@d15c393")
    return {"~/my-conf": str(own), "medsone-conf": str(medsone / "conf")}


@pytest.fixture
def keep_logging():
    """run.py's Hydra configures the root logger; give the next tests theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_the_docs_show_commands():
    pages = {where.split(":")[0] for where in COMMANDS}
    assert len(COMMANDS) >= 25 and {"README.md", "docs/slurm.md", "docs/evaluation.md"} <= pages, COMMANDS


def dry_runs(args: list[str]) -> bool:
    """Whether a command runs as a dry run here (else it is checked): its stages need no earlier output."""
    parsed = parse(args)
    stages = [o.split("=", 1)[1] for o in parsed.overrides if o.startswith("stage=")]
    return not parsed.cfg and not (stages and stages[-1] in NEEDS_OUTPUTS)


def cases():
    """A sweep's dry run (every point planned, ~1 s a point here) is in the slow tier; its check, which
    composes every point, is not."""
    for where, (_, args) in COMMANDS.items():
        sweep = dry_runs(args) and parse(args).multirun
        yield pytest.param(where, marks=pytest.mark.slow) if sweep else where
        if sweep:
            yield pytest.param(where, id=f"{where}-check")


@pytest.mark.parametrize("where", list(cases()))
def test_documented_command(where, request, config_dirs, tmp_path, monkeypatch, keep_logging, capsys):
    env, args = COMMANDS[where]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parsed = parse(args)
    config_dir = parsed.config_dir and config_dirs.get(parsed.config_dir)
    assert parsed.config_dir is None or config_dir, f"{where}: add how to make {parsed.config_dir} here"
    command = f"{where}: python run.py {shlex.join(args)}"
    if not dry_runs(args) or request.node.callspec.id.endswith("-check"):
        problem = check_overrides(parsed.overrides, config_dir, parsed.multirun)
        assert problem is None, f"{command}: {problem}"
        return
    dry_run = [] if "dry_run=true" in parsed.overrides else ["dry_run=true"]
    extra = [f"paths.root={tmp_path / 'out'}", *dry_run]
    flags = ["-m"] * parsed.multirun + (["--config-dir", config_dir] if config_dir else [])
    monkeypatch.chdir(tmp_path)  # a sweep's Hydra folder (multirun/) lands here
    monkeypatch.setattr(sys, "argv", [str(REPO / "run.py"), *flags, *parsed.overrides, *extra])
    try:  # run.py checks the command line first (exit 2), then dispatches (a UserError: exit 1)
        runpy.run_path(str(REPO / "run.py"), run_name="__main__")
    except SystemExit as exit:
        pytest.fail(f"{command} (dry run) exited {exit.code}: {capsys.readouterr()}")
    assert "meds1 dry run: nothing" in capsys.readouterr().out, command
