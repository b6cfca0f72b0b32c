"""transformers `generate()` backend: batched, left-padded, longest prompts first."""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

from meds1.config.schema import InferenceConfig, ModelConfig
from meds1.inference import Generation, LocalBackend, OnResult, Sampling
from meds1.inference.chat import cut_at_stop, load_chat_tokenizer
from meds1.models import from_pretrained
from meds1.store.provenance import installed_version

log = logging.getLogger(__name__)


class FrequencyPenalty:
    """OpenAI/vLLM `frequency_penalty` as a logits processor: each token's logit minus `penalty` times
    the number of times it occurs in the text generated so far (prompt tokens do not count).

    transformers' `repetition_penalty` is a different rule (a factor, once per token seen, prompt
    included). Applied before temperature and top-p, as vLLM applies its penalties.
    """

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty = penalty
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        generated = input_ids[:, self.prompt_length :]
        counts = scores.new_zeros(scores.shape).scatter_add_(1, generated, scores.new_ones(generated.shape))
        return scores - self.penalty * counts


class HFBackend(LocalBackend):
    def __init__(self, path: str, model: ModelConfig, inference: InferenceConfig):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.batch_size = inference.batch_size
        self.tokenizer = load_chat_tokenizer(path, model.revision)
        dtype = inference.dtype if inference.dtype != "auto" else model.dtype
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = from_pretrained(AutoModelForCausalLM, path, revision=model.revision, dtype=dtype)
        self.model.to(self.device).eval()
        self.engine = {
            "backend": "hf",
            "engine": f"transformers {installed_version('transformers')}",
            "device": self.device,
        }
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}

    def close(self) -> None:
        """Nothing to free beyond what garbage collection does."""

    def complete(
        self,
        prompts: list[str],
        sampling: Sampling,
        max_new_tokens: list[int] | None = None,
        on_result: OnResult | None = None,
        add_special_tokens: bool = False,
    ) -> list[Generation]:
        limits = max_new_tokens or [sampling.max_new_tokens] * len(prompts)
        encoded = self.tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        self.torch.manual_seed(sampling.seed)
        with tqdm(total=len(prompts), desc="generate", unit="prompt") as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                generations = self._generate_batch(
                    [encoded[i] for i in batch], [limits[i] for i in batch], sampling
                )
                for i, generation in zip(batch, generations, strict=True):
                    results[i] = generation
                    if on_result:
                        on_result(i, generation)
                bar.update(len(batch))
        return results

    def _generate_batch(
        self, prompts: list[list[int]], limits: list[int], sampling: Sampling
    ) -> list[Generation]:
        from transformers import LogitsProcessorList

        inputs = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        sample = sampling.temperature > 0
        processors = LogitsProcessorList()
        if sampling.frequency_penalty:
            processors.append(FrequencyPenalty(sampling.frequency_penalty, inputs["input_ids"].shape[1]))
        with self.torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max(limits),
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=(1.0 if sampling.top_p is None else sampling.top_p) if sample else None,
                logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=sampling.stop or None,
                tokenizer=self.tokenizer if sampling.stop else None,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :].tolist()
        return [
            self._generation(ids[:limit], len(prompt), limit, sampling.stop)
            for ids, prompt, limit in zip(new_tokens, prompts, limits, strict=True)
        ]

    def _generation(self, ids: list[int], prompt_tokens: int, limit: int, stop: list[str]) -> Generation:
        """One row's answer: up to its end of turn, its own token limit, or its first stop string."""
        length, ended = len(ids), False
        for position, token in enumerate(ids):
            if token in self.eos:
                length, ended = position + 1, True
                break
            if token == self.tokenizer.pad_token_id:  # finished by a stop string; padding follows
                length = position
                break
        text, stopped = cut_at_stop(self.tokenizer.decode(ids[:length], skip_special_tokens=True), stop)
        finish = "stop" if ended or stopped or length < limit else "length"
        return Generation(text=text, prompt_tokens=prompt_tokens, output_tokens=length, finish_reason=finish)
