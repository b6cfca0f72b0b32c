"""Load curation rows from a local file or a hub dataset onto the canonical columns."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from meds1.config import SourceConfig
from meds1.curation import REQUIRED_COLUMNS
from meds1.errors import UserError
from meds1.paths import resolve_data_path

log = logging.getLogger(__name__)

MALFORMED_LINES = "malformed_lines"  # frame.attrs key: the jsonl line numbers skipped


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
    if source.path:
        frame = _read_file(source.path, source.skip_malformed)
        origin = source.path
    elif source.name:
        frame = _read_hub(source)
        origin = f"{source.name}:{source.data_files or source.config}:{source.split}@{source.revision}"
    else:
        raise UserError("curation.source needs a `path` (local file) or a `name` (hub dataset)")
    malformed = frame.attrs.get(MALFORMED_LINES, [])
    if frame.empty:
        skipped = f" (skipped malformed lines {malformed})" if malformed else ""
        raise UserError(f"source {origin} has no rows{skipped}")
    frame = frame.rename(columns=dict(source.columns))
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"source {origin} lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns))}. "
            f"Map them with curation.source.columns (now {dict(source.columns)}), "
            "e.g. 'curation.source.columns={question: Question}'"
        )
    frame = frame.reset_index(drop=True).rename(columns={"row_id": "source_row_id"})
    frame.insert(0, "row_id", range(len(frame)))
    frame.attrs[MALFORMED_LINES] = malformed
    log.info("Loaded %d rows from %s", len(frame), origin)
    return frame


def _read_file(path: str, skip_malformed: bool) -> pd.DataFrame:
    file = resolve_data_path(path)
    if not file.exists():
        raise UserError(f"curation.source.path {path} does not exist")
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        raise UserError(f"unsupported source file type {file.suffix!r}; valid: {', '.join(READERS)}")
    if reader is read_jsonl:
        return read_jsonl(file, skip_malformed)
    try:
        return reader(file)
    except ValueError as exc:  # malformed JSON / parquet
        raise UserError(f"could not read curation.source.path {path}: {str(exc).splitlines()[0]}") from None


def _read_hub(source: SourceConfig) -> pd.DataFrame:
    """The hub dataset at the pinned revision (a commit sha: the hub's files change under a branch)."""
    from datasets import load_dataset

    if source.revision is None:
        log.warning("curation.source.revision is not pinned: %s may change under you", source.name)
    try:
        dataset = load_dataset(
            source.name,
            source.config,
            data_files=source.data_files,
            split=source.split,
            revision=source.revision,
        )
    except Exception as exc:  # network, auth, unknown name/config/split/revision: all say the same to a user
        raise UserError(
            f"could not load hub dataset {source.name} (config {source.config}, files {source.data_files}, "
            f"split {source.split}, revision {source.revision}): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. To run without the hub, save the rows to a "
            "parquet/json/jsonl file and set curation.source.path=FILE"
        ) from None
    return dataset.to_pandas()


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the canonical columns, so caches know exactly which rows they describe."""
    hashed = pd.util.hash_pandas_object(frame[list(REQUIRED_COLUMNS)].astype("string"), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]
