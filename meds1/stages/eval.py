"""stage=eval: answer the eval suite, extract the chosen options, score them per source and overall.

Each answer is appended to `predictions.jsonl` in the partial directory the moment it is ready,
keyed by the question's stable id, the run and the option order, so a crashed or preempted eval
resumes and generates only what is missing (answers whose generation failed are retried). With
`eval.repeats=k` the suite is answered k times with seeds seed, seed+1, ... (`eval.repeats_per_source`
sets k per source, as med-s1's DEFAULT_REPETITIONS did); with `eval.shuffle_options=K` each question is
also asked under K seeded orders of its options (meds1.evaluation.permutations); with
`eval.tts.enabled` (`eval=tts`) answers go through s1 budget forcing. Writes `predictions.jsonl`,
`metrics.json`, a per-source table in the log, and the metrics into the registry; `metrics.inference`
names the backend and engine (with its version) that generated the answers; for a trained model,
`metrics.overlap` counts the training rows that restate questions of the sources its curation was not
checked against (meds1/evaluation/overlap.py).
"""

from __future__ import annotations

import json
import logging

from meds1 import pipeline
from meds1.config.schema import Config
from meds1.evaluation import generation, permutations
from meds1.evaluation.data import load_suite, suite_record
from meds1.evaluation.metrics import build_metrics, check_failures, log_table
from meds1.evaluation.overlap import training_overlap
from meds1.evaluation.predictions import write_predictions
from meds1.models import model_path
from meds1.stages import completed, record_result
from meds1.store.workspace import StageWorkspace, require_complete

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


def evaluated_model(cfg: Config) -> str:
    """The fine-tuned model when the experiment trains, else the base model."""
    if pipeline.input_stage(cfg.stages, "eval") == "train":
        return str(require_complete(cfg, "train", "trained model") / "model")
    return model_path(cfg.model, cfg.paths.cache)


def run(cfg: Config) -> dict:
    workspace = StageWorkspace(cfg, "eval")
    if (record := completed(cfg, workspace)) is not None:
        return record
    generation.check_settings(cfg.eval)
    rows, skipped = load_suite(list(cfg.eval.suite), cfg.eval.max_per_source)  # a bad suite stops here
    asked = permutations.expand(rows, cfg.eval.shuffle_options)  # and so does a K it cannot reorder
    model = evaluated_model(cfg)
    with workspace:
        file = workspace.path / PREDICTIONS
        predictions = generation.answer_suite(file, asked, cfg, model)
        check_failures(predictions, cfg.eval.max_failures, file)
        metrics = build_metrics(predictions, cfg, model, skipped, generation.engine(workspace.path))
        metrics["suite"] = suite_record(rows)
        if pipeline.input_stage(cfg.stages, "eval") == "train":  # what its training rows were checked against
            metrics["overlap"] = training_overlap(cfg, rows)
        write_predictions(file, predictions)
        (workspace.path / "metrics.json").write_text(json.dumps(metrics, indent=2))
        final = workspace.final
        record = {
            "outputs_path": str(final / PREDICTIONS),
            "metrics_path": str(final / "metrics.json"),
            "metrics": metrics,
        }
        workspace.commit(record)
    record_result(cfg, "eval", record)
    log_table(metrics)
    return record
