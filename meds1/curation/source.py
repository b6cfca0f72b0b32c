"""Load curation rows from a local file or folder, or a hub dataset, onto the canonical columns.

Order: read -> `templates` and `first_of` build columns from the source's -> `columns` renames ->
`unwrap` takes one-element lists apart. Rows that mapping cannot fill are dropped and counted
(`attrs[DROPPED_ROWS]`, in curate's stats)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from meds1.config.schema import SourceConfig, TokenLimit
from meds1.curation import REQUIRED_COLUMNS
from meds1.errors import UserError
from meds1.hub import load_hub_dataset, reading, resolve_data_path

log = logging.getLogger(__name__)

MALFORMED_LINES = "malformed_lines"  # frame.attrs key: the jsonl line numbers skipped
DROPPED_ROWS = "dropped_rows"  # frame.attrs key: {reason: rows} the source's own mapping dropped
COMMIT = "commit"  # frame.attrs key: the hub commit a hub source was read at (None for a file)


def read_jsonl(file: Path, skip_malformed: bool) -> pd.DataFrame:
    """One row per line holding a JSON object (blank lines ignored). A malformed line is an error naming
    it (file:line), or with `skip_malformed` is skipped and its number kept in `attrs[MALFORMED_LINES]`."""
    records, malformed = [], []
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = (
                    None if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
                )
            except json.JSONDecodeError as exc:
                problem = f"{exc.msg} at column {exc.colno}"
            if problem is None:
                records.append(record)
            elif skip_malformed:
                malformed.append(number)
            else:
                raise UserError(
                    f"{file}:{number}: malformed line ({problem}); fix it, or skip such lines with "
                    "curation.source.skip_malformed=true"
                )
    if malformed:
        log.warning("Skipped %d malformed line(s) of %s: %s", len(malformed), file, malformed[:20])
    frame = pd.DataFrame.from_records(records)
    frame.attrs[MALFORMED_LINES] = malformed
    return frame


READERS = {".parquet": pd.read_parquet, ".jsonl": read_jsonl, ".json": pd.read_json}


def load_source(source: SourceConfig) -> pd.DataFrame:
    """Rows with at least Question, Complex_CoT, Response (extra columns kept) and a `row_id`.

    `frame.attrs[MALFORMED_LINES]`: the line numbers a jsonl source skipped (`skip_malformed`), else []."""
    commit = None
    if source.path:
        frame = _read_file(source.path, source.skip_malformed)
        origin = source.path
    elif source.name:
        frame, commit = _read_hub(source)
        origin = f"{source.name}:{source.data_files or source.config}:{source.split}@{source.revision}"
    else:
        raise UserError("curation.source needs a `path` (local file) or a `name` (hub dataset)")
    malformed = frame.attrs.get(MALFORMED_LINES, [])
    if frame.empty:
        skipped = f" (skipped malformed lines {malformed})" if malformed else ""
        raise UserError(f"source {origin} has no rows{skipped}")
    frame, dropped = derive_columns(frame, source, origin)
    frame = frame.rename(columns=dict(source.columns))
    frame, unwrapped = unwrap_lists(frame, source.unwrap, origin)
    dropped.update(unwrapped)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"source {origin} lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns))}. "
            f"Map them with curation.source.columns (now {dict(source.columns)}), "
            "e.g. 'curation.source.columns={question: Question}'"
        )
    if source.token_limit.max_tokens is not None:
        frame, over = drop_long_rows(frame, source.token_limit)
        dropped.update(over)
    frame = frame.reset_index(drop=True).rename(columns={"row_id": "source_row_id"})
    frame.insert(0, "row_id", range(len(frame)))
    frame.attrs[MALFORMED_LINES] = malformed
    frame.attrs[DROPPED_ROWS] = dropped
    frame.attrs[COMMIT] = commit
    if dropped:
        log.warning("Dropped source rows of %s: %s", origin, dropped)
    log.info("Loaded %d rows from %s", len(frame), origin)
    return frame


def _require(frame: pd.DataFrame, needed: list[str], key: str, origin: str) -> None:
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise UserError(
            f"{key} names column(s) {', '.join(absent)} that source {origin} lacks; "
            f"it has {', '.join(map(str, frame.columns))}"
        )


def derive_columns(frame: pd.DataFrame, source: SourceConfig, origin: str) -> tuple[pd.DataFrame, dict]:
    """`source.templates` and `source.first_of` columns (med-s1's NEJM-CR mapping: Question = the case
    + "\nWhat is the diagnosis of the patient?", Response = the first diagnosis field that is set)."""
    import string

    dropped: dict[str, int] = {}
    frame = frame.copy()
    for column, template in source.templates.items():
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        _require(frame, fields, f"curation.source.templates.{column}", origin)
        frame[column] = [template.format(**row) for row in frame[fields].to_dict("records")]
    for column, candidates in source.first_of.items():
        _require(frame, list(candidates), f"curation.source.first_of.{column}", origin)
        first = frame[list(candidates)].bfill(axis=1).iloc[:, 0]
        if source.first_of_fallback is not None:
            frame[column] = first.fillna(source.first_of_fallback)
        else:
            frame[column] = first
            unset = first.isna()
            if unset.any():
                dropped[f"source/no_{column}"] = int(unset.sum())
                frame = frame[~unset]
    return frame, dropped


def drop_long_rows(frame: pd.DataFrame, limit: TokenLimit) -> tuple[pd.DataFrame, dict]:
    """The rows whose "Question Complex_CoT Response" has at most `limit.max_tokens` tokens of
    `limit.tokenizer`, counted as med-s1 counted them (curate_med_s1k_new.py load_base_dataset@d15c393:
    the tokenizer's default encoding, special tokens included)."""
    from transformers import AutoTokenizer

    with reading(limit.tokenizer, "curation.source.token_limit.tokenizer", revision=limit.revision):
        tokenizer = AutoTokenizer.from_pretrained(limit.tokenizer, revision=limit.revision)
    texts = (
        frame["Question"].astype(str)
        + " "
        + frame["Complex_CoT"].astype(str)
        + " "
        + frame["Response"].astype(str)
    ).tolist()
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    keep = pd.Series(lengths, index=frame.index) <= limit.max_tokens
    over = int((~keep).sum())
    log.info("token limit: %d of %d source rows over %d tokens", over, len(frame), limit.max_tokens)
    return frame[keep], {"source/over_max_tokens": over} if over else {}


def unwrap_lists(frame: pd.DataFrame, columns: list[str], origin: str) -> tuple[pd.DataFrame, dict]:
    """Replace one-element lists in `columns` by their element (s1's `thinking_trajectories`); a row
    holding a list of another length is dropped, counted under its reason."""
    dropped: dict[str, int] = {}
    _require(frame, list(columns), "curation.source.unwrap", origin)
    for column in columns:
        values = frame[column]
        listed = values.map(lambda v: not isinstance(v, str) and hasattr(v, "__len__"))
        bad = listed & values.map(lambda v: not isinstance(v, str) and hasattr(v, "__len__") and len(v) != 1)
        if bad.any():
            dropped[f"source/{column}_not_one_element"] = int(bad.sum())
            frame, values, listed = frame[~bad], values[~bad], listed[~bad]
        frame = frame.assign(**{column: values.where(~listed, values[listed].map(lambda v: v[0]))})
    return frame, dropped


def _read_file(path: str, skip_malformed: bool) -> pd.DataFrame:
    file = resolve_data_path(path)
    if not file.exists():
        raise UserError(f"curation.source.path {path} does not exist")
    if file.is_dir():  # a `datasets` save_to_disk folder (med-s1's NEJM-CR dataset)
        from datasets import load_from_disk

        try:
            return load_from_disk(str(file)).to_pandas()
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"could not read curation.source.path {path} as a saved dataset: {exc}") from None
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        raise UserError(f"unsupported source file type {file.suffix!r}; valid: {', '.join(READERS)}")
    if reader is read_jsonl:
        return read_jsonl(file, skip_malformed)
    try:
        return reader(file)
    except ValueError as exc:  # malformed JSON / parquet
        raise UserError(f"could not read curation.source.path {path}: {str(exc).splitlines()[0]}") from None


def _read_hub(source: SourceConfig) -> tuple[pd.DataFrame, str | None]:
    """(the hub dataset (or a local copy in its layout) at the pinned revision, the commit it was read at:
    meds1.hub; provenance records it)."""
    hub = {"repo_type": "dataset", "revision": source.revision, "files": source.data_files}
    with reading(source.name, "curation.source.name", **hub):
        dataset, commit = load_hub_dataset(
            source.name,
            source.config,
            source.split,
            source.revision,
            source.data_files,
            "curation.source.revision=<commit>",
        )
    return dataset.to_pandas(), commit


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the canonical columns, so caches know exactly which rows they describe."""
    hashed = pd.util.hash_pandas_object(frame[list(REQUIRED_COLUMNS)].astype("string"), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]
