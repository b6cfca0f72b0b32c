"""OpenAI-compatible HTTP backend: async requests under a concurrency limit, retries with backoff.

A request that still fails after its retries comes back as a Generation with `error` set and empty
text; the run goes on, and callers record the failure.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx
from tqdm.auto import tqdm

from meds1.config import InferenceConfig
from meds1.errors import UserError
from meds1.inference import Conversation, Generation, OnResult, Sampling

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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


class OpenAIBackend:
    def __init__(self, model: str, inference: InferenceConfig):
        if not inference.base_url:
            raise UserError("inference.base_url is not set (or set OPENAI_BASE_URL) for the openai backend")
        self.url = inference.base_url.rstrip("/") + "/chat/completions"
        self.model = inference.served_model or model
        self.headers = {"Authorization": f"Bearer {inference.api_key}"} if inference.api_key else {}
        self.config = inference

    def generate(
        self, conversations: list[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        return asyncio.run(self._generate_all(conversations, sampling, on_result))

    def close(self) -> None:
        """Nothing to free: each generate() call opens and closes its own connections."""

    async def _generate_all(
        self, conversations: list[Conversation], sampling: Sampling, on_result: OnResult | None
    ) -> list[Generation]:
        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        limiter = RateLimiter(self.config.requests_per_minute)
        timeout = httpx.Timeout(self.config.timeout_s, connect=min(10.0, self.config.timeout_s))
        async with httpx.AsyncClient(timeout=timeout, headers=self.headers) as client:
            with tqdm(total=len(conversations), desc="generate", unit="request") as bar:

                async def one(index: int, conversation: Conversation) -> Generation:
                    async with semaphore:
                        generation = await self._request(client, limiter, conversation, sampling)
                    if on_result:
                        on_result(index, generation)
                    bar.update(1)
                    return generation

                generations = await asyncio.gather(*(one(i, c) for i, c in enumerate(conversations)))
        failed = sum(g.error is not None for g in generations)
        if failed:
            log.warning("openai: %d of %d requests failed after retries", failed, len(generations))
        return list(generations)

    async def _request(
        self, client: httpx.AsyncClient, limiter: RateLimiter, conversation: Conversation, sampling: Sampling
    ) -> Generation:
        payload = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
        }
        if sampling.stop:
            payload["stop"] = sampling.stop
        error = "no attempt made"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                backoff = self.config.retry_backoff_s * 2 ** (attempt - 1)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            await limiter.wait()
            try:
                response = await client.post(self.url, json=payload)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                error = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                return Generation("", 0, 0, error=f"HTTP {response.status_code}: {response.text[:200]}")
            try:
                data = response.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                error = f"malformed response: {exc!r}"
                continue
            usage = data.get("usage") or {}
            return Generation(
                text,
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
                finish_reason=choice.get("finish_reason"),
            )
        return Generation("", 0, 0, error=f"failed after {self.config.max_retries + 1} attempts: {error}")
