"""Chat layouts: how an assistant turn lays out its thinking and its answer (`curation.format.layout`,
`eval.tts.layout`).

One table, read by formatting (the turn meds1 trains on: meds1/curation/formatting.py), extraction
(where an answer's answer part starts: meds1/evaluation/extract.py) and budget forcing (the markers it
writes: meds1/evaluation/budget_forcing.py); the config's layout choices are its names.

- `huatuo`: "## Thinking\\n\\n{cot}\\n\\n## Final Response\\n\\n{response}" (HuatuoGPT-o1, med-s1);
- `s1`: s1's markers, "<|im_start|>think\\n{cot}\\n<|im_start|>answer\\nAnswer: {response}" (s1 adds
  "Answer: " unless the response already has it), which s1-style budget forcing looks for. med-s1's
  `qwen` format is this layout (same template, strip and "Answer: " rule: som-shahlab/med-s1@d15c393
  data/utils/formatting.py:format_chat_template); it differs only by `curation.format.clean_text`, which
  med-s1 applied to every format;
- `think`: a reasoning model's tags, "<think>\\n{cot}\\n</think>\\n\\n{response}" (QwQ, Nemotron, R1);
- `nemotron`: med-s1's `nemotron` format verbatim, "<think>{cot}</think>Answer: {response}" (no
  separators; with `system_prompt` "detailed thinking on", conf/model/nemotron-nano-8b.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    think_start: str  # opens the assistant turn, before the thinking
    think_end: str  # ends the thinking: the stop string budget forcing waits for, where extraction reads on
    answer_start: str  # between the thinking and the answer
    # The answer part alone, with no thinking (the `none` transform), as med-s1 wrote its no-CoT rows
    # (format_chat_template, extract "none").
    answer_only: str
    # Before the response unless it already says "Answer:" (s1, med-s1); the thinking and the response are
    # then stripped, as s1 did.
    answer_prefix: str = ""
    # `think_end` is a markdown heading: extraction also reads it at another level, in another case, or
    # with more words on its line ("### Final response:").
    heading: bool = False

    @property
    def template(self) -> str:
        """The assistant turn, with "{cot}" and "{response}" (the response with its `answer_prefix`)."""
        return f"{self.think_start}{{cot}}{self.answer_start}{{response}}"

    @property
    def answer_template(self) -> str:
        """The assistant turn without thinking."""
        return f"{self.answer_only}{{response}}"

    @property
    def forced_answer(self) -> str:
        """What budget forcing appends after the thinking to force the answer (the answer's first token
        follows it, so no trailing space)."""
        return self.answer_start + self.answer_prefix.rstrip()


LAYOUTS = {
    "huatuo": Layout(
        "## Thinking\n\n",
        "## Final Response",
        "\n\n## Final Response\n\n",
        "## Final Response\n\n",
        heading=True,
    ),
    "s1": Layout(
        "<|im_start|>think\n",
        "<|im_start|>answer",
        "\n<|im_start|>answer\n",
        "<|im_start|>answer\n",
        answer_prefix="Answer: ",
    ),
    "think": Layout("<think>\n", "</think>", "\n</think>\n\n", ""),
    "nemotron": Layout("<think>", "</think>", "</think>", "", answer_prefix="Answer: "),
}
