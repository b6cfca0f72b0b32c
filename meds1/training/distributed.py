"""One training process per GPU: who am I, how many are we, where is rank 0.

The same code runs three ways:

- alone (`python run.py stage=train`): world size 1, no process group;
- under `torchrun --nproc_per_node=N run.py stage=train ...`: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/
  MASTER_ADDR/MASTER_PORT;
- as SLURM tasks (`srun`, or submitit with one task per GPU): submitit's `SlurmJobEnvironment` reads
  SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NUM_NODES and the job's node list; the first host
  becomes the master address (loopback on one node). submitit's `TorchDistributedEnvironment` is not used:
  it needs a submitit job (not plain `srun`) and draws a random port that tests cannot predict.

`process_group` exports the torchrun-style variables (which accelerate and the HF Trainer read) and starts
the process group: NCCL on GPUs (with gloo for CPU tensors), gloo on CPU. Rank-0-only work goes through
`on_main`, which hands rank 0's result, or its error, to every rank so no rank waits forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from meds1.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
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


def detect() -> DistributedEnv:
    """This process's place in the job, from torchrun's variables, else SLURM's, else a single process."""
    env = os.environ
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
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return slurm_env()
    return DistributedEnv()


def slurm_env() -> DistributedEnv:
    """A SLURM task's place, read by submitit (a submitit job's task, or one started by `srun`)."""
    from submitit.slurm.slurm import SlurmJobEnvironment, SlurmParseException

    job = SlurmJobEnvironment()
    if "MASTER_ADDR" in os.environ:
        master = os.environ["MASTER_ADDR"]
    elif job.num_nodes == 1:
        master = "127.0.0.1"
    else:
        try:
            master = job.hostnames[0]
        except SlurmParseException:
            nodes = os.environ.get("SLURM_JOB_NODELIST")
            raise UserError(
                f"cannot read the first host of the SLURM node list {nodes!r}; set MASTER_ADDR"
            ) from None
    # Derived from the job id so two jobs sharing a node do not collide; a requeued job keeps its id.
    port = int(
        os.environ.get("MASTER_PORT", DEFAULT_PORT_BASE + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    )
    return DistributedEnv(
        rank=job.global_rank,
        world_size=job.num_tasks,
        local_rank=job.local_rank,
        local_world_size=max(job.num_tasks // job.num_nodes, 1),
        master_addr=master,
        master_port=port,
        launcher="slurm",
    )


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
    except BaseException:
        shut_down(dist, agreed=False)
        raise
    shut_down(dist, agreed=True)


def shut_down(dist, agreed: bool) -> None:
    """Destroy the process group once nothing else holds it, so every rank exits 0 after success.

    The HF Trainer, its DDP wrapper and its accelerator reference each other: the cyclic garbage collector
    frees them whenever it next runs, which may be at interpreter exit, after the group was destroyed. DDP's
    reducer then drops the last reference to the gloo process group during finalization, whose worker
    threads cannot be joined any more: `terminate called without an active exception`, SIGABRT, exit 1
    after a complete run. Collecting first frees them now; the group is then destroyed, its threads joined.
    After success (`agreed`) the ranks first meet, so none tears down its end while another still talks to
    it; after an error they do not (a rank may be stuck in a collective the failed one never joins).
    """
    import gc

    gc.collect()
    if agreed:
        dist.barrier()
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
