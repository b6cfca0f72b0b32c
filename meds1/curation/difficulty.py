"""Difficulty filter: the base model answers each question, a judge compares it with the reference.

By default the base model is asked as med-s1 asked it (data/utils/model_utils.py at 92b9b79): the
text of `prompt` completed raw (no chat template; "Think through this step-by-step:\n1." ends it),
temperature 0.05, top_p 0.9, frequency_penalty 0.1, stop at "</s>" or a blank line, 1024 tokens.
`prompt_format=chat` sends `prompt` as the user turn through the model's chat template instead.

Verdicts: `correct` (the row is removed, reason `base_model_correct`), `incorrect` (kept: hard),
`unparseable` (the judge's reply did not end in Yes/No after every attempt), `failed` (the judge's
request failed after the backend's retries) and `no_answer` (the base model's request failed). The
last three are recorded as such, never silently counted as hard; `drop_unjudged` decides whether
those rows stay in the pool. More rows without a base-model answer than
`curation.difficulty.max_unusable_fraction`, or without a usable verdict of the `llm` judge than
`curation.difficulty.judge.max_unusable_fraction`, stop the stage (meds1/curation/unusable.py); so
does a base model or judge over `openai` whose first request fails (`preflight_base_model`,
`preflight_judge`).

Judges:
- `llm`: any model through an inference backend (default: med-s1's verify_answer prompt,
  temperature 0.1, 500 tokens); its reply must end with the word Yes or No ("Yes." and "**No**"
  count; "Yes, but ..." does not: the final word decides). med-s1 compared the last
  whitespace-separated word, lowercased, with "yes", so "Yes." or "**Yes**" counted as No.
- `match`: offline. An option letter ("The answer is C") on both sides is compared directly;
  otherwise every content word of the reference's final answer must appear in the final answer of
  the model's reply (after its last "answer is"/"Answer:", else its last paragraph).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata

import numpy as np
import pandas as pd

from meds1.config.schema import (
    Config,
    DifficultyConfig,
    JudgeConfig,
    JudgeMethod,
    PromptFormat,
)
from meds1.curation import QUESTION
from meds1.curation.annotators import Annotator
from meds1.curation.cache import AnnotationCache, annotate
from meds1.curation.llm import (
    FAILED,
    OK,
    UNPARSEABLE,
    Reply,
    ask,
    check_first_reply,
    check_not_all_failed,
    llm_spec,
    load_model,
    owed_request,
    preflight,
)
from meds1.curation.unusable import check_usable
from meds1.errors import UserError
from meds1.inference import Backend, Conversation, Generation, Sampling

CORRECT, INCORRECT, NO_ANSWER = "correct", "incorrect", "no_answer"
UNJUDGED = (UNPARSEABLE, FAILED, NO_ANSWER)
JUDGE_CORRECTION = "Your reply did not end with a single word Yes or No. Reply with one word: Yes or No."


def parse_verdict(reply: str) -> str | None:
    """`correct`/`incorrect` from a reply whose final word is Yes/No; None otherwise."""
    words = re.findall(r"[A-Za-z]+", reply)
    last = words[-1].lower() if words else ""
    return {"yes": CORRECT, "no": INCORRECT}.get(last)


STOPWORDS = frozenset("a an the of and or is are be to in on with for by as its it this that".split())  # noqa: SIM905
ANSWER_MARKER = re.compile(r"(?i:answer\s+is|answer\s*:)")
OPTION_LETTER = re.compile(r"(?i:answer\s+is|answer\s*:)\s*:?\s*[(*]*([A-J])(?![A-Za-z0-9])")


def _final_answer(text: str) -> str:
    markers = list(ANSWER_MARKER.finditer(text))
    if markers:
        return text[markers[-1].end() :]
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return paragraphs[-1] if paragraphs else ""


def _content_words(text: str) -> set[str]:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return {w for w in re.findall(r"[a-z0-9]+", ascii_text) if w not in STOPWORDS}


def match_verdict(answer: str, reference: str) -> str:
    """The offline `match` judge (see the module docstring)."""
    letters = [OPTION_LETTER.findall(text) for text in (answer, reference)]
    if letters[0] and letters[1]:
        return CORRECT if letters[0][-1] == letters[1][-1] else INCORRECT
    wanted = _content_words(_final_answer(reference))
    if not answer.strip() or not wanted:
        return UNPARSEABLE
    return CORRECT if wanted <= _content_words(_final_answer(answer)) else INCORRECT


def answers_spec(cfg: Config, source_fingerprint: str) -> dict:
    difficulty = cfg.curation.difficulty
    spec = {
        "source": source_fingerprint,
        "model": dataclasses.asdict(cfg.model),
        "prompt_format": difficulty.prompt_format.value,
        "prompt": difficulty.prompt,
        "max_new_tokens": difficulty.max_new_tokens,
        "temperature": difficulty.temperature,
        "top_p": difficulty.top_p,
        "frequency_penalty": difficulty.frequency_penalty,
        "stop": list(difficulty.stop),
    }
    if difficulty.temperature > 0:
        spec["seed"] = cfg.seed
    return spec


def verdicts_spec(judge: JudgeConfig, answers_key: str) -> dict:
    spec = {"answers": answers_key, "method": judge.method, "reference_column": judge.reference_column}
    if judge.method == "llm":
        spec |= llm_spec(judge.llm, judge.prompt)
    return spec


JUDGE_KEY = "curation.difficulty.judge"


def is_answered(cached: pd.DataFrame) -> pd.Series:
    """Cached answers worth keeping: a failed request is asked again."""
    return cached["base_answer_error"].isna()


def is_judged(cached: pd.DataFrame) -> pd.Series:
    """Cached verdicts worth keeping: a failed request, or a row without an answer, is judged again."""
    return ~cached["verdict"].isin([FAILED, NO_ANSWER])


def _check_reference(pool: pd.DataFrame, judge: JudgeConfig) -> None:
    if judge.reference_column not in pool.columns:
        raise UserError(
            f"{JUDGE_KEY}.reference_column {judge.reference_column!r} is not a source column; "
            f"valid: {', '.join(map(str, pool.columns))}"
        )


def preflight_base_model(base: Annotator, pool: pd.DataFrame, cfg: Config, source_fingerprint: str) -> int:
    """The base model's first question, sent alone before any annotation when a pre-flight is owed
    (meds1.curation.llm.owed_request); returns the requests sent (0 or 1)."""
    _check_reference(pool, cfg.curation.difficulty.judge)  # before anything is sent
    cache = AnnotationCache(cfg.paths.cache, "answers", answers_spec(cfg, source_fingerprint))
    row = owed_request(base, cache, pool["row_id"].tolist(), is_answered)
    if row is None:
        return 0
    backend = load_model(base.model, base.inference, cfg.paths.cache)
    try:
        question = pool.set_index("row_id").at[row, QUESTION]
        (generation,) = ask_base_model(backend, [question], cfg.curation.difficulty, cfg.seed)
    finally:
        backend.close()
    check_first_reply(base, Reply.of(generation.text, generation.error))
    return 1


def preflight_judge(judge: Annotator, pool: pd.DataFrame, cfg: Config, source_fingerprint: str) -> int:
    """The `llm` judge's first request, sent alone before any annotation when a pre-flight is owed: a
    row's reference compared with itself (no base-model answer exists yet). Returns the requests sent."""
    config = cfg.curation.difficulty.judge
    _check_reference(pool, config)
    answers_key = AnnotationCache(cfg.paths.cache, "answers", answers_spec(cfg, source_fingerprint)).key
    cache = AnnotationCache(cfg.paths.cache, "verdicts", verdicts_spec(config, answers_key))
    row = owed_request(judge, cache, pool["row_id"].tolist(), is_judged)
    if row is None:
        return 0
    question, reference = pool.set_index("row_id").loc[row, [QUESTION, config.reference_column]]
    conversation = judge_conversation(config, question, str(reference), str(reference))
    reply = preflight(judge, conversation, parse_verdict, cfg.paths.cache, JUDGE_CORRECTION, cfg.seed)
    return reply.attempts


def annotate_difficulty(
    pool: pd.DataFrame, cfg: Config, source_fingerprint: str
) -> tuple[pd.DataFrame, dict]:
    """Base answers and verdicts for every row of `pool` (cached), as columns indexed like `pool`.

    Stops (UserError) when too many rows got no answer, or no usable verdict (see the module docstring).
    """
    difficulty = cfg.curation.difficulty
    _check_reference(pool, difficulty.judge)
    by_id = pool.set_index("row_id")
    chunk = cfg.curation.annotation_chunk

    answers_cache = AnnotationCache(cfg.paths.cache, "answers", answers_spec(cfg, source_fingerprint))
    base_model = functools.cache(lambda: load_model(cfg.model, cfg.inference, cfg.paths.cache))

    def compute_answers(ids: list[int]) -> pd.DataFrame:
        generations = ask_base_model(base_model(), by_id.loc[ids, QUESTION].tolist(), difficulty, cfg.seed)
        check_not_all_failed(generations, "base model", "inference")
        return pd.DataFrame(
            {
                "row_id": ids,
                "base_answer": [g.text for g in generations],
                "base_answer_error": [g.error for g in generations],
            }
        )

    answers, answers_info = annotate(
        answers_cache,
        by_id.index,
        compute_answers,
        chunk,
        "base-model answers",
        final=is_answered,
    )
    check_usable(
        "base model",
        pd.Series(np.where(is_answered(answers), "answered", FAILED), index=answers.index),
        ["answered"],
        answers["base_answer_error"],
        "curation.difficulty.max_unusable_fraction",
        difficulty.max_unusable_fraction,
        str(answers_cache.dir),
    )

    judge = difficulty.judge
    verdicts_cache = AnnotationCache(cfg.paths.cache, "verdicts", verdicts_spec(judge, answers_cache.key))
    judge_model = functools.cache(
        lambda: load_model(
            judge.llm.model, judge.llm.inference, cfg.paths.cache, "curation.difficulty.judge.llm.model.path"
        )
    )

    def compute_verdicts(ids: list[int]) -> pd.DataFrame:
        rows = by_id.loc[ids].join(answers)
        return judge_rows(rows, judge, judge_model if judge.method == "llm" else None, cfg.seed)

    verdicts, verdicts_info = annotate(
        verdicts_cache,
        by_id.index,
        compute_verdicts,
        chunk,
        "judge verdicts",
        final=is_judged,
    )
    if judge.method == JudgeMethod.llm:  # `match` does not fail: its unparseable is an empty answer
        with_answer = verdicts[verdicts["verdict"] != NO_ANSWER]
        check_usable(
            "judge",
            with_answer["verdict"],
            [CORRECT, INCORRECT],
            with_answer["judge_reply"],
            f"{JUDGE_KEY}.max_unusable_fraction",
            judge.max_unusable_fraction,
            str(verdicts_cache.dir),
        )
    annotations = answers.join(verdicts).loc[pool["row_id"]]
    annotations.index = pool.index
    return annotations, {"answers": answers_info, "verdicts": verdicts_info}


def base_sampling(difficulty: DifficultyConfig, seed: int) -> Sampling:
    return Sampling(
        difficulty.max_new_tokens,
        temperature=difficulty.temperature,
        top_p=difficulty.top_p,
        seed=seed,
        stop=list(difficulty.stop),
        frequency_penalty=difficulty.frequency_penalty,
    )


def ask_base_model(
    backend: Backend, questions: list[str], difficulty: DifficultyConfig, seed: int
) -> list[Generation]:
    """The base model's answers, asked as `difficulty.prompt_format` says."""
    prompts = [difficulty.prompt.format(question=q) for q in questions]
    sampling = base_sampling(difficulty, seed)
    if difficulty.prompt_format == PromptFormat.raw:
        return backend.complete_raw(prompts, sampling)
    return backend.generate([[{"role": "user", "content": p}] for p in prompts], sampling)


def judge_conversation(judge: JudgeConfig, question: str, answer: str, reference: str) -> Conversation:
    return [
        {
            "role": "user",
            "content": judge.prompt.format(question=question, answer=answer, reference=reference),
        }
    ]


def judge_rows(rows: pd.DataFrame, judge: JudgeConfig, backend, seed: int) -> pd.DataFrame:
    """Verdicts for rows with `base_answer`, `base_answer_error`, the question and the reference.

    `backend` is a callable returning the judge's backend (loaded only when needed); None for `match`.
    """
    verdict = pd.Series(NO_ANSWER, index=rows.index, dtype=object)
    reply = pd.Series(None, index=rows.index, dtype=object)
    answered = rows.index[rows["base_answer_error"].isna()]
    references = rows[judge.reference_column].fillna("").astype(str)
    if judge.method == "match":
        for i in answered:
            verdict[i] = match_verdict(rows.at[i, "base_answer"], references[i])
    elif len(answered):
        conversations = [
            judge_conversation(judge, rows.at[i, QUESTION], rows.at[i, "base_answer"], references[i])
            for i in answered
        ]
        replies = ask(
            backend(),
            conversations,
            parse_verdict,
            JUDGE_CORRECTION,
            judge.llm,
            seed,
            "judge",
            f"{JUDGE_KEY}.llm",
        )
        for i, result in zip(answered, replies, strict=True):
            verdict[i] = result.value if result.status == OK else result.status
            reply[i] = result.text
    return pd.DataFrame(
        {"row_id": rows.index, "verdict": verdict.to_numpy(), "judge_reply": reply.to_numpy()}
    )
