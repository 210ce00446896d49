"""DDP plumbing for the trainer: what torchrun tells a process, and the few collectives the zoo needs.

The zoo does not launch processes or invent communication: ``torchrun`` starts them and sets RANK, LOCAL_RANK and
WORLD_SIZE; the trainer joins the process group (nccl on CUDA, gloo on CPU) and wraps the model in DDP.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> DistEnv:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group(env: DistEnv, device: torch.device) -> bool:
    """Join torchrun's process group if this is a multi-process job and nobody joined yet; True if this call did."""
    if not env.distributed or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, **kwargs)
    return True


def all_reduce_sum(tensor: Tensor) -> None:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_reduce_max(tensor: Tensor) -> None:
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)


@torch.no_grad()
def parameters_in_sync(params: Iterable[Tensor]) -> bool:
    """True if every rank holds bit-identical parameters (element-wise max == min across ranks)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))
