"""predictions.jsonl: one JSON line per (question id, run, option order: eval.shuffle_options), appended
the moment an answer is ready.

A crash or preemption can cut the last line short; reading drops it (and truncates the file to the
last complete line, so later appends start on a fresh line). A question answered more than once
(a retried failure) keeps its last line. When the eval finishes, the file is rewritten compactly in
suite order.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

Key = tuple[str, int, int]  # (question id, run, permutation: 0 is the suite's order, eval.shuffle_options)


def key(row: dict, run: int | None = None) -> Key:
    """The key of a prediction line, or (with `run`) of the answer to a suite row in that run."""
    return str(row["id"]), int(row.get("run", 0) if run is None else run), int(row.get("permutation") or 0)


def read_predictions(file: Path) -> dict[Key, dict]:
    """Complete prediction lines by (id, run); a torn last line is cut off the file."""
    if not file.exists():
        return {}
    data = file.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("eval: dropping a predictions line cut off by an interruption in %s", file)
        with file.open("r+b") as f:
            f.truncate(end)
    rows: dict[Key, dict] = {}
    for line in data[:end].decode(errors="replace").splitlines():
        try:
            row = json.loads(line)
            rows[key(row)] = row
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("eval: ignoring an unreadable predictions line in %s", file)
    return rows


class PredictionWriter:
    """Appends prediction lines, flushed one by one so an interruption loses at most the line in flight."""

    def __init__(self, file: Path):
        self.file = open(file, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_predictions(file: Path, rows: list[dict]) -> None:
    """Replace `file` with `rows` atomically (a temp file renamed over it)."""
    tmp = file.with_name(f".{file.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
