"""Ask a model for a parseable reply (the judge's Yes/No, the labeler's `SPECIALTY: NNN`), and the one
pre-flight of every annotator (meds1/curation/annotators.py), the trace LLM's included.

A reply that cannot be parsed is answered with a correction turn (without one, the same conversation
is asked again with the next seed) up to `attempts` times, in batches (one backend call per round). A
request the backend could not complete (it has already retried with backoff) is recorded as `failed`
(and asked again by the next run); a reply still unparseable after every attempt as `unparseable`.
Nothing here raises for a bad reply; only when every request of a sizeable batch fails -- a wrong URL,
key or model name, not a hiccup -- does the run stop, with the error, rather than record thousands of
failures.

Before that, an annotator's first request goes alone (a pre-flight), so a broken endpoint or a model
that does not answer as asked stops the stage in seconds, not after a night of retries. A pre-flight is
owed only while the endpoint has not answered under the annotator's cache key (`owed_request`): once it
has, a cached rerun sends nothing, and a row's own failure (a refusal, a too-long text) never stops a
rerun. `check_first_reply` stops the stage on a failed or unusable first reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from meds1.config.schema import InferenceConfig, LLMConfig, ModelConfig
from meds1.curation.annotators import Annotator
from meds1.curation.cache import AnnotationCache, kept
from meds1.curation.unusable import cut
from meds1.errors import UserError
from meds1.hub import HubReadError
from meds1.inference import Backend, Conversation, Generation, Sampling

OK, UNPARSEABLE, FAILED = "ok", "unparseable", "failed"
ALL_FAILED_MIN = 8  # a batch at least this large in which every request failed is a setup error


@dataclass
class Reply:
    """What an annotator's request came back with."""

    value: str | None  # the parsed value (None unless status is "ok")
    status: str  # ok | unparseable | failed
    text: str  # the last reply, or the backend's error for a failed request
    attempts: int = 1
    problem: str | None = None  # why an unusable reply is unusable, when a check says (else: unparseable)

    @classmethod
    def of(cls, text: str, error: str | None = None) -> Reply:
        """A reply any text will do for (a base-model answer, a trace request): ok, or failed with `error`."""
        return cls(None, FAILED, error) if error is not None else cls(text, OK, text)


def load_model(
    model: ModelConfig, inference: InferenceConfig, cache_dir: str, model_key: str = "model.path"
) -> Backend:
    """The backend serving `model` as `inference` says (an annotator's `model` and `inference`);
    `model_key` names the setting of `model.path` in a hub error."""
    from meds1.inference import load_backend
    from meds1.models import model_path

    try:
        return load_backend(inference, model, model_path(model, cache_dir))
    except HubReadError as error:
        raise error.named(model_key) from None


def llm_spec(llm: LLMConfig, prompt: str) -> dict:
    """What decides an LLM's replies, for the annotation cache key."""
    spec = {
        "model": dataclasses.asdict(llm.model),
        "prompt": prompt,
        "max_new_tokens": llm.max_new_tokens,
        "temperature": llm.temperature,
        "attempts": llm.attempts,
        **({"top_p": llm.top_p} if llm.top_p is not None else {}),  # unset: the keys cached before it existed
    }
    if llm.inference.served_model:  # another model answers: its replies are not the model's
        spec["served_model"] = llm.inference.served_model
    return spec


def check_endpoint_hint(inference_key: str = "") -> str:
    """What to check when requests fail; `inference_key` names the backend's config (e.g. `inference`)."""
    url = f"{inference_key}.base_url" if inference_key else "base_url"
    return f"check its endpoint ({url}), api_key and model name"


def check_not_all_failed(generations: list[Generation], what: str, inference_key: str = "") -> None:
    errors = [g.error for g in generations]
    if len(errors) >= ALL_FAILED_MIN and all(errors):
        raise UserError(
            f"all {len(errors)} requests to the {what} failed, e.g. {errors[0]}; "
            + check_endpoint_hint(inference_key)
        )


def owed_request(
    annotator: Annotator,
    cache: AnnotationCache,
    wanted: Sequence[int],
    answered: Callable[[pd.DataFrame], pd.Series],
) -> int | None:
    """The request (an id of `wanted`, the rows about to be asked) that `annotator`'s pre-flight sends,
    or None when none is owed: only an endpoint is pre-flown, and only while no reply cached under its
    key is `answered` (see the module docstring). The first of `wanted` never asked goes, else the first
    (every one of them failed before: the endpoint was dead)."""
    if not annotator.endpoint or not len(wanted):
        return None
    cached = cache.load()
    if len(kept(cached, answered)):
        return None
    return next((i for i in wanted if i not in cached.index), wanted[0])


def check_first_reply(annotator: Annotator, reply: Reply, request: str = "") -> None:
    """Stop the stage when `annotator`'s first request failed (refused connection, auth error, unknown
    model), or when its reply is unusable (`unparseable`) and `annotator.limit` does not accept every
    unusable reply. `request` names the request, where the annotator sends several kinds."""
    if reply.status == FAILED:
        raise UserError(
            f"the first request to the {annotator.name} failed: {reply.text}; "
            + check_endpoint_hint(annotator.inference_key)
        )
    if reply.status == UNPARSEABLE and annotator.limit < 1:
        where = f" ({request})" if request else ""
        why = f": {reply.problem}" if reply.problem else f" after {reply.attempts} attempt(s)"
        raise UserError(
            f"the {annotator.name}'s reply to its first request{where} is unusable{why}: {cut(reply.text)}; "
            f"check {annotator.key} (model name, endpoint) and {annotator.prompt}, "
            f"or accept {annotator.unusable}: {annotator.limit_key}=1"
        )


def preflight(
    annotator: Annotator,
    conversation: Conversation,
    parse: Callable[[str], str | None],
    cache_dir: str,
    correction: str | None = None,
    seed: int = 0,
) -> Reply:
    """Send a judge's or labeler's first conversation alone, before annotating (see `check_first_reply`);
    any reply will do when its limit accepts every unusable one."""
    model_key = f"{annotator.key}.model.path" if annotator.llm is not None else "model.path"
    backend = load_model(annotator.model, annotator.inference, cache_dir, model_key)
    if annotator.limit >= 1:
        parse = str
    try:
        (reply,) = ask(
            backend, [conversation], parse, correction, annotator.llm, seed, annotator.name, annotator.key
        )
    finally:
        backend.close()
    check_first_reply(annotator, reply)
    return reply


def ask(
    backend: Backend,
    conversations: list[Conversation],
    parse: Callable[[str], str | None],
    correction: str | None,
    llm: LLMConfig,
    seed: int,
    what: str = "model",
    key: str = "",
) -> list[Reply]:
    """Replies to `conversations`; `what` and `key` (the LLM's config key) name the annotator in errors."""
    replies: list[Reply | None] = [None] * len(conversations)
    conversations = list(conversations)
    pending = list(range(len(conversations)))
    for attempt in range(1, max(1, llm.attempts) + 1):
        sampling = Sampling(llm.max_new_tokens, llm.temperature, llm.top_p, seed=seed + attempt - 1)
        generations = backend.generate([conversations[i] for i in pending], sampling)
        check_not_all_failed(generations, what, f"{key}.inference" if key else "")
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
