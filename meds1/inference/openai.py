"""OpenAI-compatible HTTP backend: the official `openai` SDK's async client under a concurrency limit.

Retries are the SDK's (`inference.max_retries`): on connection errors, 408, 409, 429 and 5xx it
waits what the server's `Retry-After`/`retry-after-ms` header asks (up to the SDK's cap, 120 s in
openai 3.x; a longer wait is not retried), otherwise an exponential backoff of 0.5-8 s with jitter.
Gemini throttles with 429 + Retry-After. `requests_per_minute` spaces the first attempts of
requests (retries follow the SDK's waits). A request that still fails comes back as a Generation
with `error` set and empty text; the run goes on, and callers record the failure.

`generate` sends chat turns to `/chat/completions`; `complete_raw` sends plain text to
`/completions`, which the server encodes with its tokenizer's defaults (vLLM and `transformers
serve` put BOS first). Requests go through the SDK client's `post` (its auth, retries and errors)
with JSON encoded and decoded here: its typed request and response models (and its copies of them)
cost ~2 ms of CPU per request, which bounded a 64-wide batch on a small machine (bench/bench_traces.py).
The client's connection pool is sized to `max_concurrency`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from tqdm.auto import tqdm

from meds1.config import InferenceConfig
from meds1.errors import UserError
from meds1.inference import Conversation, Generation, OnResult, Sampling

log = logging.getLogger(__name__)

# The statuses the SDK retries (openai._base_client.BaseClient._should_retry), to word the error.
RETRIED_STATUS = {408, 409, 429}


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart (no limit when rpm is None)."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            delay = self.next_start - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.next_start = time.monotonic() + self.interval


def request_body(model: str, sampling: Sampling) -> dict:
    """The sampling fields of a request; unset top_p and a zero penalty are left to the server."""
    body = {
        "model": model,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "seed": sampling.seed,
    }
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    if sampling.frequency_penalty:
        body["frequency_penalty"] = sampling.frequency_penalty
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    return body


class OpenAIBackend:
    def __init__(self, model: str, inference: InferenceConfig):
        if not inference.base_url:
            raise UserError("inference.base_url is not set (or set OPENAI_BASE_URL) for the openai backend")
        self.model = inference.served_model or model
        self.config = inference
        self.engine = {"backend": "openai", "engine": inference.base_url, "served_model": self.model}

    def generate(
        self, conversations: list[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        async def chat(client, conversation: Conversation) -> Generation:
            reply = await _post(
                client, "/chat/completions", {"messages": conversation, **request_body(self.model, sampling)}
            )
            choice = reply["choices"][0]
            return _generation(choice["message"]["content"], reply.get("usage"), choice.get("finish_reason"))

        return asyncio.run(self._run_all(conversations, chat, on_result))

    def complete_raw(
        self, prompts: list[str], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        async def completion(client, prompt: str) -> Generation:
            reply = await _post(
                client, "/completions", {"prompt": prompt, **request_body(self.model, sampling)}
            )
            choice = reply["choices"][0]
            return _generation(choice["text"], reply.get("usage"), choice.get("finish_reason"))

        return asyncio.run(self._run_all(prompts, completion, on_result))

    def close(self) -> None:
        """Nothing to free: each call opens and closes its own client."""

    async def _run_all(
        self, items: list, request: Callable[..., Awaitable[Generation]], on_result: OnResult | None
    ) -> list[Generation]:
        import httpx2  # the openai SDK's HTTP library (3.x)
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        limiter = RateLimiter(self.config.requests_per_minute)
        width = self.config.max_concurrency
        client = AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key or "unused",  # local servers need none; the SDK insists on one
            max_retries=self.config.max_retries,
            timeout=self.config.timeout_s,
            http_client=DefaultAsyncHttpxClient(
                limits=httpx2.Limits(max_connections=width, max_keepalive_connections=width)
            ),
        )
        async with client:
            with tqdm(total=len(items), desc="generate", unit="request") as bar:

                async def one(index: int, item) -> Generation:
                    async with semaphore:
                        await limiter.wait()
                        generation = await self._attempt(request, client, item)
                    if on_result:
                        on_result(index, generation)
                    bar.update(1)
                    return generation

                generations = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        failed = sum(g.error is not None for g in generations)
        if failed:
            log.warning("openai: %d of %d requests failed", failed, len(generations))
        return list(generations)

    async def _attempt(self, request: Callable[..., Awaitable[Generation]], client, item) -> Generation:
        """One request with the SDK's retries; any failure becomes the Generation's `error`."""
        import openai

        tries = f"failed after {self.config.max_retries + 1} attempts"
        try:
            return await request(client, item)
        except openai.APIStatusError as exc:
            retried = exc.status_code in RETRIED_STATUS or exc.status_code >= 500
            error = f"HTTP {exc.status_code}: {str(exc.message)[:200]}"
            return Generation("", 0, 0, error=f"{tries}: {error}" if retried else error)
        except openai.APIConnectionError as exc:
            return Generation("", 0, 0, error=f"{tries}: {type(exc).__name__}: {exc}")
        except (openai.OpenAIError, KeyError, IndexError, TypeError, ValueError) as exc:
            return Generation("", 0, 0, error=f"malformed response: {exc!r}")


async def _post(client, path: str, body: dict) -> dict:
    """The endpoint's JSON reply to `body` at `path` (a reply that is not JSON raises ValueError)."""
    return json.loads(await client.post(path, content=json.dumps(body).encode(), cast_to=str))


def _generation(text: str | None, usage: dict | None, finish_reason: str | None) -> Generation:
    return Generation(
        text or "",
        (usage or {}).get("prompt_tokens") or 0,
        (usage or {}).get("completion_tokens") or 0,
        finish_reason=finish_reason,
    )
