"""Benchmark: loading and normalising an m1-sized eval suite (~20k questions in 11 files of 4 shapes).

Measured: `load_suite` on 11 entries (reading, per-row normalisation through each entry's mapping, the
seeded shuffle of the column-shaped file, stable ids), best of 3. `baseline` is reading the same files
alone (json / jsonl parsing, pandas for the csv), in the same run: the ratio is ours / baseline.
Files: HuatuoGPT-o1's four real eval files in ../shared/data/eval (7,991 questions, read in place) and
seven built in a temporary folder from those real rows, in the shapes m1's and GPQA's files come in:
eval_data.json (GPQA medical), jsonl with dict options (Lancet, NEJM, MedBullets op4/op5), a `label`
answer with ten options (MedXpertQA), and a csv with the correct option in a column of its own (GPQA's
shape, shuffled). Run: python bench/bench_suites.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import unittest
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDS1_SHARED_DATA", REPO.parent / "shared" / "data"))
SIZES = {"GPQA_Medical_test": 390, "Lancet": 1500, "NEJM": 1500, "MedBullets_op4": 1500}
SIZES |= {"MedBullets_op5": 1500, "MedXpertQA": 2450, "GPQA_columns": 3200}
REPEATS = 3


def build(work: Path, real: list[dict]) -> list:
    """The seven constructed files and the suite entries for all eleven."""

    def rows(name: str) -> list[dict]:
        return [
            {**real[i % len(real)], "question": f"{real[i % len(real)]['question']} ({name} {i})"}
            for i in range(SIZES[name])
        ]

    def jsonl(name: str, items: list[dict]) -> str:
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in items))
        return str(path)

    (work / "GPQA_Medical_test.json").write_text(json.dumps({"GPQA_Medical_test": rows("GPQA_Medical_test")}))
    entries: list = [str(work / "GPQA_Medical_test.json")]
    entries += [jsonl(name, rows(name)) for name in ("Lancet", "NEJM", "MedBullets_op4", "MedBullets_op5")]
    ten = [
        {
            "id": f"Text-{i}",
            "question": row["question"],
            "options": {
                letter: f"{text} ({letter})"
                for letter, text in zip("ABCDEFGHIJ", [*row["options"].values()] * 3, strict=False)
            },
            "label": row["answer_idx"],
            "medical_task": "Diagnosis",
        }
        for i, row in enumerate(rows("MedXpertQA"))
    ]
    entries.append({"path": jsonl("MedXpertQA_test", ten), "name": "MedXpertQA", "answer": "label"})
    columns = [
        {"Question": row["question"], "Correct Answer": row["options"][row["answer_idx"]]}
        | {f"Incorrect Answer {n}": f"wrong {n} of {i}" for n in (1, 2, 3)}
        for i, row in enumerate(rows("GPQA_columns"))
    ]
    pd.DataFrame(columns).to_csv(work / "gpqa_diamond.csv", index=False)
    options = ["Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Correct Answer"]
    entries.append(
        {
            "path": str(work / "gpqa_diamond.csv"),
            "name": "gpqa-columns",
            "question": "Question",
            "options": options,
            "answer": "Correct Answer",
        }
    )
    return entries


def read_alone(files: list[Path]) -> int:
    """Parse every file, nothing more: the baseline."""
    count = 0
    for file in files:
        if file.suffix == ".csv":
            count += len(pd.read_csv(file))
        elif file.suffix == ".jsonl":
            count += sum(1 for line in file.read_text().splitlines() if json.loads(line))
        else:
            data = json.loads(file.read_text())
            count += sum(map(len, data.values())) if isinstance(data, dict) else len(data)
    return count


def best(function) -> tuple[float, object]:
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def run() -> list[dict]:
    from meds1.evaluation.data import load_suite

    real_files = sorted((SHARED_DATA / "eval").glob("*.json"))
    if not real_files:
        raise unittest.SkipTest(f"real data folder {SHARED_DATA} is absent (set MEDS1_SHARED_DATA)")
    real = [row for file in real_files for row in json.loads(file.read_text())]
    work = Path(tempfile.mkdtemp(prefix="bench_suites_"))
    try:
        entries = [*map(str, real_files), *build(work, real)]
        files = [Path(e if isinstance(e, str) else e["path"]) for e in entries]
        base_s, raw = best(lambda: read_alone(files))
        ours_s, (rows, skipped) = best(lambda: load_suite(entries))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert len(rows) == raw and not skipped, (len(rows), raw, skipped)
    return [
        {
            "figure": f"eval suite loading, {len(rows):,} questions in {len(files)} files (baseline: parse)",
            "ours": round(ours_s, 3),
            "baseline": round(base_s, 3),
            "ratio": round(ours_s / base_s, 2),
            "target": "<= 2 s",
            "unit": "s",
            "note": f"{len({r['source'] for r in rows})} sources, best of {REPEATS}",
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
