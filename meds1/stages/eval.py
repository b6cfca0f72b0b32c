"""stage=eval: generate answers to the eval suite, extract the chosen options, score them.

Predictions are appended to the partial directory in chunks, one JSON line per question with a
stable id, so an interrupted eval resumes and generates only the questions still missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from meds1 import registry
from meds1.config import Config
from meds1.evaluation.data import load_suite
from meds1.evaluation.extract import extract_answer
from meds1.evaluation.prompts import build_conversation
from meds1.evaluation.scoring import score
from meds1.inference import Sampling, load_backend
from meds1.models import model_path
from meds1.paths import registry_path
from meds1.workspace import StageWorkspace, require_complete

log = logging.getLogger(__name__)

CHUNK = 256


def evaluated_model(cfg: Config) -> str:
    """The fine-tuned model when the experiment trains, else the base model."""
    if "train" in cfg.stages:
        return str(require_complete(cfg, "train", "trained model") / "model")
    return model_path(cfg.model, cfg.paths.cache)


def read_predictions(file: Path) -> dict[str, dict]:
    if not file.exists():
        return {}
    rows = {}
    for line in file.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut off by a crash
            continue
        rows[row["id"]] = row
    return rows


def run(cfg: Config) -> dict:
    workspace = StageWorkspace(cfg, "eval")
    if (record := workspace.completed_record()) is not None:
        log.info("eval: %s is complete for this config; skipping (force=true reruns it)", workspace.final)
        return record
    model = evaluated_model(cfg)
    rows, skipped = load_suite(list(cfg.eval.suite), cfg.eval.max_per_source)
    with workspace:
        file = workspace.path / "predictions.jsonl"
        done = read_predictions(file)
        todo = [row for row in rows if row["id"] not in done]
        if done:
            log.info("eval: resuming, %d of %d questions already answered", len(rows) - len(todo), len(rows))
        if todo:
            generate_into(file, todo, cfg, model)
            done = read_predictions(file)
        predictions = [done[row["id"]] for row in rows]
        metrics = {**score(predictions), "skipped_rows": skipped, "model": model}
        (workspace.path / "metrics.json").write_text(json.dumps(metrics, indent=2))
        final = workspace.final
        record = {
            "outputs_path": str(final / "predictions.jsonl"),
            "metrics_path": str(final / "metrics.json"),
            "metrics": metrics,
        }
        workspace.commit(record)
    registry.update(
        registry_path(cfg), workspace.slug, "eval", record, description=cfg.description, config=cfg
    )
    log_table(metrics)
    return record


def generate_into(file: Path, rows: list[dict], cfg: Config, model: str) -> None:
    backend = load_backend(cfg.inference, cfg.model, model)
    sampling = Sampling(
        max_new_tokens=cfg.eval.max_new_tokens,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
        seed=cfg.seed,
    )
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        conversations = [build_conversation(row, cfg.eval.prompt) for row in chunk]
        generations = backend.generate(conversations, sampling)
        with file.open("a") as f:
            for row, conversation, generation in zip(chunk, conversations, generations, strict=True):
                extracted = extract_answer(generation.text, row["options"])
                prediction = {
                    **row,
                    "prompt": conversation[-1]["content"],
                    "output": generation.text,
                    "extracted": extracted,
                    "correct": extracted == row["answer_idx"],
                    "prompt_tokens": generation.prompt_tokens,
                    "output_tokens": generation.output_tokens,
                    "error": generation.error,
                }
                f.write(json.dumps(prediction, ensure_ascii=False) + "\n")


def log_table(metrics: dict) -> None:
    log.info("eval: %-28s %6s %9s %12s", "source", "n", "accuracy", "unparseable")
    for source, m in [*metrics["per_source"].items(), ("overall", metrics["overall"])]:
        log.info(
            "eval: %-28s %6d %9.3f %12.3f", source, m["n"], m["accuracy"] or 0.0, m["unparseable"] or 0.0
        )
