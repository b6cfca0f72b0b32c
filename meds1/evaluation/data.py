"""Load multiple-choice eval suites in HuatuoGPT-o1's eval_data.json shape.

A suite is a list of entries (`eval.suite`), each one of:

- a file: one object `{source: [rows]}`, a flat list of rows (each with `source`, else the file's
  stem is the source), or jsonl of such rows; `pkg://meds1/...` names a file shipped in the package;
- a directory: every `*.json` / `*.jsonl` file in it, in name order;
- a hub dataset: `hf://OWNER/NAME?split=test&config=...&revision=...&source=...` (`source` names
  rows without their own `source` column; default: NAME_SPLIT). Loaded with `datasets`.

A row needs `question`, `options` (letter -> text, or a list of texts for A, B, ...; options may
run A..J) and `answer_idx` (a letter, or a 0-based index). Rows missing any of them are skipped and
counted by reason, never fatal. Every row gets a stable `id`: a hash of its source, question and
options (not Python's salted `hash`); a duplicated question gets `-1`, `-2`, ... after the first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from meds1.errors import UserError
from meds1.paths import resolve_data_path

log = logging.getLogger(__name__)

HUB_SCHEME = "hf://"
HUB_PARAMETERS = ("split", "config", "revision", "source")
LETTERS = string.ascii_uppercase


def question_id(source: str, question: str, options: dict[str, str]) -> str:
    """A stable id (not Python's salted hash) of a question's content."""
    text = json.dumps([source, question, sorted(options.items())], ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _read_file(file: Path) -> list[dict]:
    if file.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"eval file {file}: line {number} is not JSON") from None
            rows.append({"source": file.stem, **row} if isinstance(row, dict) else row)
        return rows
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"eval file {file} is not valid JSON ({error.msg}, line {error.lineno})") from None
    if isinstance(data, dict):
        return [
            {**row, "source": source} if isinstance(row, dict) else row
            for source, rows in data.items()
            for row in (rows if isinstance(rows, list) else [rows])
        ]
    if isinstance(data, list):
        return [{"source": file.stem, **row} if isinstance(row, dict) else row for row in data]
    raise UserError(f"eval file {file} holds neither an object {{source: [rows]}} nor a list of rows")


def _read_hub(entry: str) -> list[dict]:
    """Rows of a hub dataset named `hf://OWNER/NAME?split=...` (see the module doc)."""
    parts = urlsplit(entry)
    name = (parts.netloc + parts.path).strip()
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(HUB_PARAMETERS))
    if not name or unknown:
        raise UserError(
            f"eval suite entry {entry!r}: expected hf://OWNER/NAME?split=..., with parameters "
            f"{', '.join(HUB_PARAMETERS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    from datasets import load_dataset

    split = query.get("split", "test")
    dataset = load_dataset(name, query.get("config"), split=split, revision=query.get("revision"))
    source = query.get("source") or f"{name.rstrip('/').split('/')[-1]}_{split}"
    return [{"source": source, **row} for row in dataset.to_list()]


def read_entry(entry: str) -> list[dict]:
    """The raw rows of one suite entry (file, directory or hub dataset)."""
    if entry.startswith(HUB_SCHEME):
        return _read_hub(entry)
    path = resolve_data_path(entry)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        if not files:
            raise UserError(f"eval suite directory {path} holds no .json or .jsonl files")
        return [row for file in files for row in _read_file(file)]
    if not path.is_file():
        raise UserError(
            f"eval file {entry} does not exist (eval.suite; the default suite reads $MEDS1_EVAL_DATA)"
        )
    return _read_file(path)


def normalize(row: object) -> tuple[dict | None, str | None]:
    """(the row with `options` as {letter: text} and `answer_idx` as a letter, None) or (None, reason)."""
    if not isinstance(row, dict):
        return None, "not_an_object"
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return None, "missing_question"
    options = row.get("options")
    if isinstance(options, list):
        options = dict(zip(LETTERS, options, strict=False))
    if not isinstance(options, dict):
        return None, "missing_options"
    options = {str(k).strip().upper(): str(v) for k, v in options.items() if v is not None and str(v).strip()}
    if len(options) < 2:
        return None, "missing_options"
    if any(len(letter) != 1 or letter not in LETTERS for letter in options):
        return None, "option_keys_not_letters"
    answer = row.get("answer_idx")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(LETTERS):
        answer = LETTERS[answer]
    answer = str(answer).strip().upper() if answer is not None else None
    if answer not in options:
        return None, "missing_answer"
    return {
        **row,
        "source": str(row.get("source") or "unknown"),
        "options": options,
        "answer_idx": answer,
    }, None


def load_suite(entries: list[str], max_per_source: int | None = None) -> tuple[list[dict], dict[str, int]]:
    """(rows with `id` and `source`, counts of skipped rows by reason)."""
    if not entries:
        raise UserError("eval.suite is empty: name at least one eval file, directory or hf:// dataset")
    rows: list[dict] = []
    skipped: Counter = Counter()
    for entry in entries:
        for raw in read_entry(entry):
            row, problem = normalize(raw)
            if problem:
                skipped[problem] += 1
            else:
                rows.append(row)
    if max_per_source is not None:
        rows = _first_per_source(rows, max_per_source)
    seen: Counter = Counter()
    for row in rows:
        base = question_id(row["source"], row["question"], row["options"])
        row["id"] = base if not seen[base] else f"{base}-{seen[base]}"
        seen[base] += 1
    if skipped:
        log.warning("eval: skipped %d malformed rows: %s", sum(skipped.values()), dict(skipped))
    if not rows:
        raise UserError(f"eval.suite {entries} holds no usable questions (skipped: {dict(skipped)})")
    return rows, dict(skipped)


def _first_per_source(rows: list[dict], limit: int) -> list[dict]:
    taken: Counter = Counter()
    kept = []
    for row in rows:
        if taken[row["source"]] < limit:
            taken[row["source"]] += 1
            kept.append(row)
    return kept
