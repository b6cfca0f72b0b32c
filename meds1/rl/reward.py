"""Score a predictions file with RL's rewards, as GRPO would pay each answer.

    python -m meds1.rl.reward PREDICTIONS.jsonl [--out FILE] [--layout eval|huatuo|s1|think|nemotron]
        [OVERRIDES ...]

Reads the lines `python -m meds1.evaluation.score` reads (`question, options, answer_idx, source,
output`; `output_tokens` for `overlong`) and scores each with the rewards of an experiment's
`rl.rewards` (OVERRIDES: a command line's, e.g. `experiment=demo-rl rl.rewards.format=0.1`). The answer
part is read in the experiment's `rl.layout` (`--layout` another), as RL reads it; `--layout eval` reads
it as eval does (after any layout's marker, else the whole text), so that `mcq` is eval's `correct` on
every line. Prints the mean reward and each reward's mean, overall and per source, as JSON; `--out`
writes the lines back with `reward` (the weighted sum) and `rewards` ({name: value}). A line that is not
JSON or lacks a field stops the run with its line number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from meds1.errors import UserError
from meds1.evaluation.score import read_lines
from meds1.layouts import LAYOUTS

EVAL_READING = "eval"


def score_lines(rows: list[dict], rl, layout: str | None, cache_dir: str, seed: int) -> list[dict]:
    """Each line with `reward` and `rewards` {name: value} (meds1.rl.rewards)."""
    from meds1.rl.rewards import Completion, scorers, total

    completions = [
        Completion(
            row.get("output") or "",
            int(row.get("output_tokens") or 0),
            {**row, "kind": "mcq", "reference": row["options"].get(str(row["answer_idx"]).upper(), "")},
        )
        for row in rows
    ]
    built = scorers(rl, layout, cache_dir, seed)
    components = {name: scorer(completions) for name, (_, scorer) in built.items()}
    weights = {name: weight for name, (weight, _) in built.items()}
    scored = []
    for index, row in enumerate(rows):
        values = {name: values[index] for name, values in components.items()}
        scored.append({**row, "reward": total(values, weights), "rewards": values})
    return scored


def summary(scored: list[dict]) -> dict:
    """{"overall": S, "per_source": {source: S}}, S = {n, reward, rewards: {name: mean}}."""

    def summarize(lines: list[dict]) -> dict:
        names = lines[0]["rewards"] if lines else {}
        return {
            "n": len(lines),
            "reward": statistics.fmean(line["reward"] for line in lines) if lines else None,
            "rewards": {name: statistics.fmean(line["rewards"][name] for line in lines) for name in names},
        }

    by_source: dict[str, list[dict]] = defaultdict(list)
    for line in scored:
        by_source[line["source"]].append(line)
    return {
        "overall": summarize(scored),
        "per_source": {source: summarize(lines) for source, lines in sorted(by_source.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meds1.rl.reward", description=__doc__.split("\n", 1)[0])
    parser.add_argument("predictions", type=Path, help="a predictions.jsonl file")
    parser.add_argument(
        "overrides", nargs="*", help="the experiment's command line (default: the default one)"
    )
    parser.add_argument("--out", type=Path, help="write the lines back with `reward` and `rewards` here")
    parser.add_argument(
        "--layout",
        choices=[EVAL_READING, *LAYOUTS],
        help="the layout to read the answer part in (default: the experiment's rl.layout; eval: as eval)",
    )
    args = parser.parse_intermixed_args(argv)
    from meds1.config.cli import check_overrides
    from meds1.config.compose import compose

    problem = check_overrides(args.overrides)
    if problem:
        print(f"meds1: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = compose(args.overrides)
        layout = args.layout or (str(cfg.rl.layout) if cfg.rl.layout else EVAL_READING)
        scored = score_lines(
            read_lines(args.predictions),
            cfg.rl,
            None if layout == EVAL_READING else layout,
            cfg.paths.cache,
            cfg.seed,
        )
    except UserError as error:
        print(f"meds1: {error}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in scored))
    print(json.dumps({"layout": layout, **summary(scored)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
