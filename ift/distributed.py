"""The distributed world: the accelerator, the process group, and the few collectives `ift` uses.

Every other module asks here for its rank, waits at a barrier or lets rank 0 go first; nothing
else calls torch.distributed directly (DeepSpeed's engine aside).
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from typing import Literal, cast

import torch
import torch.distributed as dist

Dtype = Literal["fp32", "bf16", "fp16"]  # what model.dtype resolves to


def accelerator_available() -> bool:
    """True when training runs on CUDA (DS_ACCELERATOR=cpu forces the CPU even on a GPU machine)."""
    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"


def resolve_dtype(name: str) -> Dtype:
    """model.dtype=auto: bf16 where the accelerator supports it, fp32 on CPU."""
    if name != "auto":
        return cast(Dtype, name)  # one of ModelConfig's choices
    return "bf16" if accelerator_available() and torch.cuda.is_bf16_supported() else "fp32"


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


_HOST_GROUP = None  # gloo group for host-side waits and flags, with its own (long) timeout


def init_distributed(timeout_min: float = 10, host_timeout_min: float = 120) -> tuple[int, int, int]:
    """(rank, world size, local rank). A collective of the default group (NCCL on GPUs) waits at
    most timeout_min for a rank that died, so the survivors fail and a restart can begin. Waiting
    for one rank's host work (tokenizer training, a cold cache, checkpoint verification and
    conversion, export) happens on the host group instead, whose timeout is host_timeout_min:
    that work may take longer than any collective should."""
    from datetime import timedelta

    import deepspeed

    global _HOST_GROUP
    if not dist.is_initialized():
        backend = "nccl" if accelerator_available() else "gloo"
        deepspeed.init_distributed(
            dist_backend=backend, auto_mpi_discovery=False, timeout=timedelta(minutes=timeout_min)
        )
    if accelerator_available():
        torch.cuda.set_device(cuda_device_index())
    if _HOST_GROUP is None:
        _HOST_GROUP = dist.new_group(backend="gloo", timeout=timedelta(minutes=host_timeout_min))
    return rank(), world_size(), local_rank()


def cuda_device_index() -> int:
    """The GPU of this process: LOCAL_RANK among the visible GPUs, or the only one when the
    launcher gives each task its own (Slurm --gpus-per-task=1: CUDA_VISIBLE_DEVICES names one)."""
    visible = torch.cuda.device_count()
    return local_rank() if local_rank() < visible else local_rank() % visible


def shutdown(success: bool = True) -> None:
    """End the process groups (host group and default group) before the interpreter exits: left to
    interpreter teardown, gloo's worker threads die under it and a finished rank aborts
    (`terminate called without an active exception`, pytorch/pytorch#190489). On success every
    rank first meets the others on the host group, so no rank leaves while another still needs
    it; after a failure the others may be gone, so it does not wait."""
    global _HOST_GROUP
    if not dist.is_initialized():
        return
    if success and world_size() > 1:
        dist.barrier(group=_HOST_GROUP)
    import deepspeed.comm

    if deepspeed.comm.is_initialized():
        # every group (the host group and DeepSpeed's), and DeepSpeed's cached handles to them,
        # so that a later init in this process (tests, a notebook) starts clean
        deepspeed.comm.destroy_process_group()
    else:
        dist.destroy_process_group()
    _HOST_GROUP = None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every rank, on the host group: what is awaited is host work (files, caches)."""
    if dist.is_initialized() and world_size() > 1:
        dist.barrier(group=_HOST_GROUP)


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
    dist.broadcast_object_list(box, src=src, group=_HOST_GROUP)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    every = [None] * world_size()
    dist.all_gather_object(every, obj, group=_HOST_GROUP)
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


class StopVote:
    """ "Does any rank want to stop?", asked after every step without waiting for the answer: the
    vote started after step N is read after step N+1 (a gloo all-reduce of one host number, which
    runs while step N+1 computes). So a stop requested during step N saves after step N+1, on every
    rank at the same step. In a world of 1 the answer is immediate."""

    def __init__(self):
        self.flag = torch.zeros(1)
        self.work = None

    def exchange(self, wants_stop: bool) -> bool:
        """The result of the previous vote (False at first), and a new vote on `wants_stop`
        (none once the answer is yes: every rank stops, so none waits for another vote)."""
        if world_size() == 1:
            return wants_stop
        stopping = False
        if self.work is not None:
            self.work.wait()
            stopping = bool(self.flag.numpy()[0] > 0)  # a host tensor: numpy() reads no device
        self.work = None
        if not stopping:
            self.flag.fill_(1.0 if wants_stop else 0.0)
            self.work = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, group=_HOST_GROUP, async_op=True)
        return stopping

    def drain(self) -> None:
        """Finish a vote still in flight (every rank has one: they all started it after the same step)."""
        if self.work is not None:
            self.work.wait()
            self.work = None
