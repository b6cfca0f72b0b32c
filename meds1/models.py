"""Where a model comes from: a hub id, a local directory, or the locally built tiny demo model.

The tiny model is a small random-init Llama with a byte-level BPE tokenizer trained on the demo
text and a Llama-3-style chat template. It is built once (seeded, deterministic) into the cache and
then loaded through `from_pretrained(path)`, exactly the path a hub model takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from meds1.config.schema import ModelConfig, TinyModelSpec
from meds1.errors import UserError
from meds1.hub import reading, resolve_data_path

log = logging.getLogger(__name__)

TINY_CORPUS = ("pkg://meds1/data/demo_sft.jsonl", "pkg://meds1/data/demo_eval.json")
TINY_SPECIAL_TOKENS = {
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|eot_id|>",
    "pad_token": "<|pad|>",
}
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
LOCAL_PREFIXES = ("/", "./", "../", "~")


def model_path(model: ModelConfig, cache_dir: str) -> str:
    """A path or hub id that `from_pretrained` accepts; builds the tiny model on first use."""
    if model.build == "tiny":
        return str(ensure_tiny_model(model.tiny, Path(cache_dir) / "models"))
    if model.path.startswith(LOCAL_PREFIXES) and not Path(model.path).expanduser().exists():
        raise UserError(f"model path {model.path} does not exist")
    return model.path


def _tiny_fingerprint(spec: TinyModelSpec) -> str:
    digest = hashlib.sha256(json.dumps(spec.__dict__, sort_keys=True).encode())
    for source in TINY_CORPUS:
        digest.update(resolve_data_path(source).read_bytes())
    return digest.hexdigest()[:12]


def ensure_tiny_model(spec: TinyModelSpec, models_dir: Path) -> Path:
    """Build the tiny model and tokenizer under `models_dir` once; later calls return the path."""
    target = models_dir / f"tiny-{_tiny_fingerprint(spec)}"
    if (target / "config.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        log.info("Building the tiny demo model in %s", target)
        tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=".tiny-build-"))
        try:
            _build_tiny(spec, tmp)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _demo_texts() -> list[str]:
    texts = []
    for line in resolve_data_path(TINY_CORPUS[0]).read_text().splitlines():
        row = json.loads(line)
        texts.extend(str(row.get(key) or "") for key in ("Question", "Complex_CoT", "Response"))
    for rows in json.loads(resolve_data_path(TINY_CORPUS[1]).read_text()).values():
        for row in rows:
            texts.append(row["question"])
            texts.extend(row["options"].values())
    return texts


def _build_tiny(spec: TinyModelSpec, out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = [*TINY_SPECIAL_TOKENS.values(), "<|start_header_id|>", "<|end_header_id|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_demo_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **TINY_SPECIAL_TOKENS)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in TINY_SPECIAL_TOKENS.items()}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=ids["bos_token"],
        eos_token_id=ids["eos_token"],
        pad_token_id=ids["pad_token"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token"], eos_token_id=ids["eos_token"], pad_token_id=ids["pad_token"]
    )
    model.save_pretrained(out)


def load_tokenizer(model: ModelConfig, cache_dir: str):
    """The model's tokenizer (fast), through the same `from_pretrained` path for every model."""
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, model_path(model, cache_dir), revision=model.revision)


def from_pretrained(loader, path: str, **arguments):
    """`loader.from_pretrained(path, **arguments)` (a transformers Auto class); a model that is neither on
    disk nor downloadable (offline, no access, a misspelt id) is one line that names the fix (meds1.hub;
    a curation LLM's loader renames `model.path` to its own key)."""
    with reading(path, "model.path", revision=arguments.get("revision")):
        return loader.from_pretrained(path, **arguments)
