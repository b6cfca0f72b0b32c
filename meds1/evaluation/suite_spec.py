"""One entry of an eval suite (`eval.suite`, `curation.decontamination.suite`): `SuiteSpec`, and how a
path, an hf:// URI or a mapping becomes one (`suite_specs`).

Cheap to import (no heavy libraries): the config rules parse every entry at compose, the suite loader
(meds1/evaluation/data.py) at run time, with the same messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from meds1.config.schema import AnswerFormat

SUITE_HUB_SCHEME = "hf://"
SUITE_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")  # the files a suite folder's entry reads


@dataclass
class SuiteSpec:
    """One benchmark of `eval.suite` and where its fields are (meds1/evaluation/data.py reads it).

    An entry is a path / hub URI string (HuatuoGPT's eval_data.json shape) or a mapping with these keys.
    Hydra cannot type a union of a string and a mapping, so `eval.suite` is `list[Any]` and
    `suite_specs` turns each entry into a SuiteSpec (the rules run it at compose, so a bad key fails there).
    """

    path: str  # a file, a directory, pkg://meds1/..., or hf://OWNER/NAME (a hub dataset)
    name: str | None = None  # the source name of every row; default: the row's `source`, else the file stem
    question: str = "question"
    options: str | list[str] = "options"  # a column of {letter: text} / [texts], or columns A, B, ...
    answer: str = "answer_idx"
    # letter | index0 | index1 | text (the option's text, whitespace-normalized); null: a letter, or an
    # integer taken as a 0-based index (eval_data.json). An `answer` that is one of the option columns
    # marks the correct option itself (GPQA's `Correct Answer`).
    answer_format: AnswerFormat | None = None
    shuffle: bool | None = None  # shuffle each question's options; null: when `answer` is an option column
    seed: int = 0  # the shuffle's seed: the same seed gives the same option order in any process
    keep: list[str] | None = None  # columns carried into predictions (null: all; a mapping: none)
    split: str = "test"  # hub: the split
    config: str | None = None  # hub: the config name
    revision: str | None = None  # hub: pin a commit sha (hub datasets change under their branches)
    data_files: str | list[str] | None = None  # the file(s) to read inside `path` (a hub repo or a directory)


HUB_PARAMETERS = {"split": "split", "config": "config", "revision": "revision", "source": "name"}
SUITE_KEYS = tuple(f.name for f in dataclasses.fields(SuiteSpec))


def suite_specs(entries: list, key: str = "eval.suite") -> list[SuiteSpec]:
    """Each suite entry (a path / hf:// URI string, a mapping, or a SuiteSpec) as a SuiteSpec; a bad
    entry raises ValueError naming `key[index]`, the bad key or value, and what is valid."""
    return [_suite_spec(entry, f"{key}[{index}]") for index, entry in enumerate(entries)]


def _suite_spec(entry, where: str) -> SuiteSpec:
    if isinstance(entry, SuiteSpec):
        return entry
    if isinstance(entry, str):
        return _string_spec(entry, where)
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a path, an hf:// URI or a mapping {{path: ..., answer: ...}}")
    unknown = sorted(set(entry) - set(SUITE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(SUITE_KEYS)}")
    if not isinstance(entry.get("path"), str) or not entry["path"].strip():
        raise ValueError(f"{where}: a mapping needs `path` (a file, directory or hf://OWNER/NAME)")
    fields, path = {"keep": [], **entry}, entry["path"]
    if path.startswith(SUITE_HUB_SCHEME):  # the URI's parameters, unless the mapping sets them itself
        fields = {**_hub_query(path, where), **fields, "path": path.split("?")[0]}
    spec = SuiteSpec(**fields)
    _check_spec(spec, where)
    return spec


def _string_spec(entry: str, where: str) -> SuiteSpec:
    if not entry.startswith(SUITE_HUB_SCHEME):
        return SuiteSpec(path=entry)
    return SuiteSpec(path=entry.split("?")[0], **_hub_query(entry, where))


def _hub_query(entry: str, where: str) -> dict:
    parts = urlsplit(entry)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(HUB_PARAMETERS))
    if not (parts.netloc + parts.path).strip() or unknown:
        raise ValueError(
            f"{where}: {entry!r}: expected hf://OWNER/NAME?split=..., with parameters "
            f"{', '.join(HUB_PARAMETERS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return {HUB_PARAMETERS[name]: value for name, value in query.items()}


def _check_spec(spec: SuiteSpec, where: str) -> None:
    def names(value) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def name_list(value) -> bool:
        return isinstance(value, list) and bool(value) and all(map(names, value))

    checks = [
        ("question", names(spec.question), "a column name"),
        (
            "options",
            names(spec.options) or name_list(spec.options),
            "a column name or a list of column names",
        ),
        ("answer", names(spec.answer), "a column name"),
        ("name", spec.name is None or names(spec.name), "a source name"),
        ("answer_format", spec.answer_format is None or spec.answer_format in set(AnswerFormat), ""),
        ("shuffle", spec.shuffle in (None, True, False), "true, false or null"),
        ("seed", isinstance(spec.seed, int) and not isinstance(spec.seed, bool), "an integer"),
        ("split", names(spec.split), "a split name"),
        ("config", spec.config is None or names(spec.config), "a config name"),
        ("revision", spec.revision is None or names(spec.revision), "a commit sha, tag or branch"),
        (
            "data_files",
            spec.data_files is None or names(spec.data_files) or name_list(spec.data_files),
            "a file name or a list of them",
        ),
        ("keep", spec.keep is None or (isinstance(spec.keep, list) and all(map(names, spec.keep))), "a list"),
    ]
    for field, ok, valid in checks:
        if not ok:
            valid = valid or ", ".join(AnswerFormat)
            raise ValueError(f"{where}.{field}={getattr(spec, field)!r}: must be {valid}")
    if spec.shuffle is False and isinstance(spec.options, list) and spec.answer in spec.options:
        raise ValueError(
            f"{where}: answer {spec.answer!r} is an option column, so unshuffled options would always put "
            "the correct one in the same place; drop shuffle: false"
        )
