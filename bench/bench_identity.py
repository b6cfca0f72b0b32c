"""Benchmark: what identity by content adds to a stage that is skipped, on a 25k-row source and an
8.4k-question suite.

A stage's identity (meds1.store.identity.StageIdentity) covers the content of the files it reads; an eval
of a trained model reads the most: the curation source, the decontamination suite and the eval suite.
Measured, best of 5, for the eval's identity:
- `warm`: a new process whose digests are on disk (`<cache>/digests/`, the case of every skipped stage):
  ours is the whole identity (config view, slug, file digests, hash); baseline the same without the
  files (slug and the hash of the config's values alone, as meds1 took it before), in the same run; the
  figure is the time added;
- `cold`: the first run after every file changed (nothing remembered): ours reads and hashes every byte;
  baseline is reading the same bytes alone (the I/O floor).
Data: the real rows of ../shared/data (198 SFT rows repeated to 25,000, ~105 MB of jsonl; HuatuoGPT-o1's
four eval files, 7,991 questions, read in place, and 390 more built like GPQA medical's), in a temporary
folder. Run: python bench/bench_identity.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDS1_SHARED_DATA", REPO.parent / "shared" / "data"))
SOURCE_ROWS = 25_000
GPQA_QUESTIONS = 390
REPEATS = 5


def build(work: Path) -> tuple[Path, list[str]]:
    """The 25k-row source and the five suite files."""
    sft = json.loads((SHARED_DATA / "sft" / "huatuogpt-o1_demo_data.json").read_text())
    source = work / "rows.jsonl"
    with source.open("w") as out:
        for i in range(SOURCE_ROWS):
            row = sft[i % len(sft)]
            out.write(json.dumps({**row, "Question": f"{row['Question']} ({i})"}) + "\n")
    suite = [str(path) for path in sorted((SHARED_DATA / "eval").glob("*.json"))]
    real = json.loads(Path(suite[0]).read_text())
    gpqa = [{**real[i], "question": f"{real[i]['question']} (GPQA {i})"} for i in range(GPQA_QUESTIONS)]
    (work / "GPQA_Medical_test.json").write_text(json.dumps({"GPQA_Medical_test": gpqa}))
    return source, [*suite, str(work / "GPQA_Medical_test.json")]


def config_only(cfg, stage: str) -> str:
    """The slug and the hash of the config's values alone: what a skipped stage computed before."""
    from meds1.store.identity import identity_keys, result_view, stage_slug

    stage_slug(cfg, stage)
    view = {key: result_view(getattr(cfg, key)) for key in sorted(identity_keys(cfg.stages, stage))}
    return hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()


def best(function, before=lambda: None) -> float:
    times = []
    for _ in range(REPEATS):
        before()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> list[dict]:
    from meds1.config.compose import compose
    from meds1.store import content
    from meds1.store.identity import StageIdentity

    if not (SHARED_DATA / "eval").is_dir():
        raise unittest.SkipTest(f"real data folder {SHARED_DATA} is absent (set MEDS1_SHARED_DATA)")
    work = Path(tempfile.mkdtemp(prefix="bench_identity_"))
    try:
        source, suite = build(work)
        listed = ",".join(suite)
        cfg = compose(
            [
                "experiment=demo",
                f"curation.source.path={source}",
                f"eval.suite=[{listed}]",
                f"curation.decontamination.suite=[{listed}]",
                f"paths.root={work / 'out'}",
            ]
        )
        files = [source, *map(Path, suite)]
        size = sum(f.stat().st_size for f in files)
        identity = StageIdentity(cfg, "eval")
        assert len(identity.inputs) == 1 + 2 * len(suite), identity.inputs

        def forget() -> None:
            content._remembered.clear()

        def forget_all() -> None:
            forget()
            shutil.rmtree(Path(cfg.paths.cache) / "digests", ignore_errors=True)

        baseline_s = best(lambda: config_only(cfg, "eval"), forget)
        warm_s = best(lambda: StageIdentity(cfg, "eval"), forget)
        cold_s = best(lambda: StageIdentity(cfg, "eval"), forget_all)
        read_s = best(lambda: [f.read_bytes() for f in files])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    what = f"{SOURCE_ROWS:,}-row source ({size / 1e6:.0f} MB with the suites) + 8,381-question suite"
    return [
        {
            "figure": f"skipped eval, identity by content, time added ({what}; baseline: config-only hash)",
            "ours": round(warm_s - baseline_s, 4),
            "baseline": round(baseline_s, 4),
            "ratio": round(warm_s / baseline_s, 2),
            "target": "<= 0.1 s",
            "unit": "s",
            "note": f"digests on disk (a new process), {len(identity.inputs)} files, best of {REPEATS}",
        },
        {
            "figure": f"first run after every file changed, identity by content ({what}; baseline: read)",
            "ours": round(cold_s, 3),
            "baseline": round(read_s, 3),
            "ratio": round(cold_s / read_s, 2),
            "target": "<= 1 s",
            "unit": "s",
            "note": f"every byte read and hashed (SHA-256), best of {REPEATS}",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
