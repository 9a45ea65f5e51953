"""An adaptive mixture: new task rates every `data.mixture.adapt.every` steps from each task's loss.

The rates are a pure function of the per-task statistics since the last update, which every rank
reads from the same all-reduced tensors, so every rank computes the same rates; the loader then
draws at them from the next row on (`PackedLoader.set_rates`). So the global sample stream is a
function of (seed, step, rates history), and the history is in the checkpoint.

Rules (log-space multiplicative weights, started at the configured rates, the prior):
- `excess_loss` (DoReMi, Xie et al. 2023, arXiv 2305.10429, online form): w_i += eta * (L_i - ref_i).
  With a reference run (its last logged `loss/<task>`, a model trained on the base mixture) the
  excess is clipped at 0, as in DoReMi; with `reference: initial` (each task's loss over the first
  window) it is signed: the tasks that improved least gain weight.
- `learning_progress` (an ODM-style bandit, Albalak et al. 2023, arXiv 2312.02406): w_i += eta *
  (L_i' - L_i) / L_i', the relative decrease of the task's loss since the previous window, with
  exploration `epsilon` spread uniformly. Every task is observed in every window (all of them are
  sampled), so no importance weighting is needed.
Then rates = (1 - smoothing) * softmax(w) + smoothing * base; `floor` lifts every task to a least
rate; with `cap`, no task is drawn for more epochs than the base mixture's most repeated task
(rate_i <= n_i / sum_j min(n_j, cap)). A task without a target token in the window keeps its
place (it gets the mean update).
"""

from __future__ import annotations

import json
import math

import numpy as np

from ift.config import AdaptConfig, MixtureConfig
from ift.errors import UserError

WHERE = "data.mixture.adapt"


def reference_losses(path: str, names: list[str]) -> np.ndarray:
    """Each task's last logged `loss/<task>` in a reference run's metrics.jsonl."""
    last: dict[str, float] = {}
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{WHERE}.reference: {path}:{n}: not JSON ({e.msg})") from None
                last.update({k[5:]: v for k, v in record.items() if k.startswith("loss/") and v is not None})
    except OSError as e:
        raise UserError(f"{WHERE}.reference: cannot read {path} ({e.strerror})") from None
    missing = [n for n in names if n not in last]
    if missing:
        raise UserError(f"{WHERE}.reference: {path} has no loss/<task> for task(s) {missing}")
    return np.array([last[n] for n in names], dtype=np.float64)


def rate_ceiling(sizes: list[int], cap: int | None) -> np.ndarray | None:
    """rate_i <= n_i / sum_j min(n_j, cap): no task more epochs than the base's most repeated one."""
    if not cap:
        return None
    n = np.asarray(sizes, dtype=np.float64)
    return n / np.minimum(n, cap).sum()


def _softmax(w: np.ndarray) -> np.ndarray:
    e = np.exp(w - w.max())
    return e / e.sum()


def _fill_unobserved(term: np.ndarray) -> np.ndarray:
    seen = np.isfinite(term)
    return np.where(seen, term, term[seen].mean() if seen.any() else 0.0)


def bound(rates: np.ndarray, floor: float, ceiling: np.ndarray | None) -> np.ndarray:
    """Lift every rate to `floor` (keeping the sum 1), then clip at `ceiling`, handing the excess to
    the tasks below theirs in proportion to their rates."""
    rates = floor + (1 - len(rates) * floor) * rates
    if ceiling is None:
        return rates
    ceiling = np.maximum(ceiling, floor)
    for _ in range(len(rates)):
        over = rates > ceiling + 1e-15
        if not over.any():
            break
        excess = (rates[over] - ceiling[over]).sum()
        rates = np.where(over, ceiling, rates)
        free = rates < ceiling - 1e-15
        rates[free] += excess * rates[free] / rates[free].sum()
    return rates


class Adapter:
    """The rule's state (log weights, the losses it compares against), the statistics since the
    last update, and the rates history [(step, rates)]."""

    def __init__(
        self,
        cfg: AdaptConfig,
        names: list[str],
        base: list[float],
        sizes: list[int],
        cap: int | None,
        heldout_names: list[str] | None = None,
    ):
        self.cfg, self.names = cfg, list(names)
        k = len(names)
        if k < 2:
            raise UserError(f"{WHERE}.rule: an adaptive mixture needs at least 2 tasks, got {k} ({names})")
        if cfg.floor * k > 1:
            raise UserError(f"{WHERE}.floor: {cfg.floor} x {k} tasks = {cfg.floor * k:g} > 1")
        if cfg.signal == "heldout":
            missing = [n for n in names if n not in (heldout_names or [])]
            if missing:
                raise UserError(
                    f"{WHERE}.signal: heldout needs eval.tasks to hold every training task; missing {missing}"
                )
        self.base = np.asarray(base, dtype=np.float64)
        self.ceiling = rate_ceiling(sizes, cap)
        by_run = cfg.rule == "excess_loss" and cfg.reference != "initial"
        self.reference = reference_losses(cfg.reference, self.names) if by_run else None
        self.log_weights = np.log(self.base)
        self.compare_to: np.ndarray | None = self.reference  # initial loss / previous window's loss
        self.loss_sums, self.token_sums = np.zeros(k), np.zeros(k)
        self.rates = self.base.copy()
        self.history: list[tuple[int, list[float]]] = [(0, self.rates.tolist())]

    def add(self, loss_sums: list[float], token_sums: list[float]) -> None:
        """Fold in all-reduced per-task sums (at logging steps, saves and updates)."""
        self.loss_sums += np.asarray(loss_sums)
        self.token_sums += np.asarray(token_sums)

    def window_losses(self) -> np.ndarray:
        """Per-task token-mean loss since the last update (nan for a task with no target token)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.token_sums > 0, self.loss_sums / self.token_sums, np.nan)

    def update(self, step: int, losses: np.ndarray) -> np.ndarray:
        """New rates from this window's per-task losses; the window's sums restart."""
        c = self.cfg
        self.loss_sums[:], self.token_sums[:] = 0.0, 0.0
        if self.compare_to is None:  # the first window: what later windows are compared against
            self.compare_to = losses.copy()
            return self._record(step, self.rates)
        if c.rule == "excess_loss":
            term = losses - self.compare_to
            if self.reference is not None:
                term = np.maximum(term, 0.0)
            else:  # a task first seen now is compared against its first loss from here on
                self.compare_to = np.where(np.isfinite(self.compare_to), self.compare_to, losses)
        else:
            term = (self.compare_to - losses) / self.compare_to
            self.compare_to = np.where(np.isfinite(losses), losses, self.compare_to)
        self.log_weights = self.log_weights + c.eta * _fill_unobserved(term)
        self.log_weights -= self.log_weights.max()  # keeps the weights in range; softmax ignores it
        adapted = _softmax(self.log_weights)
        if c.rule == "learning_progress":
            adapted = (1 - c.epsilon) * adapted + c.epsilon / len(adapted)
        rates = bound((1 - c.smoothing) * adapted + c.smoothing * self.base, c.floor, self.ceiling)
        return self._record(step, rates / rates.sum())

    def _record(self, step: int, rates: np.ndarray) -> np.ndarray:
        self.rates = rates
        self.history.append((step, rates.tolist()))
        return rates

    def metrics(self) -> dict[str, float]:
        """`mix/<task>`: the rates in force from this step on."""
        return {f"mix/{n}": float(r) for n, r in zip(self.names, self.rates)}

    def state_dict(self) -> dict:
        def plain(a):
            return None if a is None else [float(x) if math.isfinite(x) else None for x in a]

        return {
            "names": self.names,
            "log_weights": plain(self.log_weights),
            "compare_to": plain(self.compare_to),
            "loss_sums": plain(self.loss_sums),
            "token_sums": plain(self.token_sums),
            "rates": plain(self.rates),
            "history": [[s, list(r)] for s, r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names:
            raise UserError("adaptive-mixture state belongs to a different task list; see train.resume_allow_mismatch")

        def array(xs):
            return None if xs is None else np.array([np.nan if x is None else x for x in xs], dtype=np.float64)

        self.log_weights, self.compare_to = array(state["log_weights"]), array(state["compare_to"])
        self.loss_sums, self.token_sums = array(state["loss_sums"]), array(state["token_sums"])
        self.rates = array(state["rates"])
        self.history = [(s, list(r)) for s, r in state["history"]]


def build_adapter(
    mixture: MixtureConfig, tasks: list, rates: dict[str, float], heldout_names: list[str] | None
) -> Adapter:
    """The adapter of a run's mixture (data.mixture.adapt) over its tokenized tasks and base rates."""
    names = [t.name for t in tasks]
    return Adapter(
        mixture.adapt, names, [rates[n] for n in names], [len(t) for t in tasks], mixture.cap, heldout_names
    )
