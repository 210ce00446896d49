"""DDP plumbing for the trainer: what torchrun tells a process, and the few collectives the zoo needs.

The zoo does not launch processes or invent communication: ``torchrun`` starts them and sets RANK, LOCAL_RANK and
WORLD_SIZE; the trainer joins the process group (nccl on CUDA, gloo on CPU) and wraps the model in DDP.

Leaving the group is the delicate part. ``dist.destroy_process_group()`` only drops the references that
``torch.distributed`` keeps; the group itself (for gloo: two worker threads, an I/O thread and its connections to
the other ranks) lives on while anything else refers to it, and is then torn down during interpreter shutdown, or
not at all before the process exits. That is where a rank can abort after a job that trained
(``terminate called without an active exception``, exit -6, torchrun reporting the whole job failed): a gloo thread
that needs the GIL while the interpreter finalizes is ended by it, which C++ turns into ``std::terminate``. Two
things kept the group alive after training: `torch.distributed.nn.functional`, which DDP imports and whose functions
take ``group=group.WORLD`` as a default argument (evaluated at import: the group of the moment, forever), and DDP's
own reference cycle. So `init_process_group` imports that module first (its defaults then capture None), and
`destroy_process_group` collects the cycle first: the group's destructor joins its threads before
`destroy_process_group` returns (tests/test_ddp.py counts them).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import threading
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


KILL_AT_STEP_ENV = "ZOO_TEST_KILL_AT_STEP"
"""For fault-tolerance tests: ``RANK:STEP`` makes that rank kill itself (SIGKILL, like a lost machine) right after
optimiser step STEP, in the first attempt of a torchrun job only (a restarted attempt runs normally)."""


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
    def restart_count(self) -> int:
        """How many times torchrun has restarted this job (``--max-restarts``); 0 in its first attempt."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))

    @property
    def job_id(self) -> str | None:
        """The torchrun job this process belongs to (its rendezvous run id, the same in every attempt); None outside
        torchrun."""
        return os.environ.get("TORCHELASTIC_RUN_ID") if "TORCHELASTIC_RUN_ID" in os.environ else None

    def kill_at_step(self) -> int | None:
        """The step after which this process must kill itself (see `KILL_AT_STEP_ENV`), or None."""
        rank, _, step = os.environ.get(KILL_AT_STEP_ENV, "").partition(":")
        if not step or int(rank) != self.rank or self.restart_count > 0:
            return None
        return int(step)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group(env: DistEnv, device: torch.device) -> bool:
    """Join torchrun's process group if this is a multi-process job and nobody joined yet; True if this call did."""
    if not env.distributed or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    import torch.distributed.nn.functional  # noqa: F401 - before the group exists: see the module docstring

    # torchrun's agent keeps its key-value store across the restarts of a job (--max-restarts), but the workers'
    # keys in it carry no attempt number: a restarted rank could read the address its dead predecessor published
    # and fail to connect ("Connection refused"). Each attempt gets keys of its own.
    store, rank, world_size = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"zoo/attempt-{env.restart_count}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, **kwargs)
    return True


def destroy_process_group(error: BaseException | None = None) -> None:
    """Leave the process group so that it is gone, threads joined and connections closed, when this returns.

    `error` is the exception that is ending training, if any: the locals of its traceback's frames (the DDP wrapper,
    which holds the group) are cleared first, so that they cannot keep the group alive until interpreter shutdown.
    """
    if error is not None:
        traceback.clear_frames(error.__traceback__)
    gc.collect()  # DistributedDataParallel sits in a reference cycle that holds the group
    dist.destroy_process_group()


class Terminated(Exception):
    """This process received SIGTERM: torchrun sends it to every worker of a job when one of them fails or is lost
    (and when torchrun itself is stopped)."""


@contextlib.contextmanager
def sigterm_raises(env: DistEnv) -> Iterator[None]:
    """Under torchrun, let SIGTERM raise `Terminated` in the training loop instead of ending the process on the spot,
    so that the run's manifest can say why training stopped. Elsewhere (or off the main thread) nothing changes.

    If training fails (a lost worker shows first as a failed collective, and torchrun's SIGTERM follows a moment
    later), SIGTERM is ignored from then on: this process is on its way out, recording the failure, and torchrun
    kills it anyway if it lingers.
    """
    if not env.distributed or threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated("torchrun stopped this worker (SIGTERM), as it does when another worker of the job is lost")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, previous)


_PEER_LOST = re.compile(r"Connection (reset|closed) by peer|Broken pipe|gloo/transport|NCCL communicator was aborted")


def lost_worker(e: BaseException) -> str | None:
    """Why `e` says another worker of the job is gone (SIGTERM from torchrun, or a collective whose peer's connection
    dropped), in a few words; None if it says nothing of the kind."""
    if isinstance(e, Terminated):
        return str(e)
    text = " ".join(str(e).split())
    if not (isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and _PEER_LOST.search(text))):
        return None
    text = re.sub(r"^\[[^\]]*\] ", "", text)  # gloo's "[.../pair.cc:545] " source location
    return "a collective failed: " + text.split(". This is typically")[0]


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
