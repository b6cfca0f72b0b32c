"""The labels TRL builds from our prompt/completion split: the loss sees the assistant turn and nothing else.

Checked on the real tokenizer of the tiny model with two real chat templates (its Llama-3 style one and
Qwen2.5's ChatML), both assistant layouts (med-s1/HuatuoGPT `## Thinking / ## Final Response`, s1's
think/answer markers), with and without a system prompt, for padded batches and for packed padding-free
batches; and packed rows must not attend to each other.
"""

import json

import pytest
import torch
from datasets import Dataset

from meds1.config.compose import compose
from meds1.hub import resolve_data_path
from meds1.training.sft import build_trainer, split_validation

LAYOUTS = {
    "huatuo": "## Thinking\n\n{cot}\n\n## Final Response\n\n{response}",
    "s1": "<|im_start|>think\n{cot}\n<|im_start|>answer\nAnswer: {response}",
}
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# What follows the assistant's content in a rendered conversation: the trained end of the turn.
END_OF_TURN = {"llama3": "<|eot_id|>", "qwen2.5": "<|im_end|>\n"}


def demo_rows(n: int = 6) -> list[dict]:
    lines = resolve_data_path("pkg://meds1/data/demo_sft.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [r for r in rows if r.get("Question") and r.get("Complex_CoT") and r.get("Response")][:n]


def conversations(layout: str, system: str | None, n: int = 6) -> list[list[dict]]:
    out = []
    for row in demo_rows(n):
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": row["Question"]})
        content = LAYOUTS[layout].format(cot=row["Complex_CoT"], response=row["Response"])
        messages.append({"role": "assistant", "content": content})
        out.append(messages)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return tiny_model_dir, AutoModelForCausalLM, AutoTokenizer


def make_trainer(tiny, tmp_path, template: str, layout: str, system: str | None, packing: bool):
    path, model_cls, tokenizer_cls = tiny
    tokenizer = tokenizer_cls.from_pretrained(path)
    if template == "qwen2.5":
        tokenizer.chat_template = QWEN25_TEMPLATE
    model = model_cls.from_pretrained(path, dtype=torch.float32)
    cfg = compose(["experiment=demo", f"trainer.packing={str(packing).lower()}", "trainer.block_size=4096"])
    chats = conversations(layout, system)
    train_rows, _ = split_validation(Dataset.from_dict({"messages": chats}), 0.0, seed=0)
    trainer = build_trainer(cfg.trainer, model, tokenizer, train_rows, None, tmp_path / "ckpt", seed=0)
    return trainer, tokenizer, chats


def trained_texts(tokenizer, input_ids, labels) -> list[str]:
    return [
        tokenizer.decode(ids[lab != -100].tolist(), skip_special_tokens=False)
        for ids, lab in zip(input_ids, labels, strict=True)
    ]


@pytest.mark.parametrize("template", ["llama3", "qwen2.5"])
@pytest.mark.parametrize("layout", ["huatuo", "s1"])
@pytest.mark.parametrize("system", [None, "You are a careful medical expert."])
def test_only_the_assistant_turn_is_trained_padded(tiny, tmp_path, template, layout, system):
    trainer, tokenizer, chats = make_trainer(tiny, tmp_path, template, layout, system, packing=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(chats))])
    input_ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    expected = [chat[-1]["content"] + END_OF_TURN[template] for chat in chats]
    assert trained_texts(tokenizer, input_ids, labels) == expected
    for row_labels, row_ids, row_mask in zip(labels, input_ids, mask, strict=True):
        trained = (row_labels != -100).nonzero().flatten()
        # One contiguous span that ends the conversation; everything before it (the prompt) is masked.
        assert trained.tolist() == list(range(int(trained[0]), int(trained[-1]) + 1))
        assert int(trained[-1]) == int(row_mask.sum()) - 1
        assert torch.equal(row_labels[trained], row_ids[trained])
        prompt = tokenizer.decode(row_ids[: int(trained[0])].tolist(), skip_special_tokens=False)
        assert chats[0][-1]["content"][:20] not in prompt  # the answer never leaks into the prompt


@pytest.mark.parametrize("template", ["llama3", "qwen2.5"])
@pytest.mark.parametrize("layout", ["huatuo", "s1"])
def test_only_the_assistant_turn_is_trained_packed(tiny, tmp_path, template, layout):
    trainer, tokenizer, chats = make_trainer(tiny, tmp_path, template, layout, None, packing=True)
    blocks = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(blocks) < len(chats)  # rows were packed together
    batch = trainer.data_collator(blocks)
    assert "attention_mask" not in batch  # padding-free: one flat row, sequences told apart by position_ids
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    sequences = [(ids[a:b], labels[a:b]) for a, b in zip(starts, starts[1:], strict=False)]
    texts = trained_texts(tokenizer, [s[0] for s in sequences], [s[1] for s in sequences])
    expected = [chat[-1]["content"] + END_OF_TURN[template] for chat in chats]
    assert sorted(texts) == sorted(expected)


def test_packed_rows_do_not_attend_to_each_other(tiny, tmp_path):
    trainer, _, _ = make_trainer(tiny, tmp_path, "llama3", "huatuo", None, packing=True)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    path, model_cls, _ = tiny
    model = model_cls.from_pretrained(path, dtype=torch.float32).eval()
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [len(positions)]
    assert len(starts) > 2, "the first block should hold several rows"
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        # As in training (TRL passes use_cache=False): the block-diagonal mask comes from the position ids.
        packed = model(**inputs, use_cache=False).logits[0]
        for a, b in zip(starts, starts[1:], strict=False):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-4, rtol=1e-4)
