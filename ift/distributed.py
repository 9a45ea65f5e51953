"""The distributed world: the accelerator, the process group, and the few collectives `ift` uses.

Every other module asks here for its rank, waits at a barrier or lets rank 0 go first; nothing
else calls torch.distributed directly (DeepSpeed's engine aside).
"""
from __future__ import annotations

import contextlib
import os
import socket
import warnings

import torch
import torch.distributed as dist


def accelerator_available() -> bool:
    """True when training runs on CUDA (DS_ACCELERATOR=cpu forces the CPU even on a GPU machine)."""
    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"


def select_accelerator() -> None:
    """DeepSpeed on CUDA when there is a GPU, on CPU otherwise. Must run before deepspeed is imported."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def setup_environment() -> None:
    """CUDA + NCCL on GPUs, CPU + gloo otherwise. A process started without a launcher becomes
    rank 0 of a world of 1."""
    select_accelerator()
    # DeepSpeed still calls torch's *_tensor collectives, deprecated in torch 2.13: one warning per call
    warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use .*_single", category=FutureWarning)
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HOST_GROUP = None  # gloo group for host-side flags (the stop request) when the main backend is NCCL


def init_distributed(timeout_min: int = 10) -> tuple[int, int, int]:
    """(rank, world size, local rank). A collective waits at most timeout_min for a rank that died
    (NCCL, gloo), so the survivors fail and a restart can begin."""
    from datetime import timedelta

    import deepspeed

    global _HOST_GROUP
    if not dist.is_initialized():
        backend = "nccl" if accelerator_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   timeout=timedelta(minutes=timeout_min))
    if accelerator_available():
        torch.cuda.set_device(local_rank())
    if _HOST_GROUP is None:
        _HOST_GROUP = dist.new_group(backend="gloo", timeout=timedelta(minutes=timeout_min)) \
            if dist.get_backend() != "gloo" else dist.group.WORLD
    return rank(), world_size(), local_rank()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_process_first(local: bool = False):
    """Rank 0 (local=True: local rank 0 of every node) runs the block first, the other ranks
    after it finished: it builds what they then read (the tokenizer, the data caches). Like
    accelerate's `main_process_first`, on our own process group (accelerate's would bring its own
    global state and device choice)."""
    first = (local_rank() if local else rank()) == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    every = [None] * world_size()
    dist.all_gather_object(every, obj)
    return every


def collective_device(engine_device: torch.device) -> torch.device:
    """Where a tensor must be to enter a collective of the default group: NCCL takes only CUDA
    tensors, gloo takes host tensors."""
    nccl = dist.is_initialized() and dist.get_backend() == "nccl"
    return torch.device(engine_device) if nccl else torch.device("cpu")


def all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    """Sum (or `op`) over ranks, in place. The tensor must already be on collective_device."""
    if world_size() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t`, in rank order. The tensor must already be on collective_device."""
    if world_size() == 1:
        return [t]
    every = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(every, t)
    return every


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any: a host-side vote over gloo, so asking every
    step costs no device synchronization."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_HOST_GROUP)
    return t.item() > 0
