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

from meds1.config.schema import Config
from meds1.evaluation import generation, permutations
from meds1.evaluation.data import load_suite, suite_record
from meds1.evaluation.metrics import build_metrics, check_failures, log_table
from meds1.evaluation.overlap import rl_overlap, training_overlap
from meds1.evaluation.predictions import write_predictions
from meds1.models import model_path
from meds1.pipeline import upstream
from meds1.stages import completed, record_result
from meds1.store.workspace import StageWorkspace, require_complete

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


def evaluated_model(cfg: Config) -> str:
    """The model the experiment made last (after RL, else after SFT: meds1.pipeline.input_stage), else
    the base model."""
    made_by = upstream(cfg, "eval")
    if made_by is not None:
        what = "RL model" if made_by == "rl" else "trained model"
        return str(require_complete(cfg, made_by, what) / "model")
    return model_path(cfg.model, cfg.paths.cache)


def trained_on_curation(cfg: Config) -> bool:
    """Whether the evaluated model was fine-tuned on the experiment's curated rows (the SFT model, or an RL
    model that started from it)."""
    made_by = upstream(cfg, "eval")
    return made_by == "train" or (made_by == "rl" and cfg.rl.init == "train")


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
        if trained_on_curation(cfg):  # what its training rows were checked against
            metrics["overlap"] = training_overlap(cfg, rows)
        if upstream(cfg, "eval") == "rl":  # what its RL questions were checked against
            metrics["rl_overlap"] = rl_overlap(cfg, rows)
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
