"""Import a paper's released per-question outputs as an eval arm, so paired tests run against it
without regenerating.

    python -m meds1.evaluation.import_outputs FILE [FILE ...] --name NAME [--format m1|lm-eval]
        [--eval PRESET] [--override KEY=VALUE ...] [--root DIR] [--replace]

Each FILE is one run (several: seeds, run 0, 1, ...). Formats, as their code writes them:

- `m1`: UCSC-VLAA/m1@c65dfc6 `src/eval/inference_keep_think.py` `main`, the files of its results
  dataset (UCSC-VLAA/m1-results, `seed_*-temperature-*/<group>/<model>/version_N/m1_eval_data.json`;
  docs/EXP.md): a JSON list of its eval rows (`question`, `options`, `answer_idx`, `source`, ...) with
  `thinking_text`, `response_text` (after budget forcing its answer part opens with `<|im_start|>answer`),
  `finish_reason` and `num_gen_tokens`. The answer is `thinking_text` + `response_text` (the generation
  as the model wrote it); `config.yaml` beside the file gives the decoding, `metrics.json` m1's own
  accuracy per source (shown beside meds1's `accuracy_m1` of the same answers).
- `lm-eval`: lm-evaluation-harness `--log_samples` jsonl, as s1 (simplescaling/s1@77272c6
  `eval/commands.sh`; results at simplescaling/results) ran `gpqa_diamond_openai`
  (`eval/lm-evaluation-harness/lm_eval/tasks/gpqa/openai/utils.py`): per line `doc` (the dataset row
  plus `choice1..4` and `answer`, the letter, as its unseeded shuffle showed them), `resps` (per request,
  a list of responses: each a run) and `exact_match`. Questions are matched by the eval suite's first
  entry's mapping (eval=gpqa-diamond's: the GPQA columns).

Every row is matched to the suite (`--eval PRESET`, the `eval=` config group: m1 for `m1`, gpqa-diamond
for `lm-eval`; `--override` adds Hydra overrides) by its stable id, the hash of source, question and
options (meds1.evaluation.data.question_id; the k-th copy of a repeated question gets the suite's k-th
id). The options each answer was asked with are kept, so the answer is read against what the model saw.
Unmatched rows are left out and counted per source, as are suite questions the file does not answer.
Writes `<root>/imported/NAME/predictions.jsonl` and `metrics.json` (every harness, `imported`: where from,
the counts, the paper's own accuracies) and a registry entry NAME marked `imported_from`, which the
report compares like any arm (`report.baseline=NAME`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from meds1.errors import UserError
from meds1.evaluation.data import load_suite, normalize, suite_record
from meds1.evaluation.predictions import write_predictions
from meds1.evaluation.scoring import judge, score
from meds1.evaluation.suite_spec import SuiteSpec, suite_specs
from meds1.store import registry
from meds1.store.identity import safe_name

FORMATS = ("m1", "lm-eval")
DEFAULT_EVAL = {"m1": "m1", "lm-eval": "gpqa-diamond"}
IMPORTED = "imported"  # <root>/imported/<name>/


def read_m1(file: Path) -> list[dict]:
    """Answers of one m1 results file (see the module doc), each with `raw` (its eval row)."""
    rows = _json(file)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"{file}: not an m1 results file (expected a JSON list of answered eval rows)")
    answers = []
    for number, row in enumerate(rows):
        if not isinstance(row.get("response_text"), str):
            raise UserError(f"{file}: row {number} has no `response_text` (fields: {', '.join(row)})")
        answers.append(
            {
                "raw": row,
                "options": row.get("options"),
                "output": (row.get("thinking_text") or "") + row["response_text"],
                "run": 0,
                "output_tokens": row.get("num_gen_tokens"),
                "finish_reason": row.get("finish_reason"),
                "prompt": row.get("input_str"),
            }
        )
    return answers


def read_lm_eval(file: Path) -> list[dict]:
    """Answers of one lm-evaluation-harness samples file, a run per response, the options as shown."""
    answers = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
            doc, responses = sample["doc"], sample["resps"][0]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            problem = "not an lm-eval sample line (needs `doc` and `resps`)"
            raise UserError(f"{file}:{number}: {problem}") from None
        shown = {letter: doc.get(f"choice{i}") for i, letter in enumerate("ABCD", start=1)}
        if not all(isinstance(text, str) for text in shown.values()) or doc.get("answer") not in shown:
            raise UserError(f"{file}:{number}: `doc` lacks choice1..choice4 and its answer letter")
        for run, response in enumerate([responses] if isinstance(responses, str) else responses):
            answers.append(
                {"raw": doc, "options": shown, "answer_idx": doc["answer"], "output": response, "run": run}
            )
    return answers


READERS = {"m1": read_m1, "lm-eval": read_lm_eval}


def _json(file: Path):
    if not file.is_file():
        raise UserError(f"outputs file {file} does not exist")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{file} is not valid JSON ({error.msg}, line {error.lineno})") from None


def match(answers: list[dict], suite: list[dict], spec: SuiteSpec) -> tuple[list[dict], dict]:
    """(prediction rows of the answers found in `suite`, {matched, unmatched: {source: n}, unanswered:
    {source: n}}). An answer's id is its row's content id under `spec`; the k-th answer of a run with a
    repeated question takes the k-th suite id of that content."""
    ids: dict[str, list[dict]] = defaultdict(list)
    for row in suite:
        ids[row["id"].split("-")[0]].append(row)
    taken: Counter = Counter()
    predictions, unmatched, answered = [], Counter(), set()
    for answer in answers:
        content, _ = normalize(answer["raw"], spec)
        copies = ids.get(content["id"], []) if content else []
        copy = taken[answer["run"], content["id"]] if content else 0
        if copy >= len(copies):
            source = content["source"] if content else str(answer["raw"].get("source") or "unknown")
            unmatched[source] += 1
            continue
        taken[answer["run"], content["id"]] += 1
        suite_row = copies[copy]
        answered.add(suite_row["id"])
        fields = {k: v for k, v in answer.items() if k not in ("raw", "options") and v is not None}
        # the options as the paper asked them (not meds1's shuffle of the suite)
        question = {k: v for k, v in suite_row.items() if k not in ("option_order", "shuffle_seed")}
        shown = answer["options"] if isinstance(answer["options"], dict) else suite_row["options"]
        letter = answer.get("answer_idx") or suite_row["answer_idx"]
        predictions.append(
            judge({**question, **fields, "options": shown, "answer_idx": letter, IMPORTED: True})
        )
    unanswered = Counter(row["source"] for row in suite if row["id"] not in answered)
    counts = {"matched": len(predictions), "unmatched": dict(unmatched), "unanswered": dict(unanswered)}
    return predictions, counts


def m1_reported(files: list[Path]) -> dict | None:
    """m1's own per-source accuracy (metrics.json beside the first file), None when absent."""
    file = files[0].parent / "metrics.json"
    metrics = json.loads(file.read_text()) if file.is_file() else None
    if not isinstance(metrics, dict):
        return None
    return {source: m.get("accuracy") for source, m in metrics.items() if isinstance(m, dict)}


def lm_eval_reported(files: list[Path]) -> dict | None:
    """The harness's own exact_match (the first response of each sample), pooled over the files."""
    marks = []
    for file in files:
        for line in file.read_text().splitlines():
            if line.strip() and isinstance((value := json.loads(line).get("exact_match")), (int, float)):
                marks.append(value)
    return {"overall": sum(marks) / len(marks)} if marks else None


def m1_decoding(files: list[Path]) -> tuple[dict | None, list[int]]:
    """(decoding, seeds) from m1's config.yaml beside each file."""
    import yaml

    decoding, seeds = None, []
    for file in files:
        config_file = file.parent / "config.yaml"
        if not config_file.is_file():
            continue
        config = yaml.safe_load(config_file.read_text()) or {}
        decoding = {
            "temperature": config.get("temperature"),
            "top_p": None,  # not sent by m1: the server's default
            "max_new_tokens": config.get("max_new_tokens"),
        }
        seeds.append(config.get("seed"))
    return decoding, seeds


def import_outputs(
    files: list[Path],
    name: str,
    fmt: str = "m1",
    eval_preset: str | None = None,
    overrides: list[str] = (),
    root: str | None = None,
    replace: bool = False,
) -> dict:
    """Read, match, score and record (see the module doc); returns the metrics."""
    from meds1.config.compose import compose

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: unknown; valid: {', '.join(FORMATS)}")
    slug = safe_name(name)
    preset = eval_preset or DEFAULT_EVAL[fmt]
    cfg = compose([f"eval={preset}", *([f"paths.root={root}"] if root else []), *overrides])
    suite, _ = load_suite(list(cfg.eval.suite))
    spec = SuiteSpec(path="") if fmt == "m1" else suite_specs(list(cfg.eval.suite))[0]
    answers, offset = [], 0
    for file in files:
        found = READERS[fmt](Path(file))
        answers += [{**answer, "run": answer["run"] + offset} for answer in found]
        offset = max([answer["run"] for answer in answers], default=-1) + 1
    predictions, counts = match(answers, suite, spec)
    if not predictions:
        raise UserError(
            f"{files[0]}: none of {len(answers)} answers matches a question of eval={preset} "
            f"(unmatched by source: {counts['unmatched']}); pick the suite they answer with --eval"
        )
    decoding, seeds = m1_decoding(files) if fmt == "m1" else (None, [])
    reported = (m1_reported if fmt == "m1" else lm_eval_reported)(files)
    asked = {row["id"] for row in predictions}
    metrics = {
        **score(predictions),
        "inference": None,
        "decoding": decoding,
        "repeats": offset,
        "seeds": seeds,
        "failed": 0,
        "skipped_rows": {},
        "model": name,
        "suite": suite_record([row for row in suite if row["id"] in asked]),
        "imported": {"from": [str(Path(f).resolve()) for f in files], "format": fmt, **counts},
    }
    if reported:
        metrics["imported"]["reported_accuracy"] = reported
    out = Path(cfg.paths.root) / IMPORTED / slug
    if out.exists() and not replace:
        raise UserError(f"{out} already exists (replace it with --replace)")
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / "predictions.jsonl", predictions)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    record = {
        "outputs_path": str(out / "predictions.jsonl"),
        "metrics_path": str(out / "metrics.json"),
        "metrics": metrics,
        "timestamp": registry.now(),
    }
    entry = {
        "description": f"{name}: outputs imported from {', '.join(map(str, files))} ({fmt})",
        "config": {"name": slug, "stages": ["eval"], "eval": {"suite": list(cfg.eval.suite)}},
        "results": {"eval": record},
        "imported_from": metrics["imported"]["from"],
    }
    registry.add_experiments(registry.registry_path(cfg), {slug: entry}, replace=replace)
    return metrics


def summary_lines(name: str, metrics: dict) -> list[str]:
    """What the import found: counts, then per source meds1's scores beside the paper's own."""
    imported, reported = metrics["imported"], metrics["imported"].get("reported_accuracy") or {}
    lines = [
        f"{name}: {imported['matched']} answers matched the suite; unmatched (left out): "
        f"{imported['unmatched'] or 'none'}; suite questions not answered: {imported['unanswered'] or 'none'}"
    ]
    for source, m in [*metrics["per_source"].items(), ("overall", metrics["overall"])]:
        own = reported.get(source)
        paper = "" if own is None else f", the paper's own scorer {100 * own:.1f}"
        lines.append(
            f"  {source}: n {m['n']}, strict {100 * m['accuracy']:.1f}, m1 {100 * m['accuracy_m1']:.1f}, "
            f"HuatuoGPT {100 * m['accuracy_huatuo']:.1f}{paper}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meds1.evaluation.import_outputs", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("files", type=Path, nargs="+", help="released outputs, one file per run")
    parser.add_argument("--name", required=True, help="the arm's name in the registry, e.g. m1-7B-1K")
    parser.add_argument("--format", choices=FORMATS, default="m1")
    parser.add_argument("--eval", dest="eval_preset", help="the eval suite (eval= preset) they answer")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override (repeatable)")
    parser.add_argument("--root", help="meds1 output root (default: $MEDS1_OUTPUT or ./outputs)")
    parser.add_argument("--replace", action="store_true", help="overwrite an arm of the same name")
    args = parser.parse_args(argv)
    try:
        metrics = import_outputs(
            args.files, args.name, args.format, args.eval_preset, args.override, args.root, args.replace
        )
    except UserError as error:
        print(f"meds1: {error}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(args.name, metrics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
