"""Mixing rates across tasks and the one global stream of (task, example) draws.

The stream depends only on (seed, rates, task sizes): not on world size, batch size or workers.
Task choice is low-discrepancy (smooth weighted round-robin with seeded offsets): after n draws
every task has been drawn n*rate (+/- 2) times, for every prefix, where plain multinomial
sampling would wander by sqrt(n). Within a task, examples follow a fresh seeded permutation
each epoch, and each task's epoch advances on its own.
"""

from __future__ import annotations

import fnmatch
import math
import zlib

import numpy as np

from ift.config import MixtureConfig
from ift.errors import UserError


def _raw_rates(
    names: list[str], sizes: dict[str, int], strategy: str, cap, temperature: float, weights: dict, where: str
) -> dict[str, float]:
    if strategy == "explicit":
        missing = [n for n in names if n not in weights]
        if missing:
            raise UserError(f"{where}.weights: no weight for task(s) {missing} (explicit strategy needs one per task)")
        return {n: float(weights[n]) for n in names}
    rates = {}
    for n in names:
        r = float(min(sizes[n], cap) if cap else sizes[n])
        rates[n] = r ** (1.0 / temperature) if strategy == "temperature" else r
    return rates


def _check_weights(weights: dict, known: list[str], where: str) -> None:
    """The weights name loaded tasks (their values were checked with the config)."""
    for name in weights:
        if name not in known:
            close = [k for k in known if name in k or k in name][:1]
            raise UserError(
                f"{where}.weights: unknown task '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
            )


def _normalize(rates: dict[str, float], where: str) -> dict[str, float]:
    total = sum(rates.values())
    if not (total > 0 and math.isfinite(total)):
        raise UserError(f"{where}: rates sum to {total}; every task needs a positive rate (empty tasks?)")
    return {n: r / total for n, r in rates.items()}


def task_rates(mixture: MixtureConfig, sizes: dict[str, int], where: str = "data.mixture") -> dict[str, float]:
    """Normalized sampling rate of every task (in `sizes` order). With groups, a task's rate is
    (group weight, normalized) x (its rate inside the group, normalized)."""
    names = list(sizes)
    empty = [n for n in names if sizes[n] == 0]
    if empty and mixture.strategy != "explicit":
        raise UserError(f"{where}: task(s) {empty} have no examples")
    _check_weights(mixture.weights, names, where)
    if not mixture.groups:
        raw = _raw_rates(names, sizes, mixture.strategy, mixture.cap, mixture.temperature, mixture.weights, where)
        return _normalize(raw, where)
    owner: dict[str, str] = {}
    group_rates: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    for gi, g in enumerate(mixture.groups):
        gw = f"{where}.groups[{gi}]"
        chosen = []
        for pattern in g.tasks:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise UserError(f"{gw}.tasks: '{pattern}' matches no loaded task")
            chosen += [n for n in hits if n not in chosen]
        for n in chosen:
            if n in owner:
                raise UserError(f"{gw}.tasks: task '{n}' is already in group '{owner[n]}'")
            owner[n] = g.name
        members[g.name] = chosen
        group_rates[g.name] = g.weight
    orphans = [n for n in names if n not in owner]
    if orphans:
        raise UserError(f"{where}.groups: task(s) {orphans[:5]}{'...' if len(orphans) > 5 else ''} belong to no group")
    out: dict[str, float] = {}
    group_rates = _normalize(group_rates, f"{where}.groups")
    for gi, g in enumerate(mixture.groups):
        gw = f"{where}.groups[{gi}]"
        strategy = g.strategy or mixture.strategy
        _check_weights(g.weights, members[g.name], gw)
        weights = g.weights or mixture.weights
        cap = g.cap if g.cap is not None else mixture.cap
        temperature = g.temperature if g.temperature is not None else mixture.temperature
        inner = _normalize(_raw_rates(members[g.name], sizes, strategy, cap, temperature, weights, gw), gw)
        out.update({n: group_rates[g.name] * r for n, r in inner.items()})
    return {n: out[n] for n in names}


def _task_key(name: str) -> int:
    return zlib.crc32(name.encode())


class MixtureStream:
    """Infinite, deterministic stream of (task index, example index) draws with exact state."""

    def __init__(self, names: list[str], sizes: list[int], rates: list[float], seed: int):
        self.names, self.sizes, self.seed = list(names), list(sizes), seed
        self.rates = np.asarray(rates, dtype=np.float64)
        # Seeded offsets in [0, 1) vary the interleaving without loosening the +/-1 bound.
        self.credit = np.random.default_rng([seed, 0x5EED]).random(len(names))
        self.drawn = 0
        self.epoch = [0] * len(names)
        self.pos = [0] * len(names)
        self._perm: dict[int, tuple[int, np.ndarray]] = {}  # task -> (epoch, its permutation)

    def _permutation(self, t: int) -> np.ndarray:
        epoch, perm = self._perm.get(t, (-1, np.empty(0, dtype=np.int64)))
        if epoch != self.epoch[t]:
            rng = np.random.default_rng([self.seed, _task_key(self.names[t]), self.epoch[t]])
            perm = rng.permutation(self.sizes[t])
            self._perm[t] = (self.epoch[t], perm)
        return perm

    def next_task(self) -> int:
        self.credit += self.rates
        t = int(np.argmax(self.credit))
        self.credit[t] -= 1.0
        return t

    def __next__(self) -> tuple[int, int]:
        t = self.next_task()
        example = int(self._permutation(t)[self.pos[t]])
        self.drawn += 1
        self.pos[t] += 1
        if self.pos[t] == self.sizes[t]:
            self.epoch[t] += 1
            self.pos[t] = 0
        return t, example

    def __iter__(self):
        return self

    def take(self, n: int) -> list[tuple[int, int]]:
        return [next(self) for _ in range(n)]

    def set_rates(self, rates: list[float]) -> None:
        """Draw at new rates from the next draw on (an adaptive mixture); the credits carry over."""
        self.rates = np.asarray(rates, dtype=np.float64)

    def state_dict(self) -> dict:
        return {
            "drawn": self.drawn,
            "credit": [float(c) for c in self.credit],
            "epoch": list(self.epoch),
            "pos": list(self.pos),
            "names": list(self.names),
            "rates": [float(r) for r in self.rates],
        }

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names:
            raise UserError("data state belongs to a different task list; see train.resume_allow_mismatch")
        self.drawn = state["drawn"]
        self.credit = np.asarray(state["credit"], dtype=np.float64)
        self.epoch, self.pos = list(state["epoch"]), list(state["pos"])
        if "rates" in state:  # an adaptive mixture's rates at that point (older states: the configured ones)
            self.rates = np.asarray(state["rates"], dtype=np.float64)


def mixture_table(
    tasks, rates: dict[str, float], mixture: MixtureConfig, planned_draws: int, samples: int, seed: int
) -> list[dict]:
    """One row per task: examples, cap, target rate, expected epochs over the planned run, and the
    realized fraction in the first `samples` draws of the real stream."""
    names = [t.name for t in tasks]
    counts = np.zeros(len(names), dtype=np.int64)
    if samples:
        stream = MixtureStream(names, [len(t) for t in tasks], [rates[n] for n in names], seed)
        for _ in range(samples):
            counts[stream.next_task()] += 1
    caps = {n: mixture.cap for n in names}
    for g in mixture.groups:
        for n in names:
            if any(fnmatch.fnmatchcase(n, p) for p in g.tasks) and g.cap is not None:
                caps[n] = g.cap
    return [
        {
            "task": t.name,
            "schema": t.schema,
            "examples": len(t),
            "skipped": sum(t.skipped.values()),
            "cap": caps[t.name],
            "rate": rates[t.name],
            "epochs": planned_draws * rates[t.name] / max(len(t), 1),
            "realized": counts[i] / samples if samples else None,
        }
        for i, t in enumerate(tasks)
    ]


def plot_rates(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * n + 2), 4.5))
    x = np.arange(n)
    ax.bar(x - 0.2, [r["rate"] for r in rows], width=0.4, label="target rate")
    ax.bar(x + 0.2, [r["realized"] or 0 for r in rows], width=0.4, label="realized")
    ax.set_xticks(x, [r["task"] for r in rows], rotation=90, fontsize=6 if n > 30 else 8)
    ax.set_ylabel("fraction of examples")
    ax.set_title("Mixture: target vs realized task rates")
    ax.legend(loc="lower right", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
