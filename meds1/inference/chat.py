"""Chat prompts for local backends (hf, vllm): the model's own chat template *with the generation prompt*.

med-s1 once rendered eval prompts without `add_generation_prompt` and lost 25 points: the model
never saw the assistant header and continued the user turn. Every local backend renders through
`render_chat`, and `load_chat_tokenizer` refuses a tokenizer without a chat template and warns
when the template ignores the generation prompt.
"""

from __future__ import annotations

import logging

from meds1.errors import UserError

log = logging.getLogger(__name__)

PROBE = [{"role": "user", "content": "Which option is correct?"}]


def render_chat(tokenizer, conversation: list[dict[str, str]]) -> str:
    """The prompt text a chat model expects: template applied, assistant turn opened."""
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def load_chat_tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    from meds1.models import from_pretrained

    tokenizer = from_pretrained(AutoTokenizer, path, revision=revision, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise UserError(f"model {path} has no chat template; eval prompts are sent as chat turns")
    if render_chat(tokenizer, PROBE) == tokenizer.apply_chat_template(PROBE, tokenize=False):
        log.warning("the chat template of %s ignores add_generation_prompt: answers may be off-format", path)
    return tokenizer


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """(text before the first stop string, whether one was found)."""
    cuts = [position for position in (text.find(s) for s in stop if s) if position != -1]
    return (text[: min(cuts)], True) if cuts else (text, False)
