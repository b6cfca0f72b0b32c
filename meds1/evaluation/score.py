"""Re-score a predictions file without regenerating it.

    python -m meds1.evaluation.score PREDICTIONS.jsonl [--out FILE] [--aggregate majority]
        [--interval hierarchical]

Each line needs `question, options, answer_idx, source, output` (other fields are kept). The
metrics (overall and per source, as in metrics.json) are printed as JSON on stdout; `--out` writes
the lines back with `extracted` (the option letter or null) and `correct` set by the current
extractor. `--aggregate majority` and `--interval hierarchical` score as med-s1 did (eval.aggregate,
eval.interval: meds1.evaluation.scoring). A line that is not JSON or lacks a field stops the run with
its line number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meds1.errors import UserError
from meds1.evaluation.scoring import judge, score

REQUIRED = ("question", "options", "answer_idx", "source", "output")


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"predictions file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        missing = [key for key in REQUIRED if key not in row] if isinstance(row, dict) else list(REQUIRED)
        if missing:
            raise UserError(
                f"{path}:{number}: missing field(s) {', '.join(missing)}; each line needs {REQUIRED}"
            )
        if not isinstance(row["options"], dict):
            raise UserError(f"{path}:{number}: options must be an object {{letter: text}}")
        rows.append(row)
    return rows


def rescore(
    path: Path, out: Path | None = None, aggregate: str = "mean", interval: str = "bootstrap"
) -> dict:
    rows = [judge(row) for row in read_lines(path)]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return score(rows, aggregate=aggregate, interval=interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meds1.evaluation.score", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("predictions", type=Path, help="a predictions.jsonl file")
    parser.add_argument("--out", type=Path, help="write the lines back with `extracted` and `correct` here")
    parser.add_argument("--aggregate", choices=["mean", "majority"], default="mean", help="over repeats")
    parser.add_argument("--interval", choices=["bootstrap", "hierarchical"], default="bootstrap")
    args = parser.parse_args(argv)
    try:
        metrics = rescore(args.predictions, args.out, args.aggregate, args.interval)
    except UserError as error:
        print(f"meds1: {error}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
