"""Turn curated rows into chat conversations (the `formatted/` dataset the trainer reads).

The assistant turn's layout (`curation.format.layout`):
- `huatuo`: "## Thinking\\n\\n{cot}\\n\\n## Final Response\\n\\n{response}" (HuatuoGPT-o1, med-s1);
- `s1`: s1's markers, "<|im_start|>think\\n{cot}\\n<|im_start|>answer\\nAnswer: {response}" (s1 adds
  "Answer: " unless the response already has it), which s1-style budget forcing looks for.
`curation.format.assistant_template` ("{cot}", "{response}") replaces the layout when set.
"""

from __future__ import annotations

import pandas as pd

from meds1.config import FormatConfig
from meds1.curation import COT, QUESTION, RESPONSE

LAYOUTS = {
    "huatuo": "## Thinking\n\n{cot}\n\n## Final Response\n\n{response}",
    "s1": "<|im_start|>think\n{cot}\n<|im_start|>answer\n{response}",
}
# A row without a trace (curation.trace.transforms=[none]): the answer alone, as med-s1's extract "none"
# (data/utils/formatting.py:format_chat_template: "## Final Response\n\n{answer}").
ANSWER_ONLY = {
    "huatuo": "## Final Response\n\n{response}",
    "s1": "<|im_start|>answer\n{response}",
}


def assistant_template(fmt: FormatConfig) -> str:
    if fmt.assistant_template is not None:
        return fmt.assistant_template
    return LAYOUTS[fmt.layout]


def to_messages(question: str, cot: str, response: str, fmt: FormatConfig) -> list[dict[str, str]]:
    template = assistant_template(fmt)
    if fmt.assistant_template is None and not cot.strip():
        template = ANSWER_ONLY.get(fmt.layout, template)
    if fmt.assistant_template is None and fmt.layout == "s1":
        cot, response = cot.strip(), response.strip()
        response = response if "Answer:" in response else f"Answer: {response}"
    messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": template.format(cot=cot, response=response)})
    return messages


def format_rows(curated: pd.DataFrame, fmt: FormatConfig, tokenizer):
    """An HF dataset with `messages` (chat turns) and `text` (rendered by the tokenizer's chat template)."""
    from datasets import Dataset

    conversations = [
        to_messages(q, c, r, fmt)
        for q, c, r in zip(curated[QUESTION], curated[COT], curated[RESPONSE], strict=True)
    ]
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]
    return Dataset.from_dict({"row_id": curated["row_id"].tolist(), "messages": conversations, "text": texts})
