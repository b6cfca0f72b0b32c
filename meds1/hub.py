"""A dataset read from the Hugging Face hub (or a local folder in a hub repo's layout), and the commit
it was read at: what `datasets` resolved the revision to (the main branch when unpinned), so that a run
says which data it used even where nobody pinned one."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


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
