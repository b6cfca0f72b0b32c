"""s1 budget forcing for test-time scaling (`eval=tts`), on any backend that continues raw text.

For each question: open the answer with `think_start` and let the model think until it writes
`think_end`, ends its turn, or has used `budget` thinking tokens. While budget is left, its first
`num_ignore` stops are overridden by appending `ignore_str` ("Wait") and thinking on with what
remains of the budget. Then `answer_prefix` is appended and the answer generated (at most
`answer_max_tokens`): the answer is forced however the thinking ended. All questions of a chunk go
through each round together, so vLLM batches them (and its prefix cache reuses the thinking).

The markers are those of the layout the model was trained on (meds1.layouts, as meds1.curation.formatting
writes it), so the forced thinking and answer look like the training answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from meds1.config.schema import BudgetForcingConfig
from meds1.errors import UserError
from meds1.inference import Backend, Conversation, Generation, LocalBackend, OnResult, Sampling
from meds1.layouts import LAYOUTS


@dataclass
class ForcedGeneration(Generation):
    thinking_tokens: int = 0


@dataclass(frozen=True)
class Markers:
    think_start: str  # opens the answer
    think_end: str  # ends the thinking (a stop string)
    answer_prefix: str  # appended after the thinking to force the final answer


# The markers of each layout the model may have been trained on.
MARKERS = {
    name: Markers(layout.think_start, layout.think_end, layout.forced_answer)
    for name, layout in LAYOUTS.items()
}


def markers(config: BudgetForcingConfig) -> Markers:
    """The layout's markers, each replaced by the one set in `config` (eval.tts.*) if any."""
    chosen = MARKERS[config.layout]
    return Markers(
        config.think_start if config.think_start is not None else chosen.think_start,
        config.think_end if config.think_end is not None else chosen.think_end,
        config.answer_prefix if config.answer_prefix is not None else chosen.answer_prefix,
    )


def budget_force(
    backend: Backend,
    conversations: list[Conversation],
    sampling: Sampling,
    config: BudgetForcingConfig,
    on_result: OnResult | None = None,
) -> list[ForcedGeneration]:
    """One forced answer per conversation; `on_result` is called after each chunk of questions."""
    if not isinstance(backend, LocalBackend):
        raise UserError("eval.tts (budget forcing) continues raw text: use inference=hf or inference=vllm")
    if config.budget < 1 or config.num_ignore < 0 or config.chunk_size < 1 or config.answer_max_tokens < 1:
        raise UserError(
            "eval.tts needs budget >= 1, num_ignore >= 0, chunk_size >= 1 and answer_max_tokens >= 1"
        )
    marks = markers(config)
    results: list[ForcedGeneration] = []
    for start in range(0, len(conversations), config.chunk_size):
        chunk = conversations[start : start + config.chunk_size]
        for offset, generation in enumerate(_force(backend, chunk, sampling, config, marks)):
            results.append(generation)
            if on_result:
                on_result(start + offset, generation)
    return results


def _force(
    backend,
    conversations: list[Conversation],
    sampling: Sampling,
    config: BudgetForcingConfig,
    marks: Markers,
) -> list[ForcedGeneration]:
    n = len(conversations)
    prompts = [backend.render(c) + marks.think_start for c in conversations]
    thinking, used, prompt_tokens = [""] * n, [0] * n, [0] * n
    finish: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    think = dataclasses.replace(sampling, stop=[marks.think_end])
    active = list(range(n))
    for round_ in range(config.num_ignore + 1):
        if round_:  # override the stops of those that ended early and still have budget
            active = [i for i in active if finish[i] == "stop" and used[i] < config.budget and not errors[i]]
            for i in active:
                thinking[i] += config.ignore_str
        if not active:
            break
        generations = backend.complete(
            [prompts[i] + thinking[i] for i in active],
            think,
            max_new_tokens=[config.budget - used[i] for i in active],
        )
        for i, generation in zip(active, generations, strict=True):
            prompt_tokens[i] = prompt_tokens[i] or generation.prompt_tokens
            thinking[i] += generation.text
            used[i] += generation.output_tokens
            finish[i], errors[i] = generation.finish_reason, generation.error
    forced = [thinking[i].rstrip() + marks.answer_prefix for i in range(n)]
    answers = backend.complete(
        [prompt + head for prompt, head in zip(prompts, forced, strict=True)],
        dataclasses.replace(sampling, stop=[]),
        max_new_tokens=[config.answer_max_tokens] * n,
    )
    return [
        ForcedGeneration(
            text=marks.think_start + forced[i] + answers[i].text,
            prompt_tokens=prompt_tokens[i],
            output_tokens=used[i] + answers[i].output_tokens,
            error=errors[i] or answers[i].error,
            finish_reason=answers[i].finish_reason,
            thinking_tokens=used[i],
        )
        for i in range(n)
    ]
