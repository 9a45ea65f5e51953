"""The distributed, resumable loader: mixture stream -> packing windows -> global rows -> ranks.

Every rank computes the same global row stream (cheap: lengths only) and collates only its own
rows: global row k of a step goes to rank k mod world_size. So the set of rows in an optimizer
step, and the number of target tokens the loss is normalized by, do not depend on world size.
State is (stream state at the current window's start, window index, next row): a resume re-packs
at most one window and replays nothing before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ift.config import Config
from ift.data.mixture import MixtureStream
from ift.data.packing import best_fit_decreasing, collate, sequence_slice
from ift.data.tokenize import TokenizedTask
from ift.errors import UserError

CARRY_BELOW = 0.95  # a packed row filled less than this waits for the next window's examples


@dataclass
class Step:
    micro_batches: list  # grad_accum dicts of tensors for this rank
    target_tokens: int  # target tokens in the whole global batch (all ranks, all micro-batches)
    tokens: int  # non-padding tokens in the global batch
    slots: int  # token slots (incl. padding) in the global batch
    attention_sq: int = 0  # sum of squared example lengths in the global batch (attention FLOPs, ift.flops)


class PackedLoader:
    def __init__(
        self,
        tasks: list[TokenizedTask],
        rates: dict[str, float],
        *,
        seed: int,
        seq_len: int,
        window: int,
        packing: bool,
        micro_batch_size: int,
        grad_accum: int,
        train_on_prompt: bool,
        pad_id: int,
        world_size: int = 1,
        rank: int = 0,
        sequence_parallel: int = 1,
        sequence_rank: int = 0,
    ):
        """world_size, rank: data-parallel. With sequence_parallel=N every rank of an SP group gets
        the same rows and keeps its slice `sequence_rank` of N (ift.sequence_parallel)."""
        self.tasks = tasks
        self.sequence_parallel, self.sequence_rank = sequence_parallel, sequence_rank
        self.seed, self.seq_len, self.window, self.packing = seed, seq_len, window, packing
        self.micro_batch_size, self.grad_accum = micro_batch_size, grad_accum
        self.world_size, self.rank = world_size, rank
        self.train_on_prompt, self.pad_id = train_on_prompt, pad_id
        names = [t.name for t in tasks]
        self.stream = MixtureStream(names, [len(t) for t in tasks], [rates[n] for n in names], seed)
        self.window_index = -1
        self.window_start = self.stream.state_dict()
        self.rows: list[list[tuple[int, int]]] = []
        self.next_row = 0
        # Examples of a window's under-filled rows move to the next window once (fill >= 99.5%).
        self.carried_in: list[tuple[int, int]] = []
        self.carry_out: list[tuple[int, int]] = []
        self.steps = 0

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world_size

    def _target_tokens(self, t: int, e: int) -> int:
        task = self.tasks[t]
        return int(task.lengths[e] - 1 if self.train_on_prompt else task.n_target[e])

    def _fill_window(self, carried: list[tuple[int, int]]) -> None:
        self.window_start, self.carried_in = self.stream.state_dict(), list(carried)
        draws: list[tuple[int, int]] = [(d[0], d[1]) for d in carried] + self.stream.take(self.window)
        self.carry_out = []
        if self.packing:
            lengths = [self.tasks[t].lengths[e] for t, e in draws]
            bins = best_fit_decreasing(lengths, self.seq_len)
            keep = []
            for b in bins:
                fill = sum(lengths[i] for i in b) / self.seq_len
                if fill < CARRY_BELOW and all(i >= len(carried) for i in b):
                    self.carry_out += [draws[i] for i in b]
                else:
                    keep.append(b)
            # Shuffle rows so that batches are not ordered by length (BFD opens the longest first).
            order = np.random.default_rng([self.seed, 0xB1F, self.window_index]).permutation(len(keep))
            self.rows = [[draws[i] for i in keep[b]] for b in order]
        else:
            self.rows = [[d] for d in draws]
        self.next_row = 0

    def _take_rows(self, n: int) -> list[list[tuple[int, int]]]:
        out: list[list[tuple[int, int]]] = []
        while len(out) < n:
            while self.next_row == len(self.rows):  # a window may carry all of its rows forward
                self.window_index += 1
                self._fill_window(self.carry_out)
            out.append(self.rows[self.next_row])
            self.next_row += 1
        return out

    def _collate(self, rows) -> dict:
        data = [[(self.tasks[t].ids(e), self.tasks[t].mask(e), t) for t, e in row] for row in rows]
        batch = collate(
            data,
            self.seq_len if self.packing else None,
            self.pad_id,
            self.train_on_prompt,
            multiple_of=self.sequence_parallel,
        )
        if self.sequence_parallel > 1:
            return sequence_slice(batch, self.sequence_rank, self.sequence_parallel)
        return batch

    def next_step(self) -> Step:
        rows = self._take_rows(self.rows_per_step)
        mine = rows[self.rank :: self.world_size]
        mb = self.micro_batch_size
        micro = [self._collate(mine[j * mb : (j + 1) * mb]) for j in range(self.grad_accum)]
        tokens = sum(int(self.tasks[t].lengths[e]) for row in rows for t, e in row)
        if self.packing:
            slots = len(rows) * self.seq_len
        else:  # each micro-batch pads to its longest row; count slots over the global batch
            per_micro = [
                rows[j * mb * self.world_size : (j + 1) * mb * self.world_size] for j in range(self.grad_accum)
            ]
            slots = 0
            for group in per_micro:
                for r in range(self.world_size):
                    part = group[r :: self.world_size]
                    slots += len(part) * max(int(self.tasks[t].lengths[e]) for row in part for t, e in row)
        self.steps += 1
        attention_sq = sum(int(self.tasks[t].lengths[e]) ** 2 for row in rows for t, e in row)
        return Step(micro, sum(self._target_tokens(t, e) for row in rows for t, e in row), tokens, slots, attention_sq)

    def set_rates(self, rates: list[float]) -> None:
        """Draw at new task rates from the next row on: the rows of the current window not handed
        out yet (and its carried examples) open a new window with the draws at the new rates, so
        nothing drawn is lost or repeated and the change sits at a step boundary."""
        leftover = [d for row in self.rows[self.next_row :] for d in row] + self.carry_out
        self.stream.set_rates(rates)
        self.window_index += 1
        self._fill_window(leftover)

    @property
    def examples_drawn(self) -> int:
        """Examples consumed by the steps taken so far (drawn minus the unconsumed rest of the window)."""
        pending = sum(len(r) for r in self.rows[self.next_row :]) + len(self.carry_out)
        return self.stream.drawn - pending

    def state_dict(self) -> dict:
        return {
            "window_index": self.window_index,
            "window_start": self.window_start,
            "carried_in": [list(d) for d in self.carried_in],
            "next_row": self.next_row,
            "steps": self.steps,
            "settings": self._settings(),
        }

    def _settings(self) -> dict:
        return {"seq_len": self.seq_len, "window": self.window, "packing": self.packing, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["settings"] != self._settings():
            raise UserError(
                f"loader state was saved with {state['settings']}, this run has {self._settings()}; "
                "the data order cannot continue exactly"
            )
        self.stream.load_state_dict(state["window_start"])
        self.rows, self.carry_out, self.carried_in = [], [], []
        self.window_index = state["window_index"]
        self.steps = state["steps"]
        if self.window_index >= 0:
            self._fill_window([tuple(d) for d in state["carried_in"]])
        self.next_row = state["next_row"]


class Prefetcher:
    """The loader one step ahead: a background thread collates step k+1 (into pinned memory on
    CUDA, via `prepare`) while step k computes. state_dict / examples_drawn describe the steps
    handed out so far, not the one being prepared, so a checkpoint resumes exactly."""

    def __init__(self, loader: PackedLoader, prepare=lambda batch: batch):
        self.loader, self.prepare = loader, prepare
        self._start()

    def _start(self) -> None:
        import queue
        import threading

        self._state, self.examples_drawn = self.loader.state_dict(), self.loader.examples_drawn
        self._ready: queue.Queue = queue.Queue(maxsize=1)
        self._closing = False
        self._thread = threading.Thread(target=self._produce, daemon=True, name="ift-prefetch")
        self._thread.start()

    def set_rates(self, rates: list[float]) -> None:
        """New task rates from the next step on: the thread stops, the loader goes back to the
        steps handed out (it ran ahead) and changes its rates there, and the thread starts again."""
        import queue

        self._closing = True
        while self._thread.is_alive():
            try:
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        if self.loader.window_index == self._state["window_index"]:  # still in that window: rewind the row
            self.loader.next_row, self.loader.steps = self._state["next_row"], self._state["steps"]
        else:
            self.loader.load_state_dict(self._state)
        self.loader.set_rates(rates)
        self._start()

    def _produce(self) -> None:
        try:
            while not self._closing:
                step = self.loader.next_step()
                step.micro_batches = [self.prepare(m) for m in step.micro_batches]
                self._ready.put((step, self.loader.state_dict(), self.loader.examples_drawn))
        except BaseException as e:  # handed to the training thread, which raises it
            self._ready.put(e)

    def next_step(self) -> Step:
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise item
        step, self._state, self.examples_drawn = item
        return step

    def state_dict(self) -> dict:
        return self._state

    @property
    def rows_per_step(self) -> int:
        return self.loader.rows_per_step


def training_loader(
    cfg: Config,
    tasks: list[TokenizedTask],
    rates: dict[str, float],
    pad_id: int,
    seed: int,
    dp_world: int = 1,
    dp_rank: int = 0,
    sp_rank: int = 0,
) -> PackedLoader:
    """A run's data stream from its config (data.* packing, train.* batch shape) for one rank:
    data-parallel rank `dp_rank` of `dp_world`, slice `sp_rank` of a sequence-parallel group."""
    d, t = cfg.data, cfg.train
    return PackedLoader(
        tasks,
        rates,
        seed=seed,
        seq_len=d.max_seq_len,
        window=d.pack_window,
        packing=d.packing,
        micro_batch_size=t.micro_batch_size,
        grad_accum=t.grad_accum,
        train_on_prompt=d.train_on_prompt,
        pad_id=pad_id,
        world_size=dp_world,
        rank=dp_rank,
        sequence_parallel=t.sequence_parallel,
        sequence_rank=sp_rank,
    )
