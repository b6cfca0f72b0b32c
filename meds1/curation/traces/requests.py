"""The trace LLM's requests, each asked once: cached by the request's own text.

A request is one user turn; its cache id is a hash of its text, under a cache key for the prompt
template it fills, the token cap, the model and sampling (`curation.trace.llm`) and the seed.
Whatever produced the text -- the source row, the transforms before it, a perturbation -- is in the
text, so every experiment that needs the same rewrite (the 15 points of a perturbation sweep need the
same 1,000 step rewrites) finds it cached, and a rerun sends nothing. The requests go through the
annotation cache (meds1/curation/cache.py) in chunks of `curation.annotation_chunk`: a crash loses at
most one chunk, and a failed request (after the backend's retries) is recorded, not cached, so the next
run asks again.

Before the chain sends its first batch, `first_unanswered` picks one request for the pre-flight
(calls.py): the first of a call's requests never asked under its key. A request that failed before is
asked again, but not as the pre-flight when the endpoint answered under this key already: a row's own
failure (a refusal, a too-long text) would otherwise stop every rerun. When every request under the key
failed (a dead endpoint), the first of them is the pre-flight.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import pandas as pd

from meds1.config.schema import InferenceBackend, LLMConfig
from meds1.curation.cache import AnnotationCache, annotate
from meds1.curation.llm import check_not_all_failed, load_llm
from meds1.inference import Sampling

LLM_KEY = "curation.trace.llm"


@dataclass
class Reply:
    text: str
    error: str | None = None


def request_id(prompt: str) -> int:
    """A stable 60-bit id of a request's text (the annotation cache addresses rows by integer ids)."""
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:15], 16)


class TraceLLM:
    """Asks `curation.trace.llm`, loading its backend only when a request is not cached."""

    def __init__(
        self, llm: LLMConfig, cache_dir: str, seed: int, chunk_rows: int, accept_unusable: bool = False
    ):
        self.llm = llm
        self.accept_unusable = accept_unusable  # a pre-flight reply the checks reject does not stop
        self.seed = seed
        self.chunk_rows = chunk_rows
        self.spec = {
            "model": dataclasses.asdict(llm.model),
            "temperature": llm.temperature,
            "top_p": llm.top_p,
            "seed": seed,
        }
        self.cache_dir = cache_dir
        self._backend = None
        self.counts = {"requests": 0, "reused": 0, "sent": 0, "preflight": 0}
        self.preflown: set[int] = set()  # the pre-flight's request until its batch reuses it

    def cache(self, template: str, max_new_tokens: int | None) -> AnnotationCache:
        """Each template's requests are a cache key of their own, so a key stays small and jobs of
        different transforms do not wait for each other's lock."""
        tokens = max_new_tokens or self.llm.max_new_tokens
        return AnnotationCache(
            self.cache_dir, "trace-requests", {**self.spec, "template": template, "max_new_tokens": tokens}
        )

    def first_unanswered(self, prompts: list[str], template: str, max_new_tokens: int | None) -> str | None:
        """The request for the chain's pre-flight, while no pre-flight was sent and the LLM is an
        endpoint (`openai`): the first of `prompts` never asked under this key, else (all were asked)
        the first, if the endpoint never answered under this key; otherwise None."""
        if self.counts["preflight"] or self.llm.inference.backend != InferenceBackend.openai or not prompts:
            return None
        cached = self.cache(template, max_new_tokens).load()
        never_asked = next((p for p in prompts if request_id(p) not in cached.index), None)
        if never_asked is not None or not len(cached) or cached["error"].isna().any():
            return never_asked
        return prompts[0]

    def preflight(self, prompt: str, template: str, max_new_tokens: int | None, desc: str) -> Reply:
        """Ask `prompt` alone (cached like any request: its batch reuses the reply)."""
        (reply,) = self.ask([prompt], template, max_new_tokens, f"{desc} (pre-flight)", count=False)
        self.preflown.add(request_id(prompt))
        self.counts["preflight"] += 1
        return reply

    def ask(
        self, prompts: list[str], template: str, max_new_tokens: int | None, desc: str, count: bool = True
    ) -> list[Reply]:
        """One reply per prompt (in order; identical prompts are asked once)."""
        tokens = max_new_tokens or self.llm.max_new_tokens
        cache = self.cache(template, tokens)
        ids = [request_id(p) for p in prompts]
        unique = dict(zip(ids, prompts, strict=True))
        if not unique:
            return []
        sampling = Sampling(tokens, temperature=self.llm.temperature, top_p=self.llm.top_p, seed=self.seed)

        def compute(batch: list[int]) -> pd.DataFrame:
            conversations = [[{"role": "user", "content": unique[i]}] for i in batch]
            if self._backend is None:
                self._backend = load_llm(self.llm, self.cache_dir, LLM_KEY)
            generations = self._backend.generate(conversations, sampling)
            check_not_all_failed(generations, "trace LLM", f"{LLM_KEY}.inference")
            return pd.DataFrame(
                {
                    "row_id": batch,
                    "reply": [g.text for g in generations],
                    "error": [g.error for g in generations],
                    "finish_reason": [g.finish_reason for g in generations],
                }
            )

        replies, info = annotate(
            cache,
            list(unique),
            compute,
            self.chunk_rows,
            desc,
            final=lambda cached: cached["error"].isna(),
        )
        if count:
            early = len(self.preflown.intersection(unique))  # sent this run, by the pre-flight
            self.preflown.difference_update(unique)
            self.counts["requests"] += len(unique)
            self.counts["reused"] += info["reused"] - early
            self.counts["sent"] += info["computed"] + early
        by_id = {
            i: Reply(text or "", error if isinstance(error, str) else None)
            for i, text, error in zip(replies.index, replies["reply"], replies["error"], strict=True)
        }
        return [by_id[i] for i in ids]

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
