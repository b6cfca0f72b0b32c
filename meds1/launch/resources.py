"""Which resources each stage asks the scheduler for, and the sbatch parameters that ask for them.

The one rule: train gets the trainer's resources with one task per GPU (the training stage derives
its rank and world size from the task); eval gets the inference backend's resources in a single task
(the backend spreads over the node's GPUs itself); curate gets its own resources, or the inference
backend's when it runs a local model (difficulty filter, specialty labeler).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meds1 import pipeline
from meds1.config.schema import Config, Resources, SlurmLauncherConfig
from meds1.pipeline import tasks_per_node

# sbatch parameters submitit knows by name (the rest go through `additional_parameters`).
SUBMITIT_NAMES = frozenset(
    {
        "partition",
        "account",
        "qos",
        "constraint",
        "exclude",
        "comment",
        "nodes",
        "ntasks_per_node",
        "cpus_per_task",
        "gpus_per_node",
        "mem",
        "time",
        "setup",
        "gres",
        "signal_delay_s",
    }
)


def stage_resources(cfg: Config, stage: str) -> Resources:
    return pipeline.resources(cfg, stage)


def sbatch_parameters(cfg: Config, stage: str, launcher: SlurmLauncherConfig) -> dict[str, Any]:
    """submitit's SLURM parameters for one stage's job (site settings, then per-stage overrides)."""
    resources = stage_resources(cfg, stage)
    tasks = tasks_per_node(stage, resources)
    parameters: dict[str, Any] = {
        "job_name": f"meds1-{cfg.name}-{stage}",
        "nodes": resources.nodes,
        "ntasks_per_node": tasks,
        "cpus_per_task": max(1, resources.cpus // tasks),
        "mem": f"{resources.mem_gb}GB",
        "time": resources.time_min,
        "signal_delay_s": launcher.signal_delay_s,
        "array_parallelism": launcher.array_parallelism,
        "stderr_to_stdout": launcher.stderr_to_stdout,
    }
    if resources.gpus > 0:
        parameters["gpus_per_node"] = resources.gpus
    for key in ("partition", "account", "qos", "constraint", "exclude", "comment"):
        if getattr(launcher, key) is not None:
            parameters[key] = getattr(launcher, key)
    if launcher.setup:
        parameters["setup"] = list(launcher.setup)
    extra = {**launcher.additional_parameters}
    for key, value in launcher.per_stage.get(stage, {}).items():
        if key in SUBMITIT_NAMES:
            parameters[key] = value
        else:
            extra[key] = value
    if extra:
        parameters["additional_parameters"] = extra
    return parameters


def submitit_folder(cfg: Config, launcher: SlurmLauncherConfig) -> Path:
    """Where submitit keeps each job's pickles and logs (`%j` becomes the job id)."""
    if launcher.submitit_folder:
        return Path(launcher.submitit_folder).expanduser().absolute()
    return Path(cfg.paths.root) / "logs" / "slurm" / "%j"


def describe(parameters: dict[str, Any]) -> str:
    """One line for a plan: `nodes=1 tasks/node=2 gpus/node=2 cpus/task=4 mem=64GB time=720min ...`."""
    parts = [
        f"nodes={parameters['nodes']}",
        f"tasks/node={parameters['ntasks_per_node']}",
        f"gpus/node={parameters.get('gpus_per_node', 0)}",
        f"cpus/task={parameters['cpus_per_task']}",
        f"mem={parameters['mem']}",
        f"time={parameters['time']}min",
    ]
    for key in ("partition", "account", "qos", "constraint"):
        if key in parameters:
            parts.append(f"{key}={parameters[key]}")
    parts += [f"{k}={v}" for k, v in parameters.get("additional_parameters", {}).items()]
    return " ".join(parts)
