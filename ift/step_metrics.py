"""What a logging step reports, gathered between logging steps without waiting for the device:
per-task loss sums (`LossTally`) and throughput (`Window`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ift.data.loader import Step
from ift.distributed import all_gather, all_reduce, collective_device


class LossTally:
    """Per-task sums of target-token losses and target-token counts since the last logging step,
    kept on the model's device so that no step waits for the device; read on logging steps. A
    step whose loss is non-finite on this rank is left out of the sums and counted, with the
    first such step and its loss, for check_finite."""

    def __init__(self, n_tasks: int, device: torch.device):
        self.n_tasks, self.device = n_tasks, device
        self.reset()
        self.reset_nonfinite()

    def reset(self) -> None:
        self.loss = torch.zeros(self.n_tasks, dtype=torch.float64, device=self.device)
        self.tokens = torch.zeros(self.n_tasks, dtype=torch.float64, device=self.device)

    def reset_nonfinite(self) -> None:
        self.nonfinite = torch.zeros(3, dtype=torch.float64, device=self.device)  # count, first step, its loss

    def add_step(self, step: int, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        total = loss.sum()
        finite = torch.isfinite(total)
        self.loss += torch.where(finite, loss, 0.0)
        self.tokens += torch.where(finite, tokens, 0.0)
        first = ~finite & (self.nonfinite[0] == 0)
        self.nonfinite = torch.where(first, torch.stack([total.new_tensor(0.0), total.new_tensor(float(step)), total]),
                                     self.nonfinite)
        self.nonfinite[0] += (~finite).double()

    def read(self) -> tuple[list[float], list[float]]:
        """(loss sums, token counts) per task over all ranks."""
        both = all_reduce(torch.cat([self.loss, self.tokens]).to(collective_device(self.device)))
        both = both.tolist()
        return both[: self.n_tasks], both[self.n_tasks:]

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
    """Throughput since the last logging step: wall time minus held-out eval and saving."""
    began: float
    skipped_before: int
    tokens: int = 0
    slots: int = 0
    rows: int = 0
    paused: float = 0.0

    def add(self, step: Step, rows: int) -> None:
        self.tokens += step.tokens
        self.slots += step.slots
        self.rows += rows
