"""stage=eval: answer the eval suite, extract the chosen options, score them per source and overall.

Each answer is appended to `predictions.jsonl` in the partial directory the moment it is ready,
keyed by the question's stable id and the run, so a crashed or preempted eval resumes and generates
only what is missing (answers whose generation failed are retried). With `eval.repeats=k` the suite
is answered k times with seeds seed, seed+1, ... (`eval.repeats_per_source` sets k per source, as
med-s1's DEFAULT_REPETITIONS did); with `eval.tts.enabled` (`eval=tts`) answers go
through s1 budget forcing. Writes `predictions.jsonl`, `metrics.json`, a per-source table in the
log, and the metrics into the registry; `metrics.inference` names the backend and engine (with its
version) that generated the answers.
"""

from __future__ import annotations

import json
import logging
import statistics

from meds1.config.schema import Config, EvalConfig
from meds1.errors import UserError
from meds1.evaluation.budget_forcing import budget_force
from meds1.evaluation.data import load_suite, suite_record
from meds1.evaluation.predictions import PredictionWriter, read_predictions, write_predictions
from meds1.evaluation.prompts import build_conversation
from meds1.evaluation.scoring import judge, score
from meds1.inference import Generation, Sampling, load_backend
from meds1.models import model_path
from meds1.pipeline import upstream
from meds1.stages import completed, record_result
from meds1.store.workspace import StageWorkspace, require_complete

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
ENGINE = "engine.json"  # the backend and engine that generated the answers (meds1.inference.Backend.engine)


def evaluated_model(cfg: Config) -> str:
    """The model the experiment made last (after RL, else after SFT: meds1.pipeline.input_of), else the
    base model."""
    made_by = upstream(cfg, "eval")
    if made_by is not None:
        what = "RL model" if made_by == "rl" else "trained model"
        return str(require_complete(cfg, made_by, what) / "model")
    return model_path(cfg.model, cfg.paths.cache)


def check_settings(eval_cfg: EvalConfig) -> None:
    if max_repeats(eval_cfg) > 1 and eval_cfg.temperature == 0:
        log.warning(
            "eval: %d repeats with temperature 0 differ only by nondeterminism", max_repeats(eval_cfg)
        )


def run(cfg: Config) -> dict:
    workspace = StageWorkspace(cfg, "eval")
    if (record := completed(cfg, workspace)) is not None:
        return record
    check_settings(cfg.eval)
    rows, skipped = load_suite(list(cfg.eval.suite), cfg.eval.max_per_source)  # a bad suite stops here
    model = evaluated_model(cfg)
    wanted = [(r, row) for r in range(max_repeats(cfg.eval)) for row in rows if r < repeats(row, cfg.eval)]
    with workspace:
        file = workspace.path / PREDICTIONS
        done = read_predictions(file)
        missing = [(run, row) for run, row in wanted if _needs_answer(done.get((row["id"], run)))]
        if done:
            saved = len(wanted) - len(missing)
            log.info("eval: resuming, %d of %d answers already saved", saved, len(wanted))
        if missing:
            generate_missing(file, missing, cfg, model)
            done = read_predictions(file)
        predictions = [done[(row["id"], run)] for run, row in wanted]
        check_failures(predictions, cfg.eval.max_failures, file)
        engine_file = workspace.path / ENGINE  # absent only in a partial directory of an older meds1
        engine = json.loads(engine_file.read_text()) if engine_file.exists() else None
        metrics = build_metrics(predictions, cfg, model, skipped, engine)
        metrics["suite"] = suite_record(rows)
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


def repeats(row: dict, eval_cfg: EvalConfig) -> int:
    """Runs of this question: its source's `eval.repeats_per_source` entry, else `eval.repeats`."""
    return eval_cfg.repeats_per_source.get(row["source"], eval_cfg.repeats)


def max_repeats(eval_cfg: EvalConfig) -> int:
    return max([eval_cfg.repeats, *eval_cfg.repeats_per_source.values()])


def _needs_answer(prediction: dict | None) -> bool:
    return prediction is None or bool(prediction.get("error"))


def generate_missing(file, missing: list[tuple[int, dict]], cfg: Config, model: str) -> None:
    """Answer every (run, question) in `missing`, appending each answer to `file` as it arrives."""
    backend = load_backend(cfg.inference, cfg.model, model)
    (file.parent / ENGINE).write_text(json.dumps(backend.engine))
    writer = PredictionWriter(file)
    try:
        for run in sorted({run for run, _ in missing}):
            todo = [row for r, row in missing if r == run]
            seed = cfg.seed + run
            conversations = [build_conversation(row, cfg.eval) for row in todo]
            sampling = Sampling(
                max_new_tokens=cfg.eval.max_new_tokens,
                temperature=cfg.eval.temperature,
                top_p=cfg.eval.top_p,
                seed=seed,
            )
            log.info("eval: run %d (seed %d): generating %d answers", run, seed, len(todo))

            def save(
                index: int, generation: Generation, todo=todo, conversations=conversations, run=run, seed=seed
            ):
                prompt = conversations[index][-1]["content"]
                writer.write(prediction(todo[index], prompt, generation, run, seed))

            if cfg.eval.tts.enabled:
                budget_force(backend, conversations, sampling, cfg.eval.tts, on_result=save)
            else:
                backend.generate(conversations, sampling, on_result=save)
    finally:
        writer.close()
        backend.close()


def prediction(row: dict, prompt: str, generation: Generation, run: int, seed: int) -> dict:
    """One predictions.jsonl line: the question, what the model saw and said, and its judgement."""
    line = judge({**row, "run": run, "seed": seed, "prompt": prompt, "output": generation.text})
    line.update(
        prompt_tokens=generation.prompt_tokens,
        output_tokens=generation.output_tokens,
        finish_reason=generation.finish_reason,
        error=generation.error,
    )
    thinking = getattr(generation, "thinking_tokens", None)
    if thinking is not None:
        line["thinking_tokens"] = thinking
    return line


def check_failures(predictions: list[dict], allowed: int, file) -> None:
    failed = [p for p in predictions if p.get("error")]
    if len(failed) > allowed:
        raise UserError(
            f"eval: {len(failed)} of {len(predictions)} generations failed after retries "
            f"(first: {failed[0]['error']}); answers so far are saved in {file}: rerun the same "
            f"command to retry only the missing ones (eval.max_failures={allowed} tolerated)"
        )
    if failed:
        log.warning(
            "eval: %d generations failed; they count as wrong (eval.max_failures=%d)", len(failed), allowed
        )


def build_metrics(
    predictions: list[dict], cfg: Config, model: str, skipped: dict, engine: dict | None
) -> dict:
    metrics = {
        **score(predictions, aggregate=cfg.eval.aggregate, interval=cfg.eval.interval),
        "inference": engine,
        "decoding": decoding(cfg.eval),
        "repeats": cfg.eval.repeats,
        "seeds": [cfg.seed + run for run in range(max_repeats(cfg.eval))],
        "failed": sum(bool(p.get("error")) for p in predictions),
        "skipped_rows": skipped,
        "model": model,
    }
    if cfg.eval.repeats_per_source:
        metrics["repeats_per_source"] = dict(cfg.eval.repeats_per_source)
    if cfg.eval.aggregate != "mean" or cfg.eval.interval != "bootstrap":
        metrics["scoring"] = {"aggregate": cfg.eval.aggregate, "interval": cfg.eval.interval}
    if cfg.eval.tts.enabled:
        metrics["tts"] = {
            "budget": cfg.eval.tts.budget,
            "num_ignore": cfg.eval.tts.num_ignore,
            "layout": cfg.eval.tts.layout,
            "answer_max_tokens": cfg.eval.tts.answer_max_tokens,
            "mean_thinking_tokens": statistics.fmean(p.get("thinking_tokens", 0) for p in predictions),
        }
    return metrics


def decoding(eval_cfg: EvalConfig) -> dict:
    """The sampling settings that produced the answers (greedy when temperature is 0)."""
    return {
        "temperature": eval_cfg.temperature,
        "top_p": eval_cfg.top_p,
        "max_new_tokens": eval_cfg.max_new_tokens,
    }


def log_table(metrics: dict) -> None:
    log.info(
        "eval: %-28s %6s %9s %15s %8s %12s %8s",
        "source",
        "n",
        "accuracy",
        "95% CI",
        "huatuo",
        "unparseable",
        "tokens",
    )
    for source, m in [*metrics["per_source"].items(), ("overall", metrics["overall"])]:
        spread = f" ±{m['accuracy_std']:.3f}" if "accuracy_std" in m else ""
        low, high = m["ci95"] or (0.0, 0.0)
        log.info(
            "eval: %-28s %6d %9.3f %15s %8.3f %12.3f %8.0f%s",
            source,
            m["n"],
            m["accuracy"] or 0.0,
            f"[{low:.3f}, {high:.3f}]",
            m["accuracy_huatuo"] or 0.0,
            m["unparseable"] or 0.0,
            m["mean_output_tokens"] or 0.0,
            spread,
        )
    if metrics["inference"]:
        log.info("eval: answers generated by %s", ", ".join(map(str, metrics["inference"].values())))
    log.info(
        "eval: decoding: temperature %(temperature)g, top_p %(top_p)g, max_new_tokens %(max_new_tokens)d",
        metrics["decoding"],
    )
    if "tts" in metrics:
        log.info(
            "eval: budget forcing: budget %(budget)d, mean thinking tokens %(mean_thinking_tokens).1f",
            metrics["tts"],
        )
