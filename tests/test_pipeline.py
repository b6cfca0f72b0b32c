"""The stage table and the direction of imports between meds1's layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from meds1 import pipeline
from meds1.config.schema import COMMANDS, Config, Resources
from meds1.launch.resources import tasks_per_node

REPO = Path(__file__).resolve().parent.parent
# Lower layers never import higher ones: entry/plugin -> cli/launch/stages -> domain -> core. The core has
# layers of its own: errors and provenance; the stage table and the schema (which name each other's types);
# the rules, the registry; paths; slugs and stage directories; compose (so the schema never reaches back to
# what composes it).
LAYERS = {
    "meds1.errors": 0,
    "meds1.layouts": 0,
    "meds1.store.provenance": 0,
    "meds1.store.content": 1,
    "meds1.pipeline": 1,
    "meds1.config.schema": 1,
    "meds1.curation.traces.spec": 1,
    "meds1.curation.pool": 1,
    "meds1.curation.annotators": 1,
    "meds1.evaluation.suite_spec": 1,
    "meds1.hub": 1,
    "meds1.config.rules": 2,
    "meds1.store.identity": 2,
    "meds1.store.registry": 3,
    "meds1.config.compose": 4,
    "meds1.store.workspace": 4,
    "meds1.models": 6,
    "meds1.curation": 6,
    "meds1.inference": 6,
    "meds1.evaluation": 6,
    "meds1.training": 6,
    "meds1.rl.reward": 7,  # a command line (python -m meds1.rl.reward): it checks its overrides as run.py
    "meds1.rl": 6,
    "meds1.report": 6,
    "meds1.medsone": 6,
    "meds1.stages": 7,
    "meds1.launch": 7,
    "meds1.config.cli": 7,
    "meds1.config": 0,
    "meds1.store": 0,
    "hydra_plugins": 8,
    "run": 8,
}


def layer(module: str) -> int:
    if module == "meds1":  # the package's empty __init__
        return 0
    return next(
        level for prefix, level in LAYERS.items() if module == prefix or module.startswith(f"{prefix}.")
    )


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def imports(top_level: bool = False) -> dict[str, set[str]]:
    """Every project module -> the project modules it imports: anywhere in the file, or with `top_level`
    only those run on import (not inside functions, not under `if TYPE_CHECKING`)."""
    files = [*REPO.glob("meds1/**/*.py"), *REPO.glob("hydra_plugins/meds1_launcher/*.py"), REPO / "run.py"]
    graph = {}
    for path in files:
        tree = ast.parse(path.read_text())
        graph[module_name(path)] = imported(tree.body if top_level else ast.walk(tree))
    return {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}


def test_imports_point_down_the_layers():
    upward = [
        f"{module} -> {target}"
        for module, targets in imports().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert upward == []


def test_no_stage_or_plugin_imports_the_command_line_module():
    graph = imports()
    users = [m for m, targets in graph.items() if "meds1.config.cli" in targets]
    assert users == ["meds1.rl.reward", "run"]  # the command lines: run.py and the reward scorer


def test_import_graph_has_no_cycles_at_module_level():
    graph = imports(top_level=True)
    seen, stack = set(), []

    def visit(module):
        if module in stack:
            raise AssertionError(" -> ".join([*stack[stack.index(module) :], module]))
        if module in seen:
            return
        stack.append(module)
        for target in graph[module]:
            if target != "meds1" and not module.startswith(target + "."):  # a package's own __init__
                visit(target)
        stack.pop()
        seen.add(module)

    for module in graph:
        visit(module)


def test_every_stage_row_resolves(make_config):
    cfg = make_config("experiment=demo")
    for stage in pipeline.PIPELINE:
        assert callable(pipeline.load(stage.entry))
        assert isinstance(pipeline.resources(cfg, stage.name), Resources)
        assert set(stage.reads) <= {f.name for f in Config.__dataclass_fields__.values()}
    assert COMMANDS == ("curate", "train", "rl", "eval", "all", "report")


def test_the_chain_and_what_each_stage_waits_for(make_config):
    cfg = make_config("experiment=demo", "compare_base=true")
    assert [(c.name, s) for c, s in pipeline.steps(cfg)] == [
        ("demo", "curate"),
        ("demo", "train"),
        ("demo", "eval"),
        ("demo-base", "eval"),
    ]
    assert [pipeline.upstream(cfg, s) for s in ("curate", "train", "eval")] == [None, "curate", "train"]
    base = pipeline.base_variant(cfg)
    assert pipeline.upstream(base, "eval") is None  # the untrained model's eval reads no stage


def test_the_chain_with_rl_evaluates_the_rl_model_and_the_sft_model_it_started_from(make_config):
    cfg = make_config("experiment=demo-rl")
    assert [(c.name, s) for c, s in pipeline.steps(cfg)] == [
        ("demo-rl", "curate"),
        ("demo-rl", "train"),
        ("demo-rl", "rl"),
        ("demo-rl", "eval"),
        ("demo-rl-sft", "eval"),
    ]
    assert [pipeline.upstream(cfg, s) for s in cfg.stages] == [None, "curate", "train", "rl"]
    sft = pipeline.sft_variant(cfg)
    assert sft.stages == ["curate", "train", "eval"] and pipeline.upstream(sft, "eval") == "train"
    without_sft = make_config("experiment=demo-rl", "stages=[rl,eval]", "rl.init=base")
    assert pipeline.upstream(without_sft, "rl") is None and pipeline.upstream(without_sft, "eval") == "rl"
    assert [s for _, s in pipeline.steps(without_sft)] == ["rl", "eval"]  # no SFT model to compare


def test_a_new_row_is_sized_and_submitted_from_the_table(make_config, monkeypatch):
    """What adding a stage takes: a row (and its module). Here a row reusing eval's entry point."""
    from meds1.config.schema import SlurmLauncherConfig
    from meds1.launch.resources import sbatch_parameters

    row = pipeline.StageSpec("judge", "meds1.stages.eval:run", ("eval",), "inference.resources", True)
    monkeypatch.setattr(pipeline, "BY_NAME", {**pipeline.BY_NAME, "judge": row})
    cfg = make_config("experiment=demo", "inference.resources.gpus=2")
    assert pipeline.resources(cfg, "judge") == cfg.inference.resources
    parameters = sbatch_parameters(cfg, "judge", SlurmLauncherConfig())
    assert (parameters["job_name"], parameters["ntasks_per_node"]) == ("meds1-demo-judge", 2)
    assert tasks_per_node("eval", Resources(gpus=2)) == 1
    with pytest.raises(ValueError, match="unknown stage 'nope'; valid: curate, train, rl, eval"):
        pipeline.get("nope")
