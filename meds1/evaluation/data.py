"""Load multiple-choice eval suites in HuatuoGPT-o1's eval_data.json shape.

Accepted files: one object `{source: [rows]}`, a flat list of rows (each with `source`, else the
file's stem is the source), or jsonl of such rows. A row needs `question`, `options` (letter ->
text) and `answer_idx`; rows without them are skipped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

from meds1.errors import UserError
from meds1.paths import resolve_data_path

log = logging.getLogger(__name__)


def question_id(source: str, question: str, options: dict[str, str]) -> str:
    """A stable id (not Python's salted hash) of a question's content."""
    text = json.dumps([source, question, sorted(options.items())], ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _read_rows(file: Path) -> list[dict]:
    if file.suffix == ".jsonl":
        return [
            {"source": file.stem, **json.loads(line)}
            for line in file.read_text().splitlines()
            if line.strip()
        ]
    data = json.loads(file.read_text())
    if isinstance(data, dict):
        return [{**row, "source": source} for source, rows in data.items() for row in rows]
    if isinstance(data, list):
        return [{"source": file.stem, **row} for row in data]
    raise UserError(f"eval file {file} holds neither an object {{source: [rows]}} nor a list of rows")


def _problem(row: dict) -> str | None:
    options = row.get("options")
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return "missing_question"
    if not isinstance(options, dict) or len(options) < 2:
        return "missing_options"
    if row.get("answer_idx") not in options:
        return "missing_answer"
    return None


def load_suite(files: list[str], max_per_source: int | None = None) -> tuple[list[dict], dict[str, int]]:
    """(rows with `id` and `source`, counts of skipped rows by reason)."""
    rows: list[dict] = []
    skipped: Counter = Counter()
    for name in files:
        file = resolve_data_path(name)
        if not file.exists():
            raise UserError(f"eval file {name} does not exist (eval.suite)")
        for row in _read_rows(file):
            problem = _problem(row)
            if problem:
                skipped[problem] += 1
            else:
                row["options"] = {str(k): str(v) for k, v in row["options"].items()}
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
    return rows, dict(skipped)


def _first_per_source(rows: list[dict], limit: int) -> list[dict]:
    taken: Counter = Counter()
    kept = []
    for row in rows:
        if taken[row["source"]] < limit:
            taken[row["source"]] += 1
            kept.append(row)
    return kept
