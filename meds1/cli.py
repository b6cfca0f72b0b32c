"""Command-line checks for run.py (what runs next: meds1.launch.dispatch).

Hydra reports a bad group choice or key over several lines; meds1 checks the command line first
so that an unknown experiment, stage, group option or config key gets one line naming it and the
valid choices, and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing

from meds1.config import COMMANDS, CONF_DIR, Config, SlurmLauncherConfig

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
