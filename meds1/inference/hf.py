"""transformers `generate()` backend: batched, left-padded, longest prompts first."""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from meds1.config import InferenceConfig, ModelConfig
from meds1.inference import Conversation, Generation, Sampling

log = logging.getLogger(__name__)


class HFBackend:
    def __init__(self, path: str, model: ModelConfig, inference: InferenceConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.batch_size = inference.batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=model.revision, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = inference.dtype if inference.dtype != "auto" else model.dtype
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(path, revision=model.revision, dtype=dtype)
        self.model.to(self.device).eval()

    def render(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[Generation]:
        prompts = [self.render(c) for c in conversations]
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        self.torch.manual_seed(sampling.seed)
        with tqdm(total=len(prompts), desc="generate", unit="prompt") as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                for i, generation in zip(
                    batch, self._generate_batch([prompts[i] for i in batch], sampling), strict=True
                ):
                    results[i] = generation
                bar.update(len(batch))
        return results

    def _generate_batch(self, prompts: list[str], sampling: Sampling) -> list[Generation]:
        inputs = self.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        sample = sampling.temperature > 0
        with self.torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        generations = []
        for row, prompt_tokens in zip(new_tokens, prompt_lengths, strict=True):
            ids = row.tolist()
            output_tokens = _length_until_eos(ids, self.model.generation_config.eos_token_id)
            text = self.tokenizer.decode(ids[:output_tokens], skip_special_tokens=True)
            generations.append(
                Generation(text=text, prompt_tokens=int(prompt_tokens), output_tokens=output_tokens)
            )
        return generations


def _length_until_eos(ids: list[int], eos: int | list[int] | None) -> int:
    """Number of generated tokens up to and including the first end-of-sequence token."""
    stops = set(eos if isinstance(eos, list) else [eos])
    for position, token in enumerate(ids):
        if token in stops:
            return position + 1
    return len(ids)
