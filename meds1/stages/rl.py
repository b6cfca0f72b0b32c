"""stage=rl: GRPO on verifiable questions, from the experiment's SFT model (rl.init=train) or `model` (base).

Reads the questions (eval's suite loader), decontaminates them against the eval suite (by default the one
the curation is checked against), optionally keeps those of a useful pass rate, asks each as eval asks it
with options shuffled per question and epoch, and trains with TRL's GRPOTrainer on the rewards of
`rl.rewards` (meds1.rl). Writes `model/` (the RL model, which eval then evaluates), `metrics.json` (the
reward `history`, one entry per logged step, and the questions' record), `questions.jsonl` (the questions
trained on) and the registry's `results.rl`. Ctrl-C checkpoints and stops as train does.

Run it as one process, or one per GPU (torchrun or SLURM tasks) as train: every rank reads the questions
(a pass-rate filter is computed once, by whichever rank takes its cache's lock first, and read by the
others) before the process group starts; rank 0 alone takes the stage's lock, prepares and commits its
partial directory and writes the registry. Settings that cannot work and bad questions stop every rank
before any model is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
from pathlib import Path

from meds1.config.schema import Config
from meds1.errors import UserError
from meds1.evaluation.overlap import RL_QUESTIONS
from meds1.models import model_path
from meds1.rl import data
from meds1.rl.grpo import check_options, train_grpo
from meds1.stages import completed, record_result, stop_training
from meds1.store.workspace import StageWorkspace, read_marker, require_complete
from meds1.training import distributed
from meds1.training.preemption import Preempted

log = logging.getLogger(__name__)

METRICS = "metrics.json"


def starting_model(cfg: Config) -> tuple[str, dict]:
    """(path of the model RL starts from, what identifies it for caches): the train stage's model made
    with this config (rl.init=train), else `model`."""
    if cfg.rl.init == "train":
        trained = require_complete(cfg, "train", "trained model")
        marker = read_marker(trained) or {}
        identity = {"train": marker.get("config_hash"), "finished_at": marker.get("finished_at")}
        return str(trained / "model"), identity
    return model_path(cfg.model, cfg.paths.cache), dataclasses.asdict(cfg.model)


def read_questions(cfg: Config) -> tuple[list[dict], dict, list[dict]]:
    """The questions of rl.data.suite without those that restate an eval question: (questions, skipped rows
    per source and reason, removed questions) (meds1.rl.data)."""
    questions, skipped = data.load_questions(cfg.rl)
    questions, removed = data.decontaminate(questions, cfg.rl)
    if not questions:
        raise UserError(
            f"rl.data.suite: every question ({len(removed)}) restates an eval question "
            "(rl.data.decontamination); train RL on other questions"
        )
    return questions, skipped, removed


def preflight_judge(cfg: Config) -> None:
    """The LLM judge's first request alone, before training, when the `judge` reward asks an endpoint that
    has not answered under its cache key yet (as curation's pre-flights: meds1.curation.llm)."""
    from meds1.curation.annotators import rl_judge
    from meds1.curation.difficulty import JUDGE_CORRECTION, judge_conversation, parse_verdict
    from meds1.curation.llm import preflight
    from meds1.rl.rewards import verdict_cache

    judge = rl_judge(cfg)
    if not (judge.asked and judge.endpoint) or len(verdict_cache(cfg.rl.judge, cfg.paths.cache).load()):
        return  # a local model, or an endpoint that answered before (only final verdicts are cached)
    reference = "The reference answer."
    conversation = judge_conversation(cfg.rl.judge, "A question.", reference, reference)
    preflight(judge, conversation, parse_verdict, cfg.paths.cache, JUDGE_CORRECTION, cfg.seed)


def run(cfg: Config) -> dict:
    rl = cfg.rl
    env = distributed.detect()
    rl.batch_sizes(env.world_size)
    check_options(rl, env.world_size)
    workspace = StageWorkspace(cfg, "rl")
    if (record := completed(cfg, workspace, main=env.is_main)) is not None:
        return record
    questions, skipped, removed = read_questions(cfg)  # bad questions stop here, before any model
    start, identity = starting_model(cfg)
    pass_rates = None
    if rl.data.pass_rate.enabled:
        questions, pass_rates = data.filter_by_pass_rate(questions, cfg, start, identity)
    log.info(
        "rl: %d questions (%d removed as eval overlap) x %d epoch(s), %d completions each",
        len(questions),
        len(removed),
        rl.num_epochs,
        rl.num_generations,
    )
    questions_record = data.data_record(questions, skipped, removed, pass_rates)
    rows = data.epoch_rows(questions, rl, cfg.seed)
    try:
        with distributed.process_group(env), contextlib.ExitStack() as held:
            partial = distributed.on_main(lambda: held.enter_context(workspace).path, env)
            distributed.on_main(lambda: preflight_judge(cfg), env)
            metrics = train_grpo(
                rl,
                start,
                cfg.model.revision if rl.init == "base" else None,
                cfg.model.dtype,
                rows,
                partial,
                cfg.paths.cache,
                cfg.seed,
                env,
            )
            metrics["data"] = questions_record
            metrics["init"] = str(rl.init)
            record = distributed.on_main(
                lambda: _commit(cfg, workspace, partial, start, metrics, questions), env
            )
    except Preempted as stop:
        stop_training(cfg, workspace, stop)
    if env.is_main:
        log.info(
            "rl: %d steps, reward %.3f -> %.3f, %.2f s/step on %d process(es)",
            metrics["global_step"],
            metrics["first_reward"] or 0.0,
            metrics["last_reward"] or 0.0,
            metrics["seconds_per_step"],
            metrics["world_size"],
        )
    return record


def _commit(
    cfg: Config, workspace: StageWorkspace, partial: Path, start: str, metrics: dict, questions: list[dict]
) -> dict:
    """Write metrics.json (with the history) and the questions trained on (as decontamination reads them:
    an eval on a benchmark they were not checked against counts those restating its questions), commit the
    output, record the summary (without the history)."""
    (partial / METRICS).write_text(json.dumps(metrics, indent=2))
    with (partial / RL_QUESTIONS).open("w") as out:
        for question in questions:
            row = {key: question[key] for key in ("id", "source", "question")}
            out.write(json.dumps({**row, "answer": question["reference"]}, ensure_ascii=False) + "\n")
    summary = {key: value for key, value in metrics.items() if key != "history"}
    record = {
        "model_path": str(workspace.final / "model"),
        "init_model": start,
        "metrics_path": str(workspace.final / METRICS),
        "metrics": summary,
    }
    final = workspace.commit(record)
    shutil.rmtree(final / "checkpoints", ignore_errors=True)
    record_result(cfg, "rl", record)
    return record
