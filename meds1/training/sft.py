"""Supervised fine-tuning with TRL's SFTTrainer: loss on the assistant turn only, resumable.

The formatted dataset holds whole conversations; each becomes a prompt (every turn before the last)
and a completion (the final assistant turn), so TRL masks the prompt out of the loss whatever the
model's chat template looks like.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from meds1.config import TrainerConfig
from meds1.errors import UserError

log = logging.getLogger(__name__)


def derive_batch_sizes(
    global_batch_size: int, per_device_batch_size: int, world_size: int
) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) giving exactly `global_batch_size` per step."""
    if global_batch_size % world_size:
        raise UserError(
            f"trainer.global_batch_size={global_batch_size} is not divisible by the world size {world_size}"
        )
    per_rank = global_batch_size // world_size
    per_device = min(per_device_batch_size, per_rank)
    if per_rank % per_device:
        raise UserError(
            f"trainer.per_device_batch_size={per_device_batch_size} does not divide the "
            f"{per_rank} rows each of {world_size} process(es) takes per step "
            f"(global batch {global_batch_size})"
        )
    return per_device, per_rank // per_device


def split_prompt_completion(example: dict) -> dict:
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def last_checkpoint(checkpoints: Path) -> Path | None:
    steps = [
        (int(p.name.split("-")[-1]), p) for p in checkpoints.glob("checkpoint-*") if p.name[11:].isdigit()
    ]
    complete = [(step, p) for step, p in steps if (p / "trainer_state.json").exists()]
    return max(complete)[1] if complete else None


def train_sft(
    trainer_cfg: TrainerConfig,
    model_path: str,
    revision: str | None,
    dtype: str,
    dataset_dir: Path,
    out: Path,
    seed: int,
) -> dict:
    """Train on `dataset_dir`, resuming from the last checkpoint under `out`; save the model to out/model."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = load_from_disk(str(dataset_dir))
    if len(dataset) == 0:
        raise UserError(f"the curated dataset {dataset_dir} is empty: rerun stage=curate with other settings")
    dataset = dataset.map(split_prompt_completion, remove_columns=dataset.column_names)

    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    per_device, accumulation = derive_batch_sizes(
        trainer_cfg.global_batch_size, trainer_cfg.per_device_batch_size, world_size
    )
    checkpoints = out / "checkpoints"
    resume = last_checkpoint(checkpoints)
    args = SFTConfig(
        output_dir=str(checkpoints),
        learning_rate=trainer_cfg.learning_rate,
        num_train_epochs=trainer_cfg.num_epochs,
        max_steps=trainer_cfg.max_steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        weight_decay=trainer_cfg.weight_decay,
        warmup_steps=trainer_cfg.warmup_ratio,
        lr_scheduler_type=trainer_cfg.lr_scheduler,
        max_length=trainer_cfg.block_size,
        bf16=trainer_cfg.bf16,
        gradient_checkpointing=trainer_cfg.gradient_checkpointing,
        save_strategy="steps",
        save_steps=trainer_cfg.save_steps,
        logging_steps=trainer_cfg.logging_steps,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        seed=seed,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(model_path, revision=revision, dtype=dtype)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if resume:
        log.info("train: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    final = out / "model"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    shutil.rmtree(checkpoints, ignore_errors=True)

    state = trainer.state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    runtime = result.metrics.get("train_runtime", 0.0)
    tokens = int(state.num_input_tokens_seen or 0)
    return {
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "global_step": state.global_step,
        "epochs": trainer_cfg.num_epochs,
        "tokens": tokens,
        "tokens_per_second": round(tokens / runtime, 1) if runtime else None,
        "train_runtime_s": round(runtime, 2),
        "world_size": world_size,
        "per_device_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "resumed_from": int(resume.name.split("-")[-1]) if resume else None,
        "rows": len(dataset),
        "loss_is_finite": all(math.isfinite(x) for x in losses),
    }
