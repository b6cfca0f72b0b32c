"""One training process per GPU: who am I, how many are we, where is rank 0.

The same code runs three ways:

- alone (`python run.py stage=train`): world size 1, no process group;
- under `torchrun --nproc_per_node=N run.py stage=train ...`: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/
  MASTER_ADDR/MASTER_PORT;
- as SLURM tasks (`srun`, or submitit with one task per GPU): each task reads SLURM_PROCID, SLURM_NTASKS,
  SLURM_LOCALID and the job's node list, and rank 0's host becomes the master address.

`process_group` exports the torchrun-style variables (which accelerate and the HF Trainer read) and starts
the process group: NCCL on GPUs (with gloo for CPU tensors), gloo on CPU. Rank-0-only work goes through
`on_main`, which hands rank 0's result, or its error, to every rank so no rank waits forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from meds1.config import Resources
from meds1.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
NODELIST_VARS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
DEFAULT_PORT_BASE = 29500


@dataclass(frozen=True)
class DistributedEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT_BASE
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def tasks_per_node(resources: Resources) -> int:
    """SLURM tasks to start on each node for training: one per GPU (one for a CPU run)."""
    return max(resources.gpus, 1)


def planned_world_size(resources: Resources) -> int:
    """Training processes a scheduler starts for these resources: one task per GPU on every node."""
    return tasks_per_node(resources) * max(resources.nodes, 1)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `gpu[07-09,12],cpu1` -> `gpu07`, `r[1-2]-n[3-4]` -> `r1-n3`."""
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    first = nodelist[:end].strip()
    host = re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], first)
    if not host or "[" in host or "]" in host:
        raise UserError(f"cannot read the first host of the SLURM node list {nodelist!r}; set MASTER_ADDR")
    return host


def detect(environ: Mapping[str, str] | None = None) -> DistributedEnv:
    """This process's place in the job, from torchrun's variables, else SLURM's, else a single process."""
    env = os.environ if environ is None else environ
    if all(name in env for name in TORCHRUN_VARS):
        world = int(env["WORLD_SIZE"])
        return DistributedEnv(
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env["LOCAL_RANK"]),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", DEFAULT_PORT_BASE)),
            launcher="torchrun",
        )
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    if "SLURM_PROCID" in env and tasks > 1:
        nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1")))
        nodelist = next((env[k] for k in NODELIST_VARS if env.get(k)), None)
        if "MASTER_ADDR" in env:
            master = env["MASTER_ADDR"]
        elif nodes == 1:
            master = "127.0.0.1"
        elif nodelist:
            master = first_host(nodelist)
        else:
            raise UserError("a multi-node SLURM task has no SLURM_JOB_NODELIST; set MASTER_ADDR")
        # Derived from the job id so two jobs sharing a node do not collide; a requeued job keeps its id.
        port = int(env.get("MASTER_PORT", DEFAULT_PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return DistributedEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=tasks,
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            local_world_size=max(tasks // max(nodes, 1), 1),
            master_addr=master,
            master_port=port,
            launcher="slurm",
        )
    return DistributedEnv()


def _torch_dist():
    import torch.distributed

    return torch.distributed


def is_initialized() -> bool:
    dist = _torch_dist()
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(env: DistributedEnv, timeout_s: int = 1800) -> Iterator[None]:
    """Start the process group for `env` (nothing for a single process); tear it down on the way out."""
    if not env.is_distributed or is_initialized():
        yield
        return
    import datetime

    import torch

    os.environ.update(
        RANK=str(env.rank),
        WORLD_SIZE=str(env.world_size),
        LOCAL_RANK=str(env.local_rank),
        LOCAL_WORLD_SIZE=str(env.local_world_size),
        MASTER_ADDR=env.master_addr,
        MASTER_PORT=str(env.master_port),
    )
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        backend = "cuda:nccl,cpu:gloo"  # NCCL for the model, gloo for small CPU-side agreements
    else:
        backend = "gloo"
    log.info(
        "rank %d/%d (local %d) via %s, master %s:%d, backend %s",
        env.rank,
        env.world_size,
        env.local_rank,
        env.launcher,
        env.master_addr,
        env.master_port,
        backend,
    )
    dist = _torch_dist()
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (unchanged without a process group)."""
    if not is_initialized():
        return value
    payload = [value]
    _torch_dist().broadcast_object_list(payload, src=0)
    return payload[0]


def gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not is_initialized():
        return [value]
    dist = _torch_dist()
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def on_main(fn: Callable[[], T], env: DistributedEnv) -> T:
    """Run `fn` on rank 0 only; every rank returns its result, or raises the error it raised."""
    result, error = None, None
    if env.is_main:
        try:
            result = fn()
        except UserError as exc:
            error = exc
        except BaseException as exc:
            broadcast((None, RuntimeError(f"rank 0 failed: {exc!r}")))
            raise
    result, error = broadcast((result, error))
    if error is not None:
        raise error
    return result


def any_rank(flag: int) -> int:
    """The largest `flag` over all ranks (a cheap per-step agreement; gloo/CPU tensor)."""
    if not is_initialized():
        return flag
    import torch

    tensor = torch.tensor([flag], dtype=torch.int64)
    _torch_dist().all_reduce(tensor, op=_torch_dist().ReduceOp.MAX)
    return int(tensor.item())
