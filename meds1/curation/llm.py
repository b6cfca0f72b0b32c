"""Ask a model for a parseable reply: the judge's Yes/No and the labeler's `SPECIALTY: NNN`.

A reply that cannot be parsed is answered with a correction turn (without one, the same conversation
is asked again with the next seed) up to `attempts` times, in batches (one backend call per round). A
request the backend could not complete (it has already retried with backoff) is recorded as `failed`
(and asked again by the next run); a reply still unparseable after every attempt as `unparseable`.
Nothing here raises for a bad reply; only when every request of a sizeable batch fails -- a wrong URL,
key or model name, not a hiccup -- does the run stop, with the error, rather than record thousands of
failures. Before that, `preflight` sends an annotator's first request alone, so a broken endpoint or a
model that does not answer as asked stops the stage in seconds, not after a night of retries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from meds1.config.schema import InferenceBackend, LLMConfig
from meds1.curation.unusable import cut
from meds1.errors import UserError
from meds1.hub import HubReadError
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
    try:
        return load_backend(llm.inference, llm.model, model_path(llm.model, cache_dir))
    except HubReadError as error:
        raise error.named(f"{key}.model.path") from None


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


def preflight(
    llm: LLMConfig,
    conversation: Conversation,
    parse: Callable[[str], str | None] | None,
    what: str,
    key: str,
    accept_key: str,
    cache_dir: str,
    correction: str | None = None,
    seed: int = 0,
) -> Reply | None:
    """Send an annotator's first conversation alone, before annotating; stop the stage if it fails.

    `key` names the LLM's config (e.g. curation.specialty.llm). A failed request (refused connection,
    auth error, unknown model) stops the stage; so does a reply `parse` cannot use after `llm.attempts`
    (None: any reply will do), naming `accept_key`, the annotator's limit on unusable replies. Only
    the `openai` backend makes requests; a local model is not asked (None).
    """
    if llm.inference.backend != InferenceBackend.openai:
        return None
    backend = load_llm(llm, cache_dir, key)
    (reply,) = ask(backend, [conversation], parse or (lambda text: text), correction, llm, seed, what, key)
    if reply.status == FAILED:
        raise UserError(
            f"the first request to the {what} failed: {reply.text}; {check_endpoint_hint(f'{key}.inference')}"
        )
    if reply.status == UNPARSEABLE:
        raise UserError(
            f"the {what}'s reply to its first request is unusable after {reply.attempts} attempt(s): "
            f"{cut(reply.text)}; check {key} (model name, endpoint) and its prompt, "
            f"or accept unusable replies: {accept_key}=1"
        )
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
