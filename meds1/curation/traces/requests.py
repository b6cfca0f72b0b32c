"""The trace LLM's requests, each asked once: cached by the request's own text.

A request is one user turn; its cache id is a hash of its text, under a cache key for the prompt
template it fills, the token cap, the model and sampling (`curation.trace.llm`) and the seed.
Whatever produced the text -- the source row, the transforms before it, a perturbation -- is in the
text, so every experiment that needs the same rewrite (the 15 points of a perturbation sweep need the
same 1,000 step rewrites) finds it cached, and a rerun sends nothing. The requests go through the
annotation cache (meds1/curation/cache.py) in chunks of `curation.annotation_chunk`: a crash loses at
most one chunk, and a failed request (after the backend's retries) is recorded, not cached, so the next
run asks again.

Before the chain sends a batch, `first_unanswered` picks the request a pre-flight sends alone, if one
is owed (meds1.curation.llm.owed_request: while the endpoint has not answered under the request's key;
one per run). `counts` records every request sent, the pre-flight's included.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pandas as pd

from meds1.curation.annotators import Annotator
from meds1.curation.cache import AnnotationCache, annotate
from meds1.curation.llm import Reply, check_not_all_failed, load_model, owed_request
from meds1.inference import Sampling


def request_id(prompt: str) -> int:
    """A stable 60-bit id of a request's text (the annotation cache addresses rows by integer ids)."""
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:15], 16)


class TraceLLM:
    """Asks the trace LLM (`curation.trace.llm`), loading its backend only when a request is not cached.

    `counts`: `requests` the chain asked (each distinct text once per call), `reused` of them answered
    by an earlier run, `sent` every request that went to the endpoint (pre-flights included) and
    `preflight` the pre-flights."""

    def __init__(self, annotator: Annotator, cache_dir: str, seed: int, chunk_rows: int):
        self.annotator = annotator
        self.llm = annotator.llm
        self.seed = seed
        self.chunk_rows = chunk_rows
        self.spec = {
            "model": dataclasses.asdict(self.llm.model),
            "temperature": self.llm.temperature,
            "top_p": self.llm.top_p,
            "seed": seed,
        }
        self.cache_dir = cache_dir
        self._backend = None
        self.counts = {"requests": 0, "reused": 0, "sent": 0, "preflight": 0}
        self.preflown: set[int] = set()  # a pre-flight's request until its batch reuses it

    def cache(self, template: str, max_new_tokens: int | None) -> AnnotationCache:
        """Each template's requests are a cache key of their own, so a key stays small and jobs of
        different transforms do not wait for each other's lock."""
        tokens = max_new_tokens or self.llm.max_new_tokens
        return AnnotationCache(
            self.cache_dir, "trace-requests", {**self.spec, "template": template, "max_new_tokens": tokens}
        )

    def first_unanswered(self, prompts: list[str], template: str, max_new_tokens: int | None) -> str | None:
        """The request of `prompts` a pre-flight sends alone, or None: one is owed while no pre-flight
        went this run and the endpoint has not answered under this key (`owed_request`)."""
        if self.counts["preflight"]:
            return None
        by_id = {request_id(p): p for p in prompts}
        cache = self.cache(template, max_new_tokens)
        chosen = owed_request(self.annotator, cache, list(by_id), lambda cached: cached["error"].isna())
        return None if chosen is None else by_id[chosen]

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
                self._backend = load_model(
                    self.llm.model, self.llm.inference, self.cache_dir, "curation.trace.llm.model.path"
                )
            self.counts["sent"] += len(batch)
            generations = self._backend.generate(conversations, sampling)
            check_not_all_failed(generations, self.annotator.name, self.annotator.inference_key)
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
            early = len(self.preflown.intersection(unique))  # sent this run, by a pre-flight
            self.preflown.difference_update(unique)
            self.counts["requests"] += len(unique)
            self.counts["reused"] += info["reused"] - early
        by_id = {
            i: Reply.of(text or "", error if isinstance(error, str) else None)
            for i, text, error in zip(replies.index, replies["reply"], replies["error"], strict=True)
        }
        return [by_id[i] for i in ids]

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
