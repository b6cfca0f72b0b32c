"""The stage table: everything meds1 knows about a stage, in one place, and the chain they form.

Dispatch, `stage=all`, the SLURM plan and jobs, slugs and config hashes, the config's range checks,
status and the report all read this table. A stage's name is its `stage=` value, its directory under
`<root>/<slug>/`, its job name and the key of its record in results.json
(`experiments.<slug>.results.<name>`; med-s1's names for them are used only by the med-s1 import/export,
meds1/medsone/results.py). Entry points and resource functions are named as `module:attribute` strings
and imported only when called, so reading the table imports no stage code.

Adding a stage: add a row here and write its module (a `run(cfg) -> record` function).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meds1.config.schema import Config, Resources


@dataclass(frozen=True)
class StageSpec:
    name: str
    entry: str  # "module:function" that runs the stage: run(cfg) -> the record it adds to results.json
    reads: tuple[str, ...]  # config sections that change its result, beyond COMMON_SECTIONS and its input's
    resources: str  # what its job asks for: a config key ("trainer.resources") or a "module:function"(cfg)
    task_per_gpu: bool = False  # its job runs one task per GPU (a distributed process group)
    resumable: bool = False  # requeued on time-out/preemption, it resumes from its partial directory


# What every stage reads: the model it starts from and the seed.
COMMON_SECTIONS = ("model", "seed")
PIPELINE = (
    StageSpec(
        name="curate",
        entry="meds1.stages.curate:run",
        reads=("curation",),
        resources="meds1.curation.resources:curate_resources",
    ),
    StageSpec(
        name="train",
        entry="meds1.stages.train:run",
        reads=("trainer",),
        resources="trainer.resources",
        task_per_gpu=True,
        resumable=True,
    ),
    StageSpec(
        name="eval",
        entry="meds1.stages.eval:run",
        reads=("eval", "inference"),
        resources="inference.resources",
        resumable=True,
    ),
)
BY_NAME = {stage.name: stage for stage in PIPELINE}
STAGES = tuple(BY_NAME)
# Every config section that some stage's result depends on.
RESULT_SECTIONS = frozenset({*COMMON_SECTIONS, *(section for stage in PIPELINE for section in stage.reads)})
# Commands that are not pipeline stages: the whole chain, and the report over the registry.
COMMAND_ENTRIES = {"all": "meds1.stages.all:run", "report": "meds1.stages.report:run"}


def get(name: str) -> StageSpec:
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    return BY_NAME[name]


def load(reference: str) -> Any:
    """The object a "module:attribute" string names (imported now)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def run(cfg: Config, name: str) -> Any:
    """Run stage or command `name` of `cfg` here."""
    entry = COMMAND_ENTRIES[name] if name in COMMAND_ENTRIES else get(name).entry
    return load(entry)(cfg)


def resources(cfg: Config, name: str) -> Resources:
    """What stage `name`'s job asks the scheduler for."""
    reference = get(name).resources
    if ":" in reference:
        return load(reference)(cfg)
    value = cfg
    for part in reference.split("."):
        value = getattr(value, part)
    return value


def tasks_per_node(name: str, resources: Resources) -> int:
    """Tasks stage `name`'s job starts on each node: one per GPU where it trains one process per GPU."""
    return resources.gpus if get(name).task_per_gpu and resources.gpus > 0 else 1


def processes(name: str, resources: Resources) -> int:
    """The processes stage `name` runs as under a scheduler (its training world size for train)."""
    return tasks_per_node(name, resources) * resources.nodes


def base_variant(cfg: Config) -> Config:
    """The same experiment evaluating the untrained model, recorded as `<name>-base`."""
    return dataclasses.replace(
        cfg, name=f"{cfg.name}-base", stages=["eval"], description=f"{cfg.model.name} without fine-tuning"
    )


def steps(cfg: Config) -> list[tuple[Config, str]]:
    """(config, stage) in run order: the experiment's stages, then the untrained model's eval if asked."""
    chain = [(cfg, stage) for stage in cfg.stages]
    if cfg.compare_base:
        chain.append((base_variant(cfg), "eval"))
    return chain


def command_steps(cfg: Config) -> list[tuple[Config, str]]:
    """The (config, stage) pairs a command runs: the whole chain for stage=all, else the one stage."""
    return steps(cfg) if cfg.stage == "all" else [(cfg, cfg.stage)]


def input_stage(stages: list[str], stage: str) -> str | None:
    """The stage whose output `stage` reads: the one before it in the table, except that an experiment
    that does not train evaluates the base model (its eval reads no stage's output)."""
    index = STAGES.index(get(stage).name)
    if index == 0 or (stage == "eval" and "train" not in stages):
        return None
    return STAGES[index - 1]


def upstream(cfg: Config, stage: str) -> str | None:
    """The stage whose output `stage` reads in this experiment (None for its first stage)."""
    order = cfg.stages if stage in cfg.stages else list(STAGES)
    index = order.index(stage)
    return order[index - 1] if index > 0 else None
