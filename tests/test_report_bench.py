"""The benchmark runner (bench/run.py) on small benchmarks: good, failing, skipped, malformed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

RUNNER = REPO / "bench" / "run.py"

BENCHMARKS = {
    "bench_fast.py": """
        import sys
        sys.modules["left_behind_by_fast"] = sys  # a heavy import, as far as the next benchmark can tell

        def row(figure, ours, baseline, ratio, target, unit):
            return dict(figure=figure, ours=ours, baseline=baseline, ratio=ratio, target=target, unit=unit)

        def run():
            return [
                row("fast thing", 0.5, 2.0, 4.0, "<= 1 s and >= 3x", "s"),
                row("slow thing", 12, None, None, "< 10 s", "s"),
                row("throughput", 900.0, 100.0, 9.0, ">= 6,000 tokens/s/GPU", "tokens/s"),
            ]
    """,
    "bench_isolated.py": """
        import sys

        def run():
            assert "left_behind_by_fast" not in sys.modules, "benchmarks share a process"
            return [dict(figure="isolated", ours=1.0, baseline=None, ratio=None, target="", unit="s")]
    """,
    "bench_broken.py": """
        def run():
            raise RuntimeError("no data")
    """,
    "bench_gpu.py": """
        import unittest

        def run():
            raise unittest.SkipTest("no CUDA device")
    """,
    "bench_malformed.py": """
        def run():
            return [{"figure": "no unit", "ours": 1.0, "baseline": None, "ratio": None, "target": "< 1 s"}]
    """,
}


@pytest.fixture
def bench_dir(tmp_path):
    directory = tmp_path / "bench"
    directory.mkdir()
    for name, source in BENCHMARKS.items():
        (directory / name).write_text(textwrap.dedent(source))
    return directory


def runner(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(RUNNER), *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, "COLUMNS": "200"}
    )


@pytest.fixture
def run_module():
    spec = importlib.util.spec_from_file_location("bench_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_every_benchmark_in_its_own_process(bench_dir, tmp_path):
    out = tmp_path / "results" / "bench.json"
    done = runner("--dir", str(bench_dir), "--json", str(out))
    assert done.returncode == 1  # two benchmarks failed
    results = {r["benchmark"]: r for r in json.loads(out.read_text())["results"]}
    assert list(results) == ["broken", "fast", "gpu", "isolated", "malformed"]
    assert results["broken"]["error"] == "RuntimeError: no data"
    assert results["gpu"]["skipped"] == "no CUDA device"
    assert "lacks unit" in results["malformed"]["error"]
    assert results["isolated"]["rows"][0]["figure"] == "isolated"
    assert [row["met"] for row in results["fast"]["rows"]] == [True, False, None]
    assert results["fast"]["rows"][1]["ours"] == 12.0
    for text in ("fast thing", "4x", "skipped: no CUDA device", "failed: RuntimeError: no data"):
        assert text in done.stdout


def test_only_filters_and_names_the_choices(bench_dir):
    done = runner("--dir", str(bench_dir), "--only", "fast,iso*")
    assert done.returncode == 0, done.stderr
    assert "fast thing" in done.stdout and "isolated" in done.stdout and "no data" not in done.stdout
    unknown = runner("--dir", str(bench_dir), "--only", "nope")
    assert unknown.returncode == 1
    assert "matches no benchmark; benchmarks: broken, fast, gpu, isolated, malformed" in unknown.stderr


def test_list(bench_dir):
    done = runner("--dir", str(bench_dir), "--list")
    assert done.returncode == 0 and done.stdout.split()[::2] == [
        "broken",
        "fast",
        "gpu",
        "isolated",
        "malformed",
    ]


@pytest.mark.parametrize(
    ("target", "ours", "ratio", "met"),
    [
        ("<= 30 s", 29.0, None, True),
        ("<= 30 s", 31.0, None, False),
        ("<= 30 s and >= 3x", 10.0, 2.5, False),
        ("<= 30 s and >= 3x", 10.0, 3.5, True),
        (">= 3x", 10.0, None, None),  # no ratio measured
        ("< 1 s", 0.2, None, True),
        ("<= 4 min", 100.0, None, None),  # another unit than the row's: not judged
        ("ratio vs naive", 1.0, 2.0, None),
    ],
)
def test_target_met(run_module, target, ours, ratio, met):
    row = {"figure": "f", "ours": ours, "baseline": None, "ratio": ratio, "target": target, "unit": "s"}
    assert run_module.target_met(row) is met


def test_check_rows_rejects_wrong_types(run_module):
    good = {"figure": "f", "ours": 1, "baseline": None, "ratio": None, "target": "", "unit": "s"}
    assert run_module.check_rows([good])[0]["ours"] == 1.0
    with pytest.raises(ValueError, match="ours='fast' is not a float"):
        run_module.check_rows([{**good, "ours": "fast"}])
    with pytest.raises(ValueError, match="not a list"):
        run_module.check_rows({"figure": "f"})
