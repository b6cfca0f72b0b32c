"""Turn curated rows into chat conversations (the `formatted/` dataset the trainer reads).

The assistant turn's layout (`curation.format.layout`):
- `huatuo`: "## Thinking\\n\\n{cot}\\n\\n## Final Response\\n\\n{response}" (HuatuoGPT-o1, med-s1);
- `s1`: s1's markers, "<|im_start|>think\\n{cot}\\n<|im_start|>answer\\nAnswer: {response}" (s1 adds
  "Answer: " unless the response already has it), which s1-style budget forcing looks for. med-s1's
  `qwen` format is this layout (same template, strip and "Answer: " rule: som-shahlab/med-s1@d15c393
  data/utils/formatting.py:format_chat_template); it differs only by `clean_text`, which med-s1 applied
  to every format;
- `think`: a reasoning model's tags, "<think>\\n{cot}\\n</think>\\n\\n{response}" (QwQ, Nemotron, R1);
- `nemotron`: med-s1's `nemotron` format verbatim, "<think>{cot}</think>Answer: {response}" (no
  separators; with `system_prompt` "detailed thinking on", conf/model/nemotron-nano-8b.yaml).
With no trace (`thinking=False`: the `none` transform) the turn is the answer part only, as med-s1 wrote
it. `curation.format.assistant_template` ("{cot}", "{response}") replaces the layout when set.
"""

from __future__ import annotations

import re

import pandas as pd

from meds1.config.schema import FormatConfig
from meds1.curation import COT, QUESTION, RESPONSE

LAYOUTS = {
    "huatuo": "## Thinking\n\n{cot}\n\n## Final Response\n\n{response}",
    "s1": "<|im_start|>think\n{cot}\n<|im_start|>answer\n{response}",
    "think": "<think>\n{cot}\n</think>\n\n{response}",
    "nemotron": "<think>{cot}</think>{response}",
}
# The answer part alone (no trace), as med-s1 wrote its no-CoT rows (format_chat_template, extract "none").
ANSWER_ONLY = {
    "huatuo": "## Final Response\n\n{response}",
    "s1": "<|im_start|>answer\n{response}",
    "think": "{response}",
    "nemotron": "{response}",
}
ANSWER_PREFIXED = ("s1", "nemotron")  # "Answer: " before the response unless it has one (s1, med-s1)


def clean_text(text: str | None) -> str:
    """med-s1's preprocess_text (data/utils/formatting.py@d15c393): strip, " [title]" -> ". ", every
    one-line "[...]" span removed, one pass of double spaces -> single; None -> " "."""
    if text is None:
        return " "
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def assistant_template(fmt: FormatConfig, thinking: bool = True) -> str:
    if fmt.assistant_template is not None:
        return fmt.assistant_template
    return (LAYOUTS if thinking else ANSWER_ONLY)[fmt.layout]


def to_messages(
    question: str, cot: str, response: str, fmt: FormatConfig, thinking: bool = True
) -> list[dict[str, str]]:
    template = assistant_template(fmt, thinking)
    if fmt.clean_text:
        question, cot, response = clean_text(question), clean_text(cot), clean_text(response)
    if fmt.assistant_template is None and fmt.layout in ANSWER_PREFIXED:
        cot, response = cot.strip(), response.strip()
        response = response if "Answer:" in response else f"Answer: {response}"
    messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": template.format(cot=cot, response=response)})
    return messages


def format_rows(curated: pd.DataFrame, fmt: FormatConfig, tokenizer, thinking: bool = True):
    """An HF dataset with `messages` (chat turns) and `text` (rendered by the tokenizer's chat template).

    `thinking=False` writes the answer part only (no trace: the `none` transform)."""
    from datasets import Dataset

    cots = curated[COT].where(curated[COT].notna(), "")  # med-s1: a missing trace formats as ""
    conversations = [
        to_messages(q, c, r, fmt, thinking)
        for q, c, r in zip(curated[QUESTION], cots, curated[RESPONSE], strict=True)
    ]
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]
    return Dataset.from_dict({"row_id": curated["row_id"].tolist(), "messages": conversations, "text": texts})
