"""The models a curation asks, in one table: the base model (difficulty filter), the judge, the
specialty labeler and the trace LLM; and the judge RL's `judge` reward asks (`rl_judge`).

The config rules read it (a backend that must be installed, an endpoint that must be named), so do
the curate job's resources (the GPUs of a model it runs itself: meds1/curation/resources.py) and the
pre-flights (an endpoint's first request goes alone: meds1/curation/preflight.py). Cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass

from meds1.config.schema import (
    Config,
    InferenceBackend,
    InferenceConfig,
    JudgeMethod,
    LLMConfig,
    ModelConfig,
    SpecialtyMethod,
)
from meds1.curation.pool import pool_filters
from meds1.curation.traces.spec import calls_llm

BASE_MODEL, JUDGE, LABELER, TRACE_LLM = "base model", "judge", "specialty labeler", "trace LLM"
RL_JUDGE = "RL judge"


@dataclass(frozen=True)
class Annotator:
    name: str  # as messages name it
    key: str  # the config of its model and how it is asked
    model: ModelConfig
    inference: InferenceConfig
    asked: bool  # whether this curation asks it anything
    limit_key: str  # the share of rows it may leave unusable (1: any, its first reply's too)
    limit: float
    llm: LLMConfig | None = None  # its sampling and attempts (the base model's: curation.difficulty)
    prompt: str = "its prompt"  # where its prompt is set, as messages name it
    unusable: str = "unusable replies"  # what `limit_key`=1 accepts, as messages name it

    @property
    def inference_key(self) -> str:
        return f"{self.key}.inference" if self.llm is not None else "inference"

    @property
    def endpoint(self) -> bool:
        """Asked over HTTP (an OpenAI-compatible endpoint): the job needs none of its GPUs, and its first
        request can go alone. A local model (hf, vllm) runs inside the curate job."""
        return self.inference.backend == InferenceBackend.openai


def annotators(cfg: Config) -> dict[str, Annotator]:
    """Every annotator by name, in the order curate asks them."""
    curation = cfg.curation
    difficulty = "difficulty" in pool_filters(curation)
    judge, labeler, trace = curation.difficulty.judge, curation.specialty, curation.trace
    table = [
        Annotator(
            BASE_MODEL,
            "model",
            cfg.model,
            cfg.inference,
            difficulty,
            "curation.difficulty.max_unusable_fraction",
            curation.difficulty.max_unusable_fraction,
        ),
        Annotator(
            JUDGE,
            "curation.difficulty.judge.llm",
            judge.llm.model,
            judge.llm.inference,
            difficulty and judge.method == JudgeMethod.llm,
            "curation.difficulty.judge.max_unusable_fraction",
            judge.max_unusable_fraction,
            judge.llm,
        ),
        Annotator(
            LABELER,
            "curation.specialty.llm",
            labeler.llm.model,
            labeler.llm.inference,
            labeler.method == SpecialtyMethod.llm,
            "curation.specialty.max_unusable_fraction",
            labeler.max_unusable_fraction,
            labeler.llm,
        ),
        Annotator(
            TRACE_LLM,
            "curation.trace.llm",
            trace.llm.model,
            trace.llm.inference,
            calls_llm(trace),
            "curation.trace.max_failed_fraction",
            trace.max_failed_fraction,
            trace.llm,
            prompt="the transform's prompt",
            unusable="untransformed rows",
        ),
    ]
    return {annotator.name: annotator for annotator in table}


def rl_judge(cfg: Config) -> Annotator:
    """The judge of RL's `judge` reward (rl.judge: the difficulty filter's judge section), asked only while
    that reward is computed with an LLM."""
    judge = cfg.rl.judge
    return Annotator(
        RL_JUDGE,
        "rl.judge.llm",
        judge.llm.model,
        judge.llm.inference,
        cfg.rl.rewards.judge > 0 and judge.method == JudgeMethod.llm,
        "rl.judge.max_unusable_fraction",
        judge.max_unusable_fraction,
        judge.llm,
    )
