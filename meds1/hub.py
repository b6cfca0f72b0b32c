"""Reads from the Hugging Face hub, in one place: `reading`, which turns a hub read that fails (offline, the
hub unreachable, a gated or unknown repo) into one line naming the setting that points at a local copy, and
a dataset (or a local folder in a hub repo's layout) with the commit it was read at."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from meds1.errors import UserError
from meds1.evaluation.suite_spec import SUITE_HUB_SCHEME

log = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
TRUE = ("1", "ON", "YES", "TRUE")
ENV_DEFAULT = re.compile(r"\$\{oc\.env:(\w+),([^}]*)\}")  # ${oc.env:NAME,default} in a shipped YAML


class HubReadError(UserError):
    """A hub read that failed: what (`value`, set by `key`), why, and how to use a local copy instead."""

    def __init__(self, value: str, key: str, reason: str, local: str, download: dict):
        self.value, self.key, self.reason, self.local, self.download = value, key, reason, local, download
        super().__init__(self._line())

    def _line(self) -> str:
        line = f"cannot load {self.value!r} ({self.key}): {self.reason}"
        if Path(self.value.removeprefix(SUITE_HUB_SCHEME)).expanduser().exists():
            return line  # a local copy already: nothing to download
        variable, default = shipped_env_variable(self.value)
        below = self.value[len(default) :] if variable else ""  # where the value sits under the variable's
        setting = f"{self.key}={self.local.format(dir='DIR' + below)}"
        if variable:
            setting = f"{variable}={self.local.format(dir='DIR').split('?')[0]} (or {setting})"
        return (
            f"{line}. To run without the hub, download it where the hub is reachable "
            f"(`{download_command(self.value, local_dir='DIR' + below, **self.download)}`) and set {setting}"
        )

    def named(self, key: str) -> HubReadError:
        """The same failure, named by the key that set the value (a curation LLM's model.path)."""
        return HubReadError(self.value, key, self.reason, self.local, self.download)


@contextmanager
def reading(value: str, key: str, *, local: str = "{dir}", **download) -> Iterator[None]:
    """Run a hub read of `value` (a hub id or hf:// dataset, or a local path) that `key` sets: what the hub
    libraries raise when it fails (offline, unreachable, gated, unknown repo, revision, config or split)
    becomes a `HubReadError`, one line saying how to download a copy and set `key` (and the environment
    variable the shipped config reads it from) to `local` (its `{dir}`). `download`: `download_command`'s
    repo_type, revision, files."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        yield
    except (OSError, ValueError, EntryNotFoundError) as error:
        raise HubReadError(value, key, _reason(error), local, download) from None


def _reason(error: BaseException) -> str:
    """Why a hub read failed, in a few words: offline or unreachable, else the error's first line."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(e, (ConnectionError, LocalEntryNotFoundError)) for e in chain):
        offline = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "").upper() in TRUE]
        if offline:
            return f"offline ({offline[0]}={os.environ[offline[0]]}) and no copy is cached here"
        return f"the hub ({constants.ENDPOINT}) is unreachable and no copy is cached here"
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0].rstrip('.')}" if first else type(error).__name__


def download_command(
    value: str,
    local_dir: str = "DIR",
    repo_type: str = "model",
    revision: str | None = None,
    files: str | list[str] | None = None,
) -> str:
    """The `hf download` command that copies hub repo `value` (only `files`, when given) to `local_dir`."""
    parts = ["hf download", value.removeprefix(SUITE_HUB_SCHEME)]
    parts += [files] if isinstance(files, str) else list(files or [])
    if repo_type != "model":
        parts.append(f"--repo-type {repo_type}")
    if revision:
        parts.append(f"--revision {revision}")
    return " ".join([*parts, f"--local-dir {local_dir}"])


@functools.cache
def _shipped_env_defaults() -> tuple[tuple[str, str], ...]:
    """(variable, default) of every `${oc.env:VARIABLE,default}` in the shipped config."""
    from meds1.config.schema import CONF_DIR

    return tuple(
        (variable, default.strip().strip("'\""))
        for path in sorted(CONF_DIR.rglob("*.yaml"))
        for variable, default in ENV_DEFAULT.findall(path.read_text())
    )


def shipped_env_variable(value: str) -> tuple[str | None, str]:
    """(the environment variable the shipped config reads `value` from, its default): `value` is that
    default, or a path under it (MEDS1_M1_DATA's hf://ReasoningEval/Benchmark_Lancet); else (None, "")."""
    for variable, default in _shipped_env_defaults():
        if default not in ("", "null") and (value == default or value.startswith(default.rstrip("/") + "/")):
            return variable, default.rstrip("/")
    return None, ""


def load_hub_dataset(
    name: str, config: str | None, split: str, revision: str | None, data_files, pin_key: str
):
    """(the split as a `datasets.Dataset`, the hub commit it was read at; None for a local folder).
    An unpinned hub dataset is read, with a warning naming the commit and `pin_key` to pin it."""
    from datasets import load_dataset_builder

    extra = {"data_files": data_files} if data_files else {}
    builder = load_dataset_builder(name, config, revision=revision, **extra)
    builder.download_and_prepare()
    dataset = builder.as_dataset(split=split)
    commit = None if Path(name).exists() else builder.hash
    if revision is None and commit:
        log.warning(
            "%s is not pinned and may change under you; read commit %s (pin it: %s)", name, commit, pin_key
        )
    return dataset, commit


PACKAGE_SCHEME = "pkg://"


def resolve_data_path(path: str) -> Path:
    """A data file path; `pkg://meds1/data/x.json` names a file shipped inside an installed package."""
    if path.startswith(PACKAGE_SCHEME):
        from importlib.resources import files

        package, _, relative = path[len(PACKAGE_SCHEME) :].partition("/")
        return Path(str(files(package).joinpath(relative)))
    return Path(path).expanduser()
