"""GRPO with TRL's GRPOTrainer: meds1's rewards as TRL reward functions, `rl.*` as its GRPOConfig.

Distributed, checkpointed and resumed as SFT is (meds1.training): one process per GPU (or CPU processes
with gloo), rank 0's checkpoints under the stage's partial directory, a SIGUSR2/SIGTERM stops every rank at
the same step after a checkpoint, and a rerun resumes from the last complete checkpoint. The dataset holds
every epoch in order (meds1.rl.data.epoch_rows), so TRL reads it once, unshuffled. Completions come from
transformers' generate (`rl.generator=hf`) or vLLM (`vllm`: colocated with each training process, or a
`trl vllm-serve` server).
"""

from __future__ import annotations

import json
import logging
import math
from importlib.util import find_spec
from pathlib import Path

from meds1.config.schema import RLConfig
from meds1.errors import UserError
from meds1.rl.data import row_options
from meds1.rl.rewards import Completion, Scorer, scorers
from meds1.training import distributed
from meds1.training.preemption import PreemptionGuard, stop_on_signal_callback
from meds1.training.sft import (
    REPORTERS,
    find_resume,
    fsdp_arguments,
    load_model,
    record_segment,
    save_final,
    train_attempt,
    weights_checksum,
)

log = logging.getLogger(__name__)

ROW_COLUMNS = ("id", "source", "question", "options", "answer_idx", "reference", "kind")


def check_options(rl: RLConfig, world_size: int) -> None:
    """Reject settings that cannot work here before any model is loaded or GPU touched."""
    import torch

    for name in rl.report_to:
        if not any(find_spec(module) for module in REPORTERS[name]):
            raise UserError(f"rl.report_to={name} needs `pip install {name}` (or drop it)")
    cuda = torch.cuda.is_available()
    if rl.generator == "vllm" and not cuda:
        raise UserError(
            "rl.generator=vllm generates on CUDA GPUs (TRL's vLLM colocate and server modes); "
            "use rl.generator=hf on CPU"
        )
    if rl.fsdp.enabled and not cuda:
        raise UserError(
            "rl.fsdp.enabled=true needs CUDA GPUs; set rl.fsdp.enabled=false for CPU processes (DDP)"
        )
    if rl.fsdp.enabled and world_size < 2:
        raise UserError(
            "rl.fsdp.enabled=true needs several processes (one per GPU); this is a single process"
        )


class TRLReward:
    """One reward as TRL calls it: (prompts, completions, completion_ids, **dataset columns) -> rewards.
    TRL names it (`rewards/<name>/mean` in its logs) by `__name__`."""

    def __init__(self, name: str, scorer: Scorer):
        self.__name__ = name
        self.scorer = scorer

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        completed = []
        for index, (completion, ids) in enumerate(zip(completions, completion_ids, strict=True)):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            row = {column: columns[column][index] for column in ROW_COLUMNS}
            row["options"] = row_options(row)
            completed.append(Completion(text, len(ids), row))
        return self.scorer(completed)


def reward_functions(rl: RLConfig, cache_dir: str, seed: int) -> tuple[list[TRLReward], list[float]]:
    """The TRL reward functions of `rl.rewards` and their weights (a reward of weight 0 is logged, unpaid)."""
    built = scorers(rl, rl.layout, cache_dir, seed)
    return [TRLReward(name, scorer) for name, (_, scorer) in built.items()], [w for w, _ in built.values()]


def grpo_arguments(
    rl: RLConfig, checkpoints: Path, per_device: int, accumulation: int, weights: list[float], seed: int
) -> dict:
    """Keyword arguments of TRL's GRPOConfig for this recipe."""
    args = dict(
        output_dir=str(checkpoints),
        learning_rate=rl.learning_rate,
        num_train_epochs=1,  # the dataset holds every epoch, each with its own option order
        max_steps=rl.max_steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,  # one generation batch per optimizer step
        num_generations=rl.num_generations,
        max_completion_length=rl.max_completion_length,
        temperature=rl.temperature,
        top_p=rl.top_p,
        loss_type=str(rl.loss_type),
        beta=rl.beta,
        epsilon=rl.epsilon,
        epsilon_high=rl.epsilon_high,
        scale_rewards=str(rl.scale_rewards),
        mask_truncated_completions=rl.mask_truncated_completions,
        num_iterations=rl.num_iterations,
        reward_weights=weights,
        shuffle_dataset=False,
        remove_unused_columns=False,  # the rewards read the question's columns
        warmup_steps=rl.warmup_ratio,  # a value below 1 is a fraction of the total steps
        lr_scheduler_type=rl.lr_scheduler,
        weight_decay=rl.weight_decay,
        bf16=rl.bf16,
        gradient_checkpointing=rl.gradient_checkpointing and not rl.fsdp.enabled,
        save_strategy="steps",
        save_steps=rl.save_steps,
        save_total_limit=rl.save_total_limit,
        logging_steps=rl.logging_steps,
        report_to=list(rl.report_to) or "none",
        ddp_find_unused_parameters=False,
        seed=seed,
    )
    if rl.generator == "vllm":
        vllm = rl.vllm
        args.update(
            use_vllm=True,
            vllm_mode=str(vllm.mode),
            vllm_gpu_memory_utilization=vllm.gpu_memory_utilization,
            vllm_tensor_parallel_size=vllm.tensor_parallel_size,
            vllm_max_model_length=vllm.max_model_length,
            vllm_enable_sleep_mode=vllm.enable_sleep_mode,
            vllm_server_base_url=vllm.server_base_url,
        )
    args.update(fsdp_arguments(rl.fsdp, rl.gradient_checkpointing))
    args.update(rl.grpo_args)
    return args


def build_trainer(
    rl: RLConfig,
    model,
    tokenizer,
    dataset,
    checkpoints: Path,
    cache_dir: str,
    seed: int,
    world_size: int = 1,
    callbacks: list | None = None,
    revision: str | None = None,
):
    """A GRPOTrainer on the epoch rows (meds1.rl.data.epoch_rows) configured from the recipe; `revision`:
    the hub revision of the starting model, from which TRL loads its KL reference (by the model's name)."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    per_device, accumulation = rl.batch_sizes(world_size)
    functions, weights = reward_functions(rl, cache_dir, seed)
    arguments = grpo_arguments(rl, checkpoints, per_device, accumulation, weights, seed)
    if revision and rl.beta:
        arguments["model_init_kwargs"] = {"revision": revision}  # TRL's reference model, not the policy
    args = GRPOConfig(**arguments, use_cpu=not torch.cuda.is_available())
    return GRPOTrainer(
        model=model,
        reward_funcs=functions,
        args=args,
        train_dataset=Dataset.from_list(dataset),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def history(log_history: list[dict], names: list[str]) -> list[dict]:
    """One entry per logged step: the reward (weighted sum), its spread, each reward's mean, the KL to the
    starting model, the mean completion length and the share of completions cut at max_completion_length."""
    entries = []
    for logged in log_history:
        if "reward" not in logged:
            continue
        entries.append(
            {
                "step": logged["step"],
                "reward": logged["reward"],
                "reward_std": logged.get("reward_std"),
                "rewards": {name: logged.get(f"rewards/{name}/mean") for name in names},
                "kl": logged.get("kl"),
                "completion_length": logged.get("completions/mean_length"),
                "clipped": logged.get("completions/clipped_ratio"),
                "zero_std": logged.get("frac_reward_zero_std"),
                "loss": logged.get("loss"),
                "entropy": logged.get("entropy"),
                "learning_rate": logged.get("learning_rate"),
            }
        )
    return entries


def train_grpo(
    rl: RLConfig,
    model_path: str,
    revision: str | None,
    save_dtype: str,
    rows: list[dict],
    out: Path,
    cache_dir: str,
    seed: int,
    env: distributed.DistributedEnv | None = None,
) -> dict:
    """GRPO from the model at `model_path` on `rows`, resuming from the last checkpoint under `out`; rank 0
    saves out/model in `save_dtype` and returns the metrics, with `history`.

    Raises `Preempted` (on every rank, after a checkpoint) if a SIGUSR2/SIGTERM/SIGINT (Ctrl-C) arrived
    during training.
    """
    env = env or distributed.DistributedEnv()
    checkpoints, resume = find_resume(out, rl.save_steps, env, "rl")
    model, tokenizer = load_model(model_path, revision, rl.weights_dtype, None)
    with PreemptionGuard() as guard:
        stopper = stop_on_signal_callback(guard)
        trainer = build_trainer(
            rl, model, tokenizer, rows, checkpoints, cache_dir, seed, env.world_size, [stopper], revision
        )
        start_step = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
        _, this_run = train_attempt(trainer, resume, start_step, out, env)
    runtime, device = this_run["runtime_s"], this_run["device"]
    state = trainer.state
    segments = distributed.on_main(lambda: record_segment(out, this_run), env)
    if stopper.signum:
        raise guard.preempted(stopper.signum, stopper.step)

    save_final(trainer, tokenizer, out / "model", save_dtype, rl.weights_dtype, env)
    replicated = env.is_distributed and not trainer.is_fsdp_enabled
    checksums = distributed.gather(weights_checksum(model)) if replicated else []
    names = [function.__name__ for function in trainer.reward_funcs]
    steps = history(state.log_history, names)
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    gpu_seconds = sum(s["runtime_s"] * s["world_size"] for s in segments if s["device"] == "cuda")
    return {
        "global_step": state.global_step,
        "first_reward": steps[0]["reward"] if steps else None,
        "last_reward": steps[-1]["reward"] if steps else None,
        "last_rewards": steps[-1]["rewards"] if steps else {},
        "last_kl": steps[-1]["kl"] if steps else None,
        "mean_completion_length": steps[-1]["completion_length"] if steps else None,
        "loss_is_finite": all(math.isfinite(x) for x in losses),
        "rows": len(rows),
        "num_generations": rl.num_generations,
        "generation_batch_size": rl.generation_batch_size,
        "per_device_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "completion_tokens": int(state.num_input_tokens_seen or 0),
        "train_runtime_s": round(runtime, 2),
        "total_runtime_s": round(sum(s["runtime_s"] for s in segments), 2),
        "seconds_per_step": round(runtime / max(state.global_step - start_step, 1), 3),
        "gpu_hours": round(gpu_seconds / 3600, 4),
        "device": device,
        "world_size": env.world_size,
        "launcher": env.launcher,
        "generator": str(rl.generator),
        "fsdp": trainer.is_fsdp_enabled,
        "resumed_from": start_step if resume else None,
        "segments": len(segments),
        "ranks_agree": all(c == checksums[0] for c in checksums) if checksums else None,
        "history": steps,
    }
