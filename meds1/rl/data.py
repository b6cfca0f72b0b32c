"""The questions RL trains on, as the rows of GRPO's dataset.

- Read with eval's suite loader (`rl.data.suite`: files, folders, `hf://` datasets, mappings for other
  shapes; meds1.evaluation.data), so a benchmark's train split is named as its test split is in
  eval.suite, and a source without usable options or answers stops with one line naming the file, the
  field it lacks and the mapping that would fix it. `rl.data.kind=open` reads a question and a reference
  answer (the mapping's `question` and `answer` columns) instead: HuatuoGPT-o1's verifiable problems.
- Decontaminated against the eval suite with curation's decontamination (`rl.data.decontamination`).
- Optionally filtered by pass rate, as open-r1's `scripts/pass_rate_filtering/compute_pass_rate.py`
  (huggingface/open-r1@1416fa0): `samples` completions per question from the model RL starts from, scored
  by `mcq` (open questions: `judge`); a question stays when its mean is strictly between `min` and `max`.
  Cached like every annotation (meds1.curation.cache), by the model, the prompt and the sampling.
- Prompted as eval prompts (meds1.evaluation.prompts: the template, the system turn, the options as
  lines), so RL trains what eval measures.
- One row per question and epoch: epoch e visits the questions in an order drawn from (`seed`, e), and
  shows each question's options in an order drawn from (`seed`, e, its id); `answer_idx` is the correct
  option's letter in that order, so the reward follows it and no position pays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections import Counter
from pathlib import Path

import pandas as pd

from meds1.config.schema import Config, EvalConfig, RLConfig
from meds1.errors import UserError
from meds1.evaluation.data import LETTERS, first_per_source, question_id, read_suite, suite_record
from meds1.evaluation.prompts import build_conversation
from meds1.hub import HubReadError

log = logging.getLogger(__name__)

SUITE_KEY = "rl.data.suite"
DECONTAMINATION_KEY = "rl.data.decontamination"


def load_questions(rl: RLConfig) -> tuple[list[dict], dict]:
    """(questions, {source: {skip reason: rows}}) of `rl.data.suite`, as `kind` says."""
    if rl.data.kind == "open":
        return load_open(list(rl.data.suite), rl.data.max_per_source)
    from meds1.evaluation.data import load_suite

    try:
        rows, skipped = load_suite(list(rl.data.suite), rl.data.max_per_source, key=SUITE_KEY)
    except HubReadError:
        raise  # names its entry and the local copy already
    except UserError as error:
        said = str(error)
        raise UserError(said if said.startswith(SUITE_KEY) else f"{SUITE_KEY}: {said}") from None
    for row in rows:
        row.update(kind="mcq", reference=row["options"][row["answer_idx"]])
    return rows, skipped


def load_open(entries: list, max_per_source: int | None) -> tuple[list[dict], dict]:
    """Open questions: each row's question and reference answer (the entry's `question` and `answer`
    columns); a file with no usable row stops the load, naming it and those mapping keys."""
    questions: list[dict] = []
    skipped: dict[str, Counter] = {}
    for spec, label, raw_rows, _ in read_suite(entries, SUITE_KEY):
        usable = [q for raw in raw_rows if (q := open_question(raw, spec, label, skipped)) is not None]
        if not usable:
            fields = sorted({str(k) for raw in raw_rows[:20] if isinstance(raw, dict) for k in raw})
            raise UserError(
                f"{SUITE_KEY}: {label}: none of {len(raw_rows)} rows has an open question and a "
                f"reference answer in columns {spec.question!r} and {spec.answer!r} (fields: "
                f"{', '.join(fields[:8])}); map them, e.g. {{path: {spec.path}, question: COLUMN, "
                "answer: COLUMN}"
            )
        questions += usable
    if max_per_source is not None:
        questions = first_per_source(questions, max_per_source)
    return questions, {source: dict(reasons) for source, reasons in skipped.items()}


def open_question(raw, spec, label: str, skipped: dict[str, Counter]) -> dict | None:
    """One open question from a raw row, or None (counted in `skipped` under its source and reason)."""
    row = raw if isinstance(raw, dict) else {}
    source = spec.name or str(row.get("source") or Path(label).stem)
    question, answer = row.get(spec.question), row.get(spec.answer)
    if not isinstance(question, str) or not question.strip():
        reason = "missing_question"
    elif answer is None or not str(answer).strip():
        reason = "missing_answer"
    else:
        return {
            "id": question_id(source, question, {"reference": str(answer)}),
            "source": source,
            "question": question,
            "options": {},
            "answer_idx": "",
            "reference": str(answer),
            "kind": "open",
        }
    skipped.setdefault(source, Counter())[reason] += 1
    return None


def decontaminate(questions: list[dict], rl: RLConfig) -> tuple[list[dict], list[dict]]:
    """(questions kept, questions removed, each with its nearest eval question) (rl.data.decontamination)."""
    from meds1.curation.decontamination import nearest_eval_questions

    if not rl.data.decontamination.enabled or not questions:
        return questions, []
    frame = pd.DataFrame(
        {"question": [q["question"] for q in questions], "answer": [q["reference"] for q in questions]}
    )
    matches, overlap = nearest_eval_questions(frame, rl.data.decontamination, DECONTAMINATION_KEY)
    removed = [
        {"id": q["id"], "source": q["source"], **matches.iloc[i].to_dict()}
        for i, q in enumerate(questions)
        if overlap[i]
    ]
    return [q for i, q in enumerate(questions) if not overlap[i]], removed


def eval_prompting(rl: RLConfig) -> EvalConfig:
    """Eval's prompt settings as rl holds them (interpolated from eval's), for meds1.evaluation.prompts."""
    return EvalConfig(
        suite=[],
        prompt=rl.prompt,
        strict=rl.strict,
        strict_suffix=rl.strict_suffix,
        prompting=rl.prompting,
        system_prompt=rl.system_prompt,
    )


def conversation(question: dict, rl: RLConfig) -> list[dict[str, str]]:
    """The prompt a question is asked with: eval's for a multiple-choice question, `open_prompt` otherwise."""
    if question["kind"] == "mcq":
        return build_conversation(question, eval_prompting(rl))
    system = [{"role": "system", "content": rl.system_prompt}] if rl.system_prompt else []
    return [*system, {"role": "user", "content": rl.open_prompt.format(question=question["question"])}]


def shuffled(question: dict, seed: int, epoch: int) -> dict:
    """The question with its options in the order of (seed, epoch, id), `answer_idx` following the answer."""
    if question["kind"] != "mcq":
        return dict(question)
    letters = list(question["options"])
    random.Random(f"{seed}:{epoch}:{question['id']}").shuffle(letters)
    return {
        **question,
        "options": {LETTERS[i]: question["options"][letter] for i, letter in enumerate(letters)},
        "answer_idx": LETTERS[letters.index(question["answer_idx"])],
    }


def epoch_rows(questions: list[dict], rl: RLConfig, seed: int) -> list[dict]:
    """GRPO's dataset: for each epoch the questions in that epoch's order, each asked with that epoch's
    option order (TRL then reads them in order: `shuffle_dataset=False`)."""
    rows = []
    for epoch in range(rl.num_epochs):
        order = list(questions)
        random.Random(f"{seed}:{epoch}").shuffle(order)
        for question in order:
            shown = shuffled(question, seed, epoch)
            rows.append(
                {
                    "prompt": conversation(shown, rl),
                    "id": shown["id"],
                    "source": shown["source"],
                    "question": shown["question"],
                    "options": list(shown["options"].values()),
                    "answer_idx": shown["answer_idx"],
                    "reference": shown["reference"],
                    "kind": shown["kind"],
                    "epoch": epoch,
                }
            )
    return rows


def row_options(row: dict) -> dict[str, str]:
    """A dataset row's options as {letter: text} (the dataset stores them as a list in the shown order)."""
    return dict(zip(LETTERS, row["options"] or [], strict=False))


def pass_rate_spec(cfg: Config, model: dict) -> dict:
    """What decides a question's pass rate, for the annotation cache key."""
    rl = cfg.rl
    pass_rate = rl.data.pass_rate
    return {
        "model": model,
        "prompt": dataclasses.asdict(eval_prompting(rl)) | {"open_prompt": rl.open_prompt},
        "layout": str(rl.layout),
        "samples": pass_rate.samples,
        "temperature": rl.temperature,
        "top_p": rl.top_p,
        "max_new_tokens": rl.max_completion_length,
        "seed": cfg.seed,
        "judge": dataclasses.asdict(rl.judge) if rl.data.kind == "open" else None,
    }


def question_key(question: dict) -> int:
    """A question's row id in the annotation cache (60 bits of a digest of its id)."""
    return int(hashlib.sha1(question["id"].encode()).hexdigest()[:15], 16)


def filter_by_pass_rate(
    questions: list[dict], cfg: Config, model_path: str, model: dict
) -> tuple[list[dict], dict]:
    """(questions whose pass rate is strictly inside (min, max), stats); see the module doc."""
    from meds1.curation.cache import AnnotationCache, annotate

    pass_rate = cfg.rl.data.pass_rate
    by_key = {question_key(q): q for q in questions}
    cache = AnnotationCache(cfg.paths.cache, "pass-rates", pass_rate_spec(cfg, model))

    def compute(keys: list[int]) -> pd.DataFrame:
        rates = sample_pass_rates([by_key[k] for k in keys], cfg, model_path)
        return pd.DataFrame({"row_id": keys, "pass_rate": rates})

    rates, info = annotate(cache, list(by_key), compute, cfg.curation.annotation_chunk, "pass rates")
    kept = [q for k, q in by_key.items() if pass_rate.min < rates.at[k, "pass_rate"] < pass_rate.max]
    values = rates["pass_rate"]
    stats = {
        **info,
        "kept": len(kept),
        "too_easy": int((values >= pass_rate.max).sum()),
        "too_hard": int((values <= pass_rate.min).sum()),
        "mean_pass_rate": float(values.mean()) if len(values) else None,
    }
    log.info(
        "rl: pass rate in (%g, %g): kept %d of %d questions (mean pass rate %.3f)",
        pass_rate.min,
        pass_rate.max,
        len(kept),
        len(questions),
        stats["mean_pass_rate"] or 0.0,
    )
    if not kept:
        raise UserError(
            f"rl.data.pass_rate: none of {len(questions)} questions has a pass rate strictly between "
            f"{pass_rate.min:g} and {pass_rate.max:g} ({stats['too_easy']} at or above, "
            f"{stats['too_hard']} at or below): widen rl.data.pass_rate.min/max or turn it off "
            "(rl.data.pass_rate.enabled=false)"
        )
    return kept, stats


def sample_pass_rates(questions: list[dict], cfg: Config, model_path: str) -> list[float]:
    """Each question's mean reward over `samples` completions (seeds seed, seed+1, ...)."""
    from meds1.inference import Sampling, load_backend
    from meds1.rl.rewards import Completion, scorer

    rl = cfg.rl
    score = scorer("mcq" if rl.data.kind == "mcq" else "judge", rl, rl.layout, cfg.paths.cache, cfg.seed)
    conversations = [conversation(q, rl) for q in questions]
    rows = [{**q, "options": q["options"]} for q in questions]
    totals = [0.0] * len(questions)
    backend = load_backend(rl.data.pass_rate.inference, cfg.model, model_path)
    try:
        for sample in range(rl.data.pass_rate.samples):
            sampling = Sampling(rl.max_completion_length, rl.temperature, rl.top_p, seed=cfg.seed + sample)
            generations = backend.generate(conversations, sampling)
            rewards = score(
                [Completion(g.text, g.output_tokens, r) for g, r in zip(generations, rows, strict=True)]
            )
            totals = [t + r for t, r in zip(totals, rewards, strict=True)]
    finally:
        backend.close()
    return [t / rl.data.pass_rate.samples for t in totals]


def data_record(questions: list[dict], skipped: dict, removed: list[dict], pass_rates: dict | None) -> dict:
    """What rl/metrics.json says about the questions: per source, how many and which (fingerprint)."""
    return {
        "questions": len(questions),
        "suite": suite_record(questions),
        "skipped_rows": skipped,
        "decontaminated": len(removed),
        "decontaminated_examples": removed[:20],
        "pass_rate": pass_rates,
    }
