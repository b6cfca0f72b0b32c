"""Ask a model for a parseable reply: the judge's Yes/No and the labeler's `SPECIALTY: NNN`.

A reply that cannot be parsed is answered with a correction turn (without one, the same conversation
is asked again with the next seed) up to `attempts` times, in batches (one backend call per round). A
request the backend could not complete (it has already retried with backoff) is recorded as `failed`
(and asked again by the next run); a reply still unparseable after every attempt as `unparseable`.
Nothing here raises for a bad reply; only when every request of a sizeable batch fails -- a wrong URL,
key or model name, not a hiccup -- does the run stop, with the error, rather than record thousands of
failures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from meds1.config import LLMConfig
from meds1.errors import UserError
from meds1.inference import Backend, Conversation, Generation, Sampling

OK, UNPARSEABLE, FAILED = "ok", "unparseable", "failed"
ALL_FAILED_MIN = 8  # a batch at least this large in which every request failed is a setup error


@dataclass
class Reply:
    value: str | None  # the parsed value (None unless status is "ok")
    status: str  # ok | unparseable | failed
    text: str  # the last reply, or the backend's error for a failed request
    attempts: int


def load_llm(llm: LLMConfig, cache_dir: str, key: str) -> Backend:
    """The backend serving `llm`; `key` (e.g. curation.difficulty.judge.llm) names it in errors."""
    from meds1.inference import load_backend
    from meds1.models import model_path

    if llm.inference.backend == "openai" and not llm.inference.base_url:
        raise UserError(f"{key}.inference.base_url is not set (the endpoint serving {llm.model.path})")
    return load_backend(llm.inference, llm.model, model_path(llm.model, cache_dir))


def llm_spec(llm: LLMConfig, prompt: str) -> dict:
    """What decides an LLM's replies, for the annotation cache key."""
    return {
        "model": dataclasses.asdict(llm.model),
        "prompt": prompt,
        "max_new_tokens": llm.max_new_tokens,
        "temperature": llm.temperature,
        "attempts": llm.attempts,
        **({"top_p": llm.top_p} if llm.top_p is not None else {}),  # unset: the keys cached before it existed
    }


def check_not_all_failed(generations: list[Generation], what: str) -> None:
    errors = [g.error for g in generations]
    if len(errors) >= ALL_FAILED_MIN and all(errors):
        raise UserError(
            f"all {len(errors)} requests to the {what} failed, e.g. {errors[0]}; "
            "check its endpoint (base_url), api_key and model name"
        )


def ask(
    backend: Backend,
    conversations: list[Conversation],
    parse: Callable[[str], str | None],
    correction: str | None,
    llm: LLMConfig,
    seed: int,
    what: str = "model",
) -> list[Reply]:
    replies: list[Reply | None] = [None] * len(conversations)
    conversations = list(conversations)
    pending = list(range(len(conversations)))
    for attempt in range(1, max(1, llm.attempts) + 1):
        sampling = Sampling(llm.max_new_tokens, llm.temperature, llm.top_p, seed=seed + attempt - 1)
        generations = backend.generate([conversations[i] for i in pending], sampling)
        check_not_all_failed(generations, what)
        retry = []
        for i, generation in zip(pending, generations, strict=True):
            if generation.error is not None:
                replies[i] = Reply(None, FAILED, generation.error, attempt)
                continue
            value = parse(generation.text)
            if value is not None:
                replies[i] = Reply(value, OK, generation.text, attempt)
                continue
            replies[i] = Reply(None, UNPARSEABLE, generation.text, attempt)
            if correction is not None:
                conversations[i] = [
                    *conversations[i],
                    {"role": "assistant", "content": generation.text},
                    {"role": "user", "content": correction},
                ]
            retry.append(i)
        pending = retry
        if not pending:
            break
    return replies
