"""Generation backends behind one small interface: conversations and sampling settings in, texts out.

`hf` (transformers generate; CPU, the demo, small models) lives here; `vllm` and `openai` plug in
the same way. Each backend applies the model's chat template with the generation prompt added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from meds1.config import InferenceConfig, ModelConfig
from meds1.errors import UserError

Conversation = list[dict[str, str]]


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    error: str | None = None  # set when the backend failed for this prompt (text is then "")


class Backend(Protocol):
    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[Generation]: ...


BACKENDS = ("hf", "openai")


def load_backend(inference: InferenceConfig, model: ModelConfig, path: str) -> Backend:
    """The configured backend serving the model at `path` (a local dir or hub id)."""
    if inference.backend == "hf":
        from meds1.inference.hf import HFBackend

        return HFBackend(path, model, inference)
    if inference.backend == "openai":
        from meds1.inference.openai import OpenAIBackend

        return OpenAIBackend(path, inference)
    raise UserError(f"unknown inference backend {inference.backend!r}; valid: {', '.join(BACKENDS)}")
