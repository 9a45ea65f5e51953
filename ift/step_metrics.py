"""What a logging step reports, gathered between logging steps without waiting for the device:
per-task loss sums (`LossTally`) and throughput (`Window`); and the held-out loss (`eval.every`).

The held-out loss: each rank scores its share of the batches (batch i on rank i mod world) and the
sums are all-reduced. Under ZeRO-3 a forward pass gathers parameters collectively, so every rank
runs the same number of forwards: a rank whose share is one short scores a batch again and counts
nothing."""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

import torch

from ift.data.loader import Step
from ift.distributed import all_gather, all_reduce, collective_device
from ift.errors import RunError

log = logging.getLogger(__name__)


class LossTally:
    """Per-task sums of target-token losses and target-token counts since the last logging step,
    kept on the model's device so that no step waits for the device; read on logging steps. A
    step whose loss is non-finite on this rank is left out of the sums and counted, with the
    first such step and its loss, for check_finite."""

    def __init__(self, n_tasks: int, device: torch.device, step: int = 0):
        self.n_tasks, self.device = n_tasks, device
        self.loss = torch.zeros(n_tasks, dtype=torch.float64, device=device)
        self.tokens = torch.zeros_like(self.loss)
        self.step_loss, self.step_tokens = torch.zeros_like(self.loss), torch.zeros_like(self.loss)  # one step's
        self.nonfinite = torch.zeros(3, dtype=torch.float64, device=device)  # count, first step, its loss
        self.zero = torch.zeros((), dtype=torch.float64, device=device)
        self.step = torch.full((), float(step), dtype=torch.float64, device=device)  # counted on the device

    def reset(self) -> None:
        self.loss.zero_()
        self.tokens.zero_()

    def reset_nonfinite(self) -> None:
        self.nonfinite.zero_()

    def add_step(self, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        """One step's per-task sums, in place: no host value enters, nothing is read back."""
        self.step += 1
        total = loss.sum()
        finite = torch.isfinite(total)
        self.loss += torch.where(finite, loss, 0.0)
        self.tokens += torch.where(finite, tokens, 0.0)
        first = ~finite & (self.nonfinite[0] == 0)
        self.nonfinite.copy_(torch.where(first, torch.stack([self.zero, self.step, total]), self.nonfinite))
        self.nonfinite[0] += (~finite).double()

    def read(self) -> tuple[list[float], list[float]]:
        """(loss sums, token counts) per task over all ranks."""
        both = all_reduce(torch.cat([self.loss, self.tokens]).to(collective_device(self.device)))
        sums = both.tolist()
        return sums[: self.n_tasks], sums[self.n_tasks :]

    def read_nonfinite(self) -> tuple[int, int, float]:
        """(non-finite steps on the worst rank, first such step on any rank, its loss there)."""
        every = all_gather(self.nonfinite.to(collective_device(self.device)))
        bad = [r for r in (t.tolist() for t in every) if r[0] > 0]
        if not bad:
            return 0, 0, 0.0
        first = min(bad, key=lambda r: r[1])
        return int(max(r[0] for r in bad)), int(first[1]), first[2]


@dataclass
class Window:
    """Throughput since the last logging step (host counts from the loader): wall time minus
    held-out eval and saving."""

    began: float
    skipped_before: int
    tokens: int = 0
    slots: int = 0
    rows: int = 0
    target_tokens: int = 0
    attention_sq: int = 0
    paused: float = 0.0

    def add(self, step: Step, rows: int) -> None:
        self.tokens += step.tokens
        self.slots += step.slots
        self.rows += rows
        self.target_tokens += step.target_tokens
        self.attention_sq += step.attention_sq


def nonfinite_steps(tally: LossTally, skipped: int, skip_nonfinite: bool, so_far: int) -> int:
    """The steps with a non-finite loss since the tally's last read (0 when none), each of which
    the engine skipped; raises RunError otherwise. ZeRO's overflow check drops an update whose
    gradient is not finite (and counts it, `skipped`); without it (stage 0) the weights are already
    spoiled, so the run stops either way."""
    bad, first, value = tally.read_nonfinite()
    tally.reset_nonfinite()
    if not bad:
        return 0
    if not (skip_nonfinite and skipped >= bad):
        why = "" if skip_nonfinite else " (train.skip_nonfinite=true skips such steps at ZeRO stage >= 1)"
        raise RunError(f"non-finite loss ({value}) at step {first}; stopping{why}")
    log.warning("non-finite loss at step %d: update skipped (%d so far)", first, so_far + bad)
    return bad


def grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


@torch.no_grad()
def heldout_loss(engine, names: list[str], batches: list[dict]) -> dict[str, float]:
    """Token-mean loss over all batches (`eval/loss`) and per task (`eval/loss/<task>`)."""
    from ift.distributed import all_reduce, collective_device, rank, world_size
    from ift.engine import model_inputs

    sums = torch.zeros(len(names), dtype=torch.float64, device=engine.device)
    counts = torch.zeros_like(sums)
    was_training = engine.module.training
    engine.module.eval()
    world = world_size()
    mine = batches[rank() :: world]
    for i in range(-(-len(batches) // world)):  # the most batches any rank has
        inputs, task = model_inputs(mine[i] if i < len(mine) else batches[0], engine.device)
        losses = engine(**inputs).double()  # per target token
        if i < len(mine):
            sums.index_add_(0, task, losses)
            counts.index_add_(0, task, torch.ones_like(losses))
    engine.module.train(was_training)
    both = all_reduce(torch.cat([sums, counts]).to(collective_device(engine.device))).tolist()
    total, count = both[: len(names)], both[len(names) :]
    out = {"eval/loss": sum(total) / max(sum(count), 1)}
    out.update({f"eval/loss/{n}": total[i] / count[i] for i, n in enumerate(names) if count[i] > 0})
    return out
