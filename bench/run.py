"""Run the benchmarks in bench/ and print one table: figure, ours, baseline, ratio, target.

    python bench/run.py                       # every bench/bench_*.py
    python bench/run.py --only curation,eval  # some of them (names or globs: curation, bench_eval, *launch*)
    python bench/run.py --json results.json   # also write the rows as JSON
    python bench/run.py --list

A benchmark is a file `bench/bench_<topic>.py` with `run() -> list[dict]`, each dict
`{"figure", "ours", "baseline", "ratio", "target", "unit"}` (an optional "note" is shown too).
Each runs in its own Python process, so one benchmark's imports (torch, say) never colour another's
timings; one that raises `unittest.SkipTest` (no GPU, no vLLM) is listed as skipped. "met" compares
`ours` (or the ratio, for targets like ">= 3x") with a target such as "<= 30 s"; targets it cannot
read are left blank. Exit status 1 when a benchmark fails or returns malformed rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from fnmatch import fnmatchcase
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
FIELDS = {"figure": str, "ours": float, "baseline": float, "ratio": float, "target": str, "unit": str}
OPTIONAL = {"baseline", "ratio", "ours"}  # None means not measured (e.g. no baseline for this figure)
CLAUSE = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*([0-9][0-9,]*\.?[0-9]*)\s*(\S*)")


def discover(directory: Path = BENCH_DIR) -> dict[str, Path]:
    """Benchmarks by topic: bench/bench_curation.py -> "curation"."""
    return {path.stem.removeprefix("bench_"): path for path in sorted(directory.glob("bench_*.py"))}


def select(found: dict[str, Path], only: list[str]) -> dict[str, Path]:
    if not only:
        return found
    chosen = {}
    for pattern in only:
        matches = {t: p for t, p in found.items() if fnmatchcase(t, pattern) or fnmatchcase(p.stem, pattern)}
        if not matches:
            sys.exit(
                f"bench: --only {pattern!r} matches no benchmark; benchmarks: {', '.join(found) or 'none'}"
            )
        chosen.update(matches)
    return dict(sorted(chosen.items()))


def check_rows(rows) -> list[dict]:
    """The rows, with numbers as floats; ValueError naming the first malformed one."""
    if not isinstance(rows, list):
        raise ValueError(f"run() returned {type(rows).__name__}, not a list of dicts")
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i} is {type(row).__name__}, not a dict")
        missing = [key for key in FIELDS if key not in row]
        if missing:
            raise ValueError(f"row {i} ({row.get('figure', '?')}) lacks {', '.join(missing)}")
        clean = dict(row)
        for key, kind in FIELDS.items():
            value = row[key]
            if value is None and key in OPTIONAL:
                continue
            if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                clean[key] = float(value)
            elif kind is str and isinstance(value, str):
                pass
            else:
                raise ValueError(f"row {i} ({row['figure']}): {key}={value!r} is not a {kind.__name__}")
        checked.append(clean)
    return checked


def target_met(row: dict) -> bool | None:
    """Whether every clause of the target ("<= 30 s and >= 3x") holds; None if one cannot be read."""
    verdicts = []
    for clause in re.split(r"\s*(?:\band\b|;|,\s)\s*", row["target"]):
        match = CLAUSE.match(clause)
        if not match:
            return None
        op, number, unit = match.group(1), float(match.group(2).replace(",", "")), match.group(3)
        if unit in ("x", "×"):
            value = row.get("ratio")
        elif unit in ("", row["unit"]):
            value = row.get("ours")
        else:
            return None
        if value is None:
            return None
        verdicts.append(
            {"<=": value <= number, "≤": value <= number, ">=": value >= number, "≥": value >= number,
             "<": value < number, ">": value > number}[op]
        )  # fmt: skip
    return all(verdicts) if verdicts else None


def run_child(path: Path, out: Path) -> None:
    """In the benchmark's own process: import it, call run(), write {rows} / {skipped} / {error}."""
    import importlib.util
    import traceback
    import unittest

    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = {"rows": check_rows(module.run())}
    except unittest.SkipTest as skip:
        result = {"skipped": str(skip)}
    except Exception as error:  # reported as this benchmark's failure; the others still run
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
    out.write_text(json.dumps(result))


def run_group(command: list[str], timeout: float | None = None, tee: Path | None = None, **popen) -> int:
    """Run `command` in a process group of its own and return its exit status. At a timeout (raising
    subprocess.TimeoutExpired), an interrupt, or its end, every process left in the group is killed, so no
    GPU worker (torchrun's, vLLM's) outlives it. `tee`: its output goes to this file as well as to stdout."""
    if tee:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process = subprocess.Popen(command, start_new_session=True, **popen)
    timed_out = threading.Event()

    def kill_group(at_timeout: bool = False) -> None:
        if at_timeout:
            timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill_group, [True]) if timeout else None
    try:
        if timer:
            timer.start()
        if tee:
            with tee.open("w") as log:
                for line in process.stdout:
                    sys.stdout.write(line)
                    log.write(line)
        code = process.wait()
    finally:
        if timer:
            timer.cancel()
        kill_group()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(command, timeout)
    return code


def run_benchmark(topic: str, path: Path, timeout: float | None) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        start = time.perf_counter()
        try:
            run_group([sys.executable, __file__, "--child", str(path), str(out)], timeout, env=env, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"benchmark": topic, "error": f"timed out after {timeout:.0f} s", "seconds": timeout}
        result = json.loads(out.read_text()) if out.exists() else {"error": "the benchmark process died"}
    return {"benchmark": topic, **result, "seconds": round(time.perf_counter() - start, 1)}


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def print_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="meds1 benchmarks")
    for column in ("benchmark", "figure", "ours", "baseline", "ratio", "target", "met", "note"):
        table.add_column(
            column, overflow="fold", justify="right" if column in ("ours", "baseline", "ratio") else "left"
        )
    for result in results:
        name = result["benchmark"]
        if "skipped" in result or "error" in result:  # an error may follow rows measured before it
            problem = (
                f"skipped: {result['skipped']}"
                if "skipped" in result
                else f"[red]failed: {result['error']}[/]"
            )
            table.add_row(name, "-", "-", "-", "-", "-", "", problem)
        for row in result.get("rows", []):
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[row["met"]]
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3g}x"
            cells = [_number(row["ours"], row["unit"]), _number(row["baseline"], row["unit"]), ratio]
            table.add_row(name, row["figure"], *cells, row["target"], met, str(row.get("note", "")))
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # a log keeps the table readable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", action="append", default=[], help="benchmark names or globs (comma-separated)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--timeout", type=float, help="seconds one benchmark may take (default: no limit)")
    parser.add_argument(
        "--dir", type=Path, default=BENCH_DIR, help="where the bench_*.py files are (default: bench/)"
    )
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(*args.child)
        return 0
    found = discover(args.dir.resolve())
    if args.list:
        print("\n".join(f"{topic:12} {path}" for topic, path in found.items()))
        return 0
    chosen = select(found, [name for names in args.only for name in names.split(",") if name])
    results = []
    for topic, path in chosen.items():
        print(f"bench: {topic} ({path})", file=sys.stderr, flush=True)
        result = run_benchmark(topic, path, args.timeout)
        for row in result.get("rows", []):
            row["met"] = target_met(row)
        results.append(result)
    print_table(results)
    if args.json:
        machine = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
