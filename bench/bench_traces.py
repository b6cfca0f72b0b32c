"""Benchmark: rewriting 1,000 selected traces as steps through an endpoint that takes 0.2 s per request.

Measured: `meds1.curation.traces.chain.transform_traces` with `curation.trace.transforms=[step]` over 1,000
rows (the demo rows' real traces, each made distinct by a marker), through the `openai` backend to a
real local HTTP server (tests/canned_llm.py) that answers every request after 0.2 s, with
`max_concurrency=64`: the ideal is 1,000 x 0.2 / 64 = 3.1 s. `baseline`: the same rows, one request at
a time (`max_concurrency=1`), in the same run. The server runs in its own process; the note gives this
process's CPU time (compose included) and the machine's load average, since on a loaded machine the
client's CPU per request is what bounds the rate (the `openai` SDK's stack cost ~5 ms per request and
gave 2.3x the ideal; meds1's aiohttp client ~0.7 ms). The chain's pre-flight (its first request, alone)
adds one 0.2 s round trip and the HTTP client's import. Also: the rerun, which finds every rewrite
cached and sends nothing. Run: python bench/bench_traces.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
ROWS, DELAY_S, CONCURRENCY = 1_000, 0.2, 64


def rows() -> pd.DataFrame:
    demo = pd.read_json(REPO / "meds1/data/demo_sft.jsonl", lines=True).dropna()
    picks = demo.iloc[[i % len(demo) for i in range(ROWS)]].reset_index(drop=True)
    picks["Complex_CoT"] = [f"{cot} (case {i})" for i, cot in enumerate(picks["Complex_CoT"])]
    picks.insert(0, "row_id", range(ROWS))
    return picks


def timed(frame: pd.DataFrame, base_url: str, concurrency: int, cache: Path) -> tuple[float, dict]:
    from meds1.config.compose import compose
    from meds1.curation.traces.chain import transform_traces

    cfg = compose(
        [
            "experiment=random-1k",
            "curation.trace.transforms=[step]",
            f"curation.trace.llm.inference.base_url={base_url}",
            "curation.trace.llm.inference.api_key=unused",
            f"curation.trace.llm.inference.max_concurrency={concurrency}",
            f"paths.root={cache.parent / 'out'}",
            f"paths.cache={cache}",
        ]
    )
    start = time.perf_counter()
    result = transform_traces(frame, cfg)
    seconds = time.perf_counter() - start
    assert (result.records["trace_status"] == "ok").all()
    return seconds, result.stats["requests"]


def serve() -> tuple[subprocess.Popen, str]:
    """The canned server in a process of its own (in this one it would share the client's GIL)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.canned_llm", str(DELAY_S)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    return server, server.stdout.readline().strip()


def run() -> list[dict]:
    sys.path.insert(0, str(REPO))  # this checkout's meds1, whatever the environment has installed
    frame = rows()
    work = Path(tempfile.mkdtemp(prefix="bench-traces-"))
    server, base_url = serve()
    try:
        load = os.getloadavg()[0]
        cpu = time.process_time()
        ours_s, ours_requests = timed(frame, base_url, CONCURRENCY, work / "cache")
        ours_cpu = time.process_time() - cpu
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as stats:
            peak = json.load(stats)["max_in_flight"]
        rerun_s, rerun_requests = timed(frame, base_url, CONCURRENCY, work / "cache")
        base_s, _ = timed(frame, base_url, 1, work / "cache-serial")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    ideal = ROWS * DELAY_S / CONCURRENCY
    figure = f"trace transform [step], {ROWS:,} rows, endpoint 0.2 s/request"
    return [
        {
            "figure": f"{figure}, max_concurrency={CONCURRENCY} (baseline: 1 at a time)",
            "ours": round(ours_s, 2),
            "baseline": round(base_s, 2),
            "ratio": round(ours_s / base_s, 4),
            "target": f"<= {1.5 * ideal:.2f} s",
            "unit": "s",
            "note": f"ideal {ideal:.2f} s; ours/ideal {ours_s / ideal:.2f}; at most {peak} in flight; "
            f"{ours_requests['sent']} sent; client CPU {ours_cpu:.1f} s; load average {load:.1f}",
        },
        {
            "figure": f"{figure}: the rerun (every rewrite cached)",
            "ours": round(rerun_s, 2),
            "baseline": round(ours_s, 2),
            "ratio": round(rerun_s / ours_s, 3),
            "target": "<= 2 s",
            "unit": "s",
            "note": f"{rerun_requests['sent']} requests sent, {rerun_requests['reused']} reused",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
