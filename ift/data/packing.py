"""Best-fit-decreasing packing and the collation of packed rows.

A packed row concatenates whole examples; `position_ids` restart at 0 for every example, which is
what lets the model keep attention inside each example (see ift/model.py), and labels are shifted
*within* each example so no token is ever predicted from another example.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import torch

IGNORE = -100


def best_fit_decreasing(lengths, capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `capacity`; each item goes to the fullest
    bin it still fits in, largest items first. Deterministic: ties break by index."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin index)
    for i in order:
        size = int(lengths[i])
        k = bisect.bisect_left(free, (size, -1))
        if k < len(free):
            remaining, b = free.pop(k)
            bins[b].append(i)
        else:
            b, remaining = len(bins), capacity
            bins.append([i])
        remaining -= size
        if remaining > 0:
            bisect.insort(free, (remaining, b))
    return [sorted(b) for b in bins]


def prompt_mask(length: int, n_prompt: int) -> np.ndarray:
    """The target mask of an example whose first n_prompt tokens are its prompt."""
    mask = np.ones(length, dtype=np.int8)
    mask[:n_prompt] = 0
    return mask


def example_labels(ids: np.ndarray, mask: np.ndarray, train_on_prompt: bool) -> np.ndarray:
    """labels[t] = ids[t+1] where token t+1 is a target token (mask 1) of the same example, else IGNORE."""
    labels = np.full(len(ids), IGNORE, dtype=np.int64)
    labels[:-1] = ids[1:]
    if not train_on_prompt:
        labels[:-1][np.asarray(mask[1:]) == 0] = IGNORE
    return labels


def collate(
    rows: list[list[tuple[np.ndarray, np.ndarray, int]]],
    seq_len: int | None,
    pad_id: int,
    train_on_prompt: bool,
    multiple_of: int = 1,
) -> dict[str, torch.Tensor]:
    """rows: per row, a list of (token ids, target mask, task index). Packed rows are padded to
    `seq_len`; with seq_len=None (no packing) rows pad to the longest row, rounded up to a multiple
    of `multiple_of` (sequence parallelism splits it), and carry an attention_mask."""
    longest = max(sum(len(e[0]) for e in row) for row in rows)
    width = seq_len or -(-longest // multiple_of) * multiple_of
    n = len(rows)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    labels = np.full((n, width), IGNORE, dtype=np.int64)
    position_ids = np.zeros((n, width), dtype=np.int64)
    task_ids = np.full((n, width), -1, dtype=np.int64)
    attention_mask = np.zeros((n, width), dtype=np.int64)
    segments = []  # lengths of the examples and padding tails, row after row (flash-attention varlen)
    for r, row in enumerate(rows):
        at = 0
        for ids, mask, task in row:
            segments.append(len(ids))
            end = at + len(ids)
            input_ids[r, at:end] = ids
            labels[r, at:end] = example_labels(ids, mask, train_on_prompt)
            position_ids[r, at:end] = np.arange(len(ids))
            task_ids[r, at:end] = task
            attention_mask[r, at:end] = 1
            at = end
        position_ids[r, at:] = np.arange(width - at)  # padding acts as one more (ignored) sequence
        if width > at:
            segments.append(width - at)
    batch: dict[str, Any] = {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(position_ids),
        "task_ids": torch.from_numpy(task_ids),
    }
    # Flat positions of the target tokens and their tasks, computed here on the host so that the
    # loss selects targets and tallies them per task without a device synchronization.
    target_index = np.flatnonzero(labels.reshape(-1) != IGNORE)
    batch["target_index"] = torch.from_numpy(target_index)
    batch["target_task"] = torch.from_numpy(task_ids.reshape(-1)[target_index])
    if seq_len is None:
        batch["attention_mask"] = torch.from_numpy(attention_mask)
    else:  # the micro-batch as one row of sequences, for flash-attention's varlen kernel (ift.model)
        batch["cu_seq_lens"] = torch.from_numpy(np.concatenate([[0], np.cumsum(segments)]).astype(np.int32))
        batch["max_length"] = int(max(segments))
    return batch


def sequence_slice(batch: dict[str, torch.Tensor], part: int, parts: int) -> dict[str, Any]:
    """Sequence parallelism (ift.sequence_parallel): the contiguous part `part` of `parts` of every
    row of a collated micro-batch. position_ids stay those of the whole row (attention gathers
    them), and labels were shifted before slicing, so a target at a slice boundary is kept; the
    target positions and tasks are those of the slice. The whole micro-batch's sequence
    boundaries (as flash-attention's varlen kernel takes them, the micro-batch as one row) travel as
    sp_cu_seq_lens / sp_max_length, and sp_one_sequence says that every row is one example (no
    mask needed), for the attention over the gathered rows."""
    width = batch["input_ids"].shape[1]
    if width % parts:
        raise ValueError(f"a row of {width} tokens does not split into {parts} equal parts")
    at, step = part * width // parts, width // parts
    out: dict[str, Any] = {
        k: batch[k][:, at : at + step].contiguous() for k in ("input_ids", "labels", "position_ids", "task_ids")
    }
    flat_labels, flat_tasks = out["labels"].reshape(-1), out["task_ids"].reshape(-1)
    target_index = torch.nonzero(flat_labels != IGNORE).flatten()
    out["target_index"] = target_index
    out["target_task"] = flat_tasks.index_select(0, target_index)
    # every sequence (example or padding tail) starts where position_ids restart at 0
    starts = torch.nonzero(batch["position_ids"].reshape(-1) == 0).flatten()
    cu = torch.cat([starts, torch.tensor([batch["position_ids"].numel()])]).to(torch.int32)
    out["sp_cu_seq_lens"], out["sp_max_length"] = cu, int((cu[1:] - cu[:-1]).max())
    out["sp_one_sequence"] = len(starts) == batch["position_ids"].shape[0]  # each row one example, no padding
    return out
