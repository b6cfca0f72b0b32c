"""OpenAI-compatible HTTP backend: JSON over aiohttp under a concurrency limit, with the SDK's retries.

Requests are plain JSON posts to `/chat/completions` (chat turns) and `/completions` (raw text, which
the server encodes with its tokenizer's defaults: vLLM and `transformers serve` put BOS first). Why not
the `openai` SDK: its typed request models, header and URL objects and httpx's connection pool cost
~5 ms of client CPU per request and its import ~1.5 s, which bounded a 64-wide batch on a small machine
(bench/bench_traces.py); here a request costs ~0.7 ms.

Retries follow the official SDK's rules (openai-python `_base_client`: `_should_retry`,
`_calculate_retry_timeout`), up to `inference.max_retries`: connection errors, timeouts, 408, 409,
429 and 5xx are retried (an `x-should-retry` header overrides); the wait is what the server's
`retry-after-ms`/`Retry-After` header asks, up to 120 s (a longer ask is not retried), otherwise
0.5 s doubling up to 8 s, less 0-25% jitter. Gemini throttles with 429 + Retry-After.
`requests_per_minute` spaces the first attempts of requests. A request that still fails comes back as
a Generation with `error` set and empty text; the run goes on, and callers record the failure.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

from tqdm.auto import tqdm

from meds1.config.schema import InferenceConfig
from meds1.errors import UserError
from meds1.inference import Conversation, Generation, OnResult, Sampling

log = logging.getLogger(__name__)

RETRIED_STATUS = {408, 409, 429}
MAX_RETRY_AFTER_S = 120.0
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 8.0


class RequestFailed(Exception):
    """A request that got no usable reply; its message is the Generation's `error`."""


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
        self.base_url = inference.base_url.rstrip("/")
        self.proxy = env_proxy(self.base_url)
        self.engine = {"backend": "openai", "engine": inference.base_url, "served_model": self.model}

    def generate(
        self, conversations: list[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        def chat(conversation: Conversation) -> tuple[str, dict, Callable[[dict], str]]:
            body = {"messages": conversation, **request_body(self.model, sampling)}
            return "/chat/completions", body, lambda choice: choice["message"]["content"]

        return asyncio.run(self._run_all(conversations, chat, on_result))

    def complete_raw(
        self, prompts: list[str], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        def completion(prompt: str) -> tuple[str, dict, Callable[[dict], str]]:
            body = {"prompt": prompt, **request_body(self.model, sampling)}
            return "/completions", body, lambda choice: choice["text"]

        return asyncio.run(self._run_all(prompts, completion, on_result))

    def close(self) -> None:
        """Nothing to free: each call opens and closes its own session."""

    async def _run_all(
        self, items: list, request: Callable[..., tuple[str, dict, Callable[[dict], str]]], on_result
    ) -> list[Generation]:
        import aiohttp

        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        limiter = RateLimiter(self.config.requests_per_minute)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            headers={
                "Authorization": f"Bearer {self.config.api_key or 'unused'}",
                "Content-Type": "application/json",
            },
        )
        async with session:
            with tqdm(total=len(items), desc="generate", unit="request") as bar:

                async def one(index: int, item) -> Generation:
                    async with semaphore:
                        await limiter.wait()
                        generation = await self._generation(session, *request(item))
                    if on_result:
                        on_result(index, generation)
                    bar.update(1)
                    return generation

                generations = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        failed = sum(g.error is not None for g in generations)
        if failed:
            log.warning("openai: %d of %d requests failed", failed, len(generations))
        return list(generations)

    async def _generation(self, session, path: str, body: dict, text_of: Callable[[dict], str]) -> Generation:
        """One request with retries; any failure becomes the Generation's `error`."""
        try:
            reply = await self._post(session, path, body)
        except RequestFailed as exc:
            return Generation("", 0, 0, error=str(exc))
        try:
            choice = reply["choices"][0]
            usage = reply.get("usage") or {}
            return Generation(
                text_of(choice) or "",
                usage.get("prompt_tokens") or 0,
                usage.get("completion_tokens") or 0,
                finish_reason=choice.get("finish_reason"),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            return Generation("", 0, 0, error=f"malformed response: {exc!r}")

    async def _post(self, session, path: str, body: dict) -> dict:
        """The endpoint's JSON reply, after the retries the SDK would make (RequestFailed if none came)."""
        import aiohttp

        data = json.dumps(body).encode()
        attempts, attempt = self.config.max_retries + 1, 0
        while True:
            wait = None
            try:
                async with session.post(self.base_url + path, data=data, proxy=self.proxy) as response:
                    payload = await response.read()
                    if response.status < 300:
                        try:
                            return json.loads(payload)
                        except ValueError as exc:
                            raise RequestFailed(f"malformed response: {exc!r}") from None
                    error = f"HTTP {response.status}: {error_message(payload)[:200]}"
                    wait = retry_after_s(response.headers)
                    if not should_retry(response.status, response.headers, wait):
                        raise RequestFailed(error)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            attempt += 1
            if attempt == attempts:
                raise RequestFailed(f"failed after {attempts} attempts: {error}")
            asked = wait is not None and 0 < wait <= MAX_RETRY_AFTER_S
            await asyncio.sleep(wait if asked else backoff_s(attempt - 1))


def env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY/NO_PROXY name for `url`, looked up once (aiohttp's `trust_env`
    looks it up for every request, which doubled the client's CPU per request)."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def should_retry(status: int, headers, retry_after: float | None) -> bool:
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
        return False
    verdict = headers.get("x-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    return status in RETRIED_STATUS or status >= 500


def retry_after_s(headers) -> float | None:
    """Seconds the server asks to wait (`retry-after-ms`, then `Retry-After` as seconds or a date)."""
    for header, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            return float(headers[header]) / divisor
        except (KeyError, ValueError):
            continue
    date = email.utils.parsedate_tz(headers.get("retry-after") or "")
    return None if date is None else email.utils.mktime_tz(date) - time.time()


def backoff_s(attempt: int) -> float:
    return min(FIRST_BACKOFF_S * 2.0**attempt, MAX_BACKOFF_S) * (1 - 0.25 * random.random())


def error_message(payload: bytes) -> str:
    """The `error.message` of an OpenAI-style error body, else the body's text."""
    text = payload.decode(errors="replace")
    try:
        error = json.loads(text).get("error")
        return str(error.get("message", error) if isinstance(error, dict) else error or text)
    except (ValueError, AttributeError):
        return text
