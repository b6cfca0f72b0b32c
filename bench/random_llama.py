"""A Llama-3.1-8B-shaped model built here, for GPU benchmarks on machines that cannot download weights.

The config is the 8B's (hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocab 128,256); the tokenizer
(and chat template) is the tiny demo model's, trained locally, so prompts are real suite text of about
suite length. `weights=False` writes only config and tokenizer (vLLM's `load_format="dummy"` fills the
weights in); `weights=True` saves random bf16 weights (initialised on the GPU) for the trainer to load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

LLAMA_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def layer_parameters(shape: dict = LLAMA_8B) -> int:
    """Parameters of one decoder layer (attention, MLP, two norms)."""
    hidden, mlp = shape["hidden_size"], shape["intermediate_size"]
    kv = hidden * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * mlp + 2 * hidden


def embedding_parameters(shape: dict = LLAMA_8B) -> int:
    """Input embeddings and the (untied) output head."""
    return 2 * shape["vocab_size"] * shape["hidden_size"]


def build(out: Path, layers: int = 32, weights: bool = False) -> Path:
    """Write the model (config, tokenizer, and random weights if `weights`) to `out`; returns `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from meds1.config.schema import TinyModelSpec
    from meds1.models import ensure_tiny_model

    tiny = ensure_tiny_model(TinyModelSpec(), Path(tempfile.gettempdir()) / "meds1-bench-models")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        **{**LLAMA_8B, "num_hidden_layers": layers},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    if not weights:
        config.save_pretrained(out)
        return out
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out
