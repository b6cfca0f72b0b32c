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
    # The stages whose output it reads, by preference: the first of them the experiment runs (`input_stage`)
    inputs: tuple[str, ...] = ()


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
        inputs=("curate",),
    ),
    StageSpec(
        name="rl",
        entry="meds1.stages.rl:run",
        reads=("rl",),
        resources="rl.resources",
        task_per_gpu=True,
        resumable=True,
        inputs=("train",),  # rl.init=train; with rl.init=base it starts from `model` (no train stage)
    ),
    StageSpec(
        name="eval",
        entry="meds1.stages.eval:run",
        reads=("eval", "inference"),
        resources="inference.resources",
        resumable=True,
        inputs=("rl", "train"),  # the model the experiment made last; without either, `model`
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


def sft_variant(cfg: Config) -> Config:
    """The same experiment without its RL stage, evaluating the SFT model RL starts from: `<name>-sft`."""
    return dataclasses.replace(
        cfg,
        name=f"{cfg.name}-sft",
        stages=[stage for stage in cfg.stages if stage != "rl"],
        description=f"{cfg.name}'s SFT model, before RL",
    )


def steps(cfg: Config) -> list[tuple[Config, str]]:
    """(config, stage) in run order: the experiment's stages, then the evals of the models it started
    from, if asked: the SFT model RL starts from (`compare_sft`), the untrained model (`compare_base`)."""
    chain = [(cfg, stage) for stage in cfg.stages]
    if cfg.compare_sft and "rl" in cfg.stages and "train" in cfg.stages:
        chain.append((sft_variant(cfg), "eval"))
    if cfg.compare_base:
        chain.append((base_variant(cfg), "eval"))
    return chain


def command_steps(cfg: Config) -> list[tuple[Config, str]]:
    """The (config, stage) pairs a command runs: the whole chain for stage=all, else the one stage."""
    return steps(cfg) if cfg.stage == "all" else [(cfg, cfg.stage)]


def input_stage(stages: list[str], stage: str) -> str | None:
    """The stage whose output `stage` reads in an experiment running `stages`: the first of its `inputs`
    the experiment runs (None: its first stage; an eval without train or RL evaluates the base model). A
    stage outside `stages` (`stage=rl` of an experiment that does not list it) reads what it would in the
    table's whole chain."""
    chain = [str(s) for s in stages] if stage in stages else STAGES
    return next((name for name in get(stage).inputs if name in chain), None)


def upstream(cfg: Config, stage: str) -> str | None:
    """The stage whose output `stage` reads in this experiment (None for its first stage)."""
    return input_stage(cfg.stages, stage)
