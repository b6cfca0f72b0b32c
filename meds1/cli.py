"""Command-line checks and stage dispatch for run.py.

Hydra reports a bad group choice or key over several lines; meds1 checks the command line first
so that an unknown experiment, stage, group option or config key gets one line naming it and the
valid choices, and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import os
import sys
import typing

from omegaconf import DictConfig

from meds1.config import COMMANDS, CONF_DIR, Config, SlurmLauncherConfig, to_config
from meds1.errors import UserError

log = logging.getLogger("meds1")

GROUPS = (
    "experiment",
    "model",
    "curation",
    "trainer",
    "eval",
    "inference",
    "paths",
    "report",
    "hydra/launcher",
)


# hydra-submitit-launcher's own launchers (they act only with -m, and wait for their jobs).
PLUGIN_LAUNCHERS = ("submitit_local", "submitit_slurm")
SUBMITIT_SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# Plugin resource keys that meds1 takes from each stage instead.
STAGE_RESOURCE_KEYS = ("gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task", "mem_gb", "timeout_min")


def group_options(group: str) -> list[str]:
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    return [*options, *PLUGIN_LAUNCHERS] if group == "hydra/launcher" else options


def _sweep_values(value: str) -> list[str]:
    """The plain choices in `a,b,c` (sweep functions such as range() are left to Hydra)."""
    if "(" in value or "[" in value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def check_key(key: str, schema: type = Config) -> str | None:
    """An error message if the dotted `key` is not in the config schema, else None."""
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown config key {key!r}{hint}; valid keys in {where}: {', '.join(fields)}"
        hints = typing.get_type_hints(schema)
        field_type = hints[part]
        if not dataclasses.is_dataclass(field_type):
            return None  # a leaf, or a dict/list whose keys are the user's
        schema = field_type
    return None


def check_launcher_key(key: str) -> str | None:
    """An error message for a `hydra.launcher.*` key that hydra/launcher=slurm does not have."""
    name = key.removeprefix("hydra.launcher.")
    if name.split(".")[0] in STAGE_RESOURCE_KEYS:
        return (
            f"{key}: meds1 takes resources from each stage: set trainer.resources, inference.resources "
            "(eval) or curation.resources (gpus, nodes, cpus, mem_gb, time_min)"
        )
    problem = check_key(name, SlurmLauncherConfig)
    return problem and problem.replace(repr(name), repr(key)).replace("the top level", "hydra.launcher")


def check_argument(argument: str, launcher: str | None = None) -> str | None:
    """An error message for one command-line argument, or None; `launcher` is the hydra/launcher chosen."""
    if argument.startswith("-") or "=" not in argument:
        return None
    key, value = argument.lstrip("+~").split("=", 1)
    if key.startswith("hydra.launcher.") and launcher == "slurm":
        return check_launcher_key(key)
    if key in GROUPS:
        valid = group_options(key)
        for choice in _sweep_values(value):
            if choice not in valid:
                return f"unknown {key} {choice!r}; valid: {', '.join(valid)}"
        return None
    if key == "stage":
        for choice in _sweep_values(value):
            if choice not in COMMANDS:
                return f"unknown stage {choice!r}; valid: {', '.join(COMMANDS)}"
        return None
    if key.startswith("hydra"):
        return None
    return check_key(key)


def check_command_line(argv: list[str] | None = None) -> None:
    """Exit with one line on the first unknown experiment, stage, group option or key."""
    arguments = sys.argv[1:] if argv is None else argv
    launcher = next((a.split("=", 1)[1] for a in arguments if a.startswith("hydra/launcher=")), None)
    for argument in arguments:
        problem = check_argument(argument, launcher)
        if problem:
            print(f"meds1: {problem}", file=sys.stderr)
            sys.exit(2)


def dispatch(cfg: DictConfig) -> dict | list:
    """Run the stage named by `cfg.stage` here, or submit it (hydra/launcher=slurm); exits on a UserError."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    config = to_config(cfg, overrides=list(hydra.overrides.task))
    return exit_on_user_error(run_command, config, hydra)


def exit_on_user_error(function, *args):
    """`function(*args)`; a UserError becomes one logged line and exit status 1."""
    try:
        return function(*args)
    except UserError as error:
        log.error("%s", error)
        sys.exit(1)


def run_command(config: Config, hydra) -> dict | list:
    if config.stage not in COMMANDS:
        raise UserError(f"unknown stage {config.stage!r}; valid: {', '.join(COMMANDS)}")
    launcher = slurm_launcher(hydra)
    if config.stage == "report":
        from meds1.launch.status import refresh
        from meds1.paths import registry_path

        refresh(registry_path(config))  # settle jobs that ended without reporting (cancelled, killed)
    elif launcher is not None:
        from meds1.launch.submit import launch

        return launch([config], launcher)
    elif config.dry_run:
        from meds1.launch.plan import format_plan, plan

        steps = plan([config], None)
        print(
            f"meds1 dry run: nothing run. Plan ({len(steps)} steps):\n{format_plan(steps, submitted=False)}"
        )
        return steps
    if config.stage != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            f"stage={config.stage} runs in one process, but torchrun started {os.environ['WORLD_SIZE']}: "
            "run only stage=train under torchrun (every process would repeat the other stages)"
        )
    return importlib.import_module(f"meds1.stages.{config.stage}").run(config)


def slurm_launcher(hydra) -> SlurmLauncherConfig | None:
    """meds1's SLURM launcher settings when it is the chosen launcher, else None (run here).

    Hydra applies a launcher only with -m; without it, `hydra/launcher=slurm` still submits (meds1 does
    it here), and hydra-submitit-launcher's `submitit_slurm` stops with a line saying what to use instead.
    """
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    target = hydra.launcher.get("_target_")
    if target == SlurmLauncherConfig._target_:
        return SlurmLauncherConfig(**OmegaConf.to_container(hydra.launcher, resolve=True))
    if target == SUBMITIT_SLURM_TARGET and hydra.mode == RunMode.RUN:
        raise UserError(
            "hydra/launcher=submitit_slurm applies only with -m (without it this would run here); "
            "use hydra/launcher=slurm, which submits with or without -m"
        )
    return None
