"""Command-line checks for run.py (what runs next: meds1.launch.dispatch).

Hydra reports a bad group choice, key or value over several lines, and meds1's own rules (`validate`)
would fail only once the task runs. So run.py first reads the command line with Hydra's own parser,
composes it against Hydra's own search path (`--config-dir`, `hydra.searchpath`), every sweep point with
-m, and builds each `Config`: the first problem is one line naming the key and what is valid, and exit 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
from pathlib import Path

from omegaconf import DictConfig, open_dict

from meds1.config.compose import CONF_DIR
from meds1.config.rules import to_config
from meds1.config.schema import Config, SlurmLauncherConfig, register_configs
from meds1.errors import UserError

# Plugin resource keys that meds1 takes from each stage instead.
STAGE_RESOURCE_KEYS = ("gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task", "mem_gb", "timeout_min")
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def group_options(group: str) -> list[str]:
    """The options meds1 ships for a config group (an own `--config-dir` may add more)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


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
        field_type = typing.get_type_hints(schema)[part]
        if not dataclasses.is_dataclass(field_type):
            return None  # a leaf, or a dict/list whose keys are the user's
        schema = field_type
    return None


def check_launcher_key(key: str) -> str | None:
    """An error message for a `hydra.launcher.*` key that hydra/launcher=slurm does not have."""
    name = key.removeprefix("hydra.launcher.")
    if name.split(".")[0] in STAGE_RESOURCE_KEYS:
        return (
            f"{key}: meds1 takes resources from each stage: set trainer.resources, rl.resources, "
            "inference.resources (eval) or curation.resources (gpus, nodes, cpus, mem_gb, time_min)"
        )
    problem = check_key(name, SlurmLauncherConfig)
    return problem and problem.replace(repr(name), repr(key)).replace("the top level", "hydra.launcher")


def leaf_type(key: str, schema: type = Config) -> type | None:
    """The declared type of a dotted schema key (a list's or an optional's item type), or None."""
    for part in key.split("."):
        hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part.split("[")[0] not in hints:
            return None
        schema = hints[part.split("[")[0]]
        while typing.get_origin(schema) in (list, typing.Union, types.UnionType):
            schema = next(a for a in typing.get_args(schema) if a is not type(None))
    return schema


def bad_value(key: str, value: object) -> str | None:
    """`key=value: valid: ...` for a value that does not fit the key's declared type, or None."""
    schema = SlurmLauncherConfig if key.startswith("hydra.launcher.") else Config
    expected = leaf_type(key.removeprefix("hydra.launcher."), schema)
    if isinstance(expected, type) and issubclass(expected, enum.Enum):
        return f"{key}={value!r}: valid: {', '.join(member.value for member in expected)}"
    if expected in TYPE_NAMES:
        return f"{key}={value}: expected {TYPE_NAMES[expected]}"
    return None


def explain(error: Exception) -> str:
    """One line for an error from composing or building the config."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    key = getattr(cause, "full_key", None)
    problem = None
    if isinstance(error, MissingConfigException) and error.options is not None:
        group, _, name = error.missing_cfg_file.rpartition("/")
        options = [option for option in error.options if not option.endswith("_schema")]
        problem = f"unknown {group} {name!r}; valid: {', '.join(options)}"
        if group == "experiment":
            problem += " (your own: --config-dir DIR with DIR/experiment/NAME.yaml)"
    elif isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        problem = check_launcher_key(key) if key.startswith("hydra.launcher.") else check_key(key)
    elif isinstance(cause, ValidationError) and key:
        problem = bad_value(key, cause.value)
    elif isinstance(cause, MissingMandatoryValue) and key:
        problem = f"{key} is not set: the experiment or the command line must set it"
    return problem or " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def check_overrides(
    overrides: list[str],
    config_dir: str | None = None,
    multirun: bool = False,
    config_name: str = "config",
    primary_dir: Path = CONF_DIR,
) -> str | None:
    """A one-line problem with the command line's overrides, or None once every job's config builds."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    overrides = quote_names(overrides)  # as run.py passes them on
    for line in overrides:
        try:
            parser.parse_override(line)
        except HydraException as error:
            return f"cannot parse {line!r}: {str(error).splitlines()[0]}"
        key = line.partition("=")[0]
        if line.startswith("~") and key.rpartition(".")[2].isdigit():  # Hydra fails on it with a traceback
            return (
                f"{line}: Hydra deletes keys, not the items of a list: set {key[1:].rpartition('.')[0]} "
                "to the list without it (docs/evaluation.md: leaving a source out)"
            )
    try:
        hydra = _create_hydra(config_dir, primary_dir)
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        master = hydra.compose_config(config_name, overrides, run_mode=mode, with_log_configuration=False)
        for job in _job_configs(hydra, master) if multirun else [_without_hydra(master)]:
            to_config(job)
    except (HydraException, OmegaConfBaseException, UserError) as error:
        return explain(error)
    finally:
        GlobalHydra.instance().clear()
    return None


def _create_hydra(config_dir: str | None, primary_dir: Path):
    """Hydra with the search path `python run.py [--config-dir DIR]` gets (as hydra.main builds it)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    register_configs()
    search_path = create_config_search_path(str(primary_dir))
    if config_dir is not None:
        directory = Path(config_dir).resolve()
        if not directory.is_dir():
            raise UserError(f"--config-dir {config_dir}: no such directory")
        search_path.prepend("command-line", f"file://{directory}", anchor=SearchPathQuery(provider="schema"))
    return Hydra.create_main_hydra2(task_name="run", config_search_path=search_path)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _job_configs(hydra, master: DictConfig):
    """Every sweep point's job config, expanded by Hydra's basic sweeper (globs, ranges, choices)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from meds1.config.compose import SweepComposer

    params = [f"{key}={value}" for key, value in (master.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=hydra.config_loader)
    points = BasicSweeper.split_arguments(
        parser.parse_overrides([*params, *master.hydra.overrides.task]), None
    )
    composer = SweepComposer(hydra.config_loader, master)
    for batch in points:
        for point in batch:
            yield composer.compose(point)


NAME_KEYS = ("report.experiments", "report.baseline")  # take slugs, which hold "=" (`demo__seed=1`)


def quote_names(overrides: list[str]) -> list[str]:
    """The overrides with the slugs given to `report.experiments` and `report.baseline` quoted where
    Hydra's grammar would refuse them bare (`report.experiments=[demo__curation.n_samples=40]`: an "="
    inside a value), so they work with or without inner quotes; everything else as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()

    def parses(line: str) -> bool:
        try:
            parser.parse_override(line)
        except HydraException:
            return False
        return True

    def quoted(name: str) -> str:
        name = name.strip()
        if len(name) > 1 and name[0] == name[-1] and name[0] in "'\"":
            return name
        return f'"{name}"' if "'" in name else f"'{name}'"

    fixed = []
    for line in overrides:
        key, equals, value = line.partition("=")
        if key.lstrip("+") in NAME_KEYS and equals and not parses(line):
            inner = value.strip()
            if inner.startswith("[") and inner.endswith("]"):
                value = "[" + ",".join(quoted(name) for name in inner[1:-1].split(",") if name.strip()) + "]"
            else:
                value = quoted(inner)
            line = f"{key}={value}" if parses(f"{key}={value}") else line
        fixed.append(line)
    return fixed


def check_command_line(argv: list[str] | None = None) -> None:
    """Exit with one line on the first problem of the command line (see the module docstring)."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    primary_dir = CONF_DIR if args.config_path is None else CONF_DIR.parent / args.config_path
    problem = check_overrides(
        args.overrides, args.config_dir, args.multirun, args.config_name or "config", primary_dir
    )
    if problem:
        print(f"meds1: {problem}", file=sys.stderr)
        sys.exit(2)
