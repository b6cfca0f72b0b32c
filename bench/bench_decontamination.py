"""Benchmark: decontamination of 25k training questions against 8.4k eval questions.

Measured: `nearest_eval_questions` with the default `tfidf` method (fit, sparse products, nearest
eval question per row), the suite read from disk included. `baseline` is the `ngram` method (s1's
word 8-gram overlap) on the same rows, a reference cost: the ratio is ours / baseline.
Eval side: the real eval files in ../shared/data/eval (7,991 questions), repeated with a marker word
up to 8,400 (the size of HuatuoGPT-o1's full suite with GPQA). Training side: the 198 real SFT
questions there, repeated to 25,000 with a distinct marker word each, so every row is a distinct text
of real length and wording. Run: python bench/bench_decontamination.py
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

ROWS = 25_000
EVAL_QUESTIONS = 8_400
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDS1_SHARED_DATA", REPO.parent / "shared" / "data"))


def inputs(work: Path) -> tuple[pd.DataFrame, Path]:
    """The training rows and an eval file of EVAL_QUESTIONS questions."""
    sft_file = SHARED_DATA / "sft" / "huatuogpt-o1_demo_data.json"
    eval_files = sorted((SHARED_DATA / "eval").glob("*.json"))
    if not sft_file.exists() or not eval_files:
        raise unittest.SkipTest(f"real data folder {SHARED_DATA} is absent (set MEDS1_SHARED_DATA)")
    questions = [row["Question"] for row in json.loads(sft_file.read_text())]
    rows = pd.DataFrame({"Question": [f"{questions[i % len(questions)]} case{i}" for i in range(ROWS)]})
    real = [row for file in eval_files for row in json.loads(file.read_text())]
    suite = [
        {**row, "question": row["question"] + (f" copy{i}" if i >= len(real) else "")}
        for i, row in enumerate(real[i % len(real)] for i in range(EVAL_QUESTIONS))
    ]
    suite_file = work / "suite.json"
    suite_file.write_text(json.dumps({"Suite": suite}))
    return rows, suite_file


def timed(rows: pd.DataFrame, config) -> tuple[float, float, int]:
    from meds1.curation.decontamination import nearest_eval_questions

    start, cpu = time.perf_counter(), time.process_time()
    _, mask = nearest_eval_questions(rows, config)
    return time.perf_counter() - start, time.process_time() - cpu, int(mask.sum())


def run() -> list[dict]:
    from meds1.config.schema import DecontaminationConfig, DecontaminationMethod

    work = Path(tempfile.mkdtemp(prefix="bench-decontamination-"))
    try:
        rows, suite = inputs(work)
        ours_s, ours_cpu, removed = timed(rows, DecontaminationConfig(suite=[str(suite)]))
        base_s, base_cpu, _ = timed(
            rows, DecontaminationConfig(suite=[str(suite)], method=DecontaminationMethod.ngram)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figure = f"decontamination, {ROWS:,} rows x {EVAL_QUESTIONS:,} eval questions, tfidf (baseline: 8-gram)"
    return [
        {
            "figure": f"{figure}: wall time",
            "ours": round(ours_s, 2),
            "baseline": round(base_s, 2),
            "ratio": round(ours_s / base_s, 2),
            "target": "<= 60 s",
            "unit": "s",
            "note": f"{removed:,} rows removed",
        },
        {
            "figure": f"{figure}: process CPU time",
            "ours": round(ours_cpu, 2),
            "baseline": round(base_cpu, 2),
            "ratio": round(ours_cpu / base_cpu, 2),
            "target": "<= 60 s",
            "unit": "s",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
