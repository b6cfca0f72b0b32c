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
import sys
import typing

from omegaconf import DictConfig

from meds1.config import COMMANDS, CONF_DIR, Config, to_config
from meds1.errors import UserError

log = logging.getLogger("meds1")

GROUPS = ("experiment", "model", "curation", "trainer", "eval", "inference", "paths", "hydra/launcher")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


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


def check_argument(argument: str) -> str | None:
    if argument.startswith("-") or "=" not in argument:
        return None
    key, value = argument.lstrip("+~").split("=", 1)
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
    for argument in sys.argv[1:] if argv is None else argv:
        problem = check_argument(argument)
        if problem:
            print(f"meds1: {problem}", file=sys.stderr)
            sys.exit(2)


def dispatch(cfg: DictConfig) -> dict:
    """Run the stage named by `cfg.stage`; a UserError becomes one logged line and exit status 1."""
    from hydra.core.hydra_config import HydraConfig

    config = to_config(cfg, overrides=list(HydraConfig.get().overrides.task))
    try:
        if config.stage not in COMMANDS:
            raise UserError(f"unknown stage {config.stage!r}; valid: {', '.join(COMMANDS)}")
        return importlib.import_module(f"meds1.stages.{config.stage}").run(config)
    except UserError as error:
        log.error("%s", error)
        sys.exit(1)
