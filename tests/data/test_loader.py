"""Tests for packing (ift.data.packing) and the distributed, resumable loader (ift.data.loader).

Data: the built-in train suite through load_tasks, a BPE trained on it, tokenize_tasks into a
per-module temporary cache. Nothing is downloaded and /work/shared is never touched.
"""

import json
import random
import time

import numpy as np
import pytest
import torch

from ift.config import DataConfig, MixtureConfig, TaskSource
from ift.data.loader import PackedLoader
from ift.data.mixture import task_rates
from ift.data.packing import IGNORE, best_fit_decreasing, collate, example_labels, prompt_mask
from ift.data.sources import load_tasks
from ift.data.tokenize import tokenize_tasks
from ift.errors import UserError
from ift.model import corpus_texts, train_bpe_tokenizer

SEQ = 256
KEYS = ("input_ids", "labels", "position_ids", "task_ids")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokenizer():
    tasks = load_tasks(DataConfig(tasks=[TaskSource(builtin="train", n=60)]), 0)
    return train_bpe_tokenizer(corpus_texts(tasks), 512)


def _tokenized(tokenizer, cache, n):
    data = DataConfig(tasks=[TaskSource(builtin="train", n=n)], cache_dir=str(cache), max_seq_len=SEQ)
    return tokenize_tasks(load_tasks(data, 0), tokenizer, data, 0)


@pytest.fixture(scope="module")
def suite(tokenizer, tmp_path_factory):
    """16 built-in tasks x 60 examples."""
    return _tokenized(tokenizer, tmp_path_factory.mktemp("cache"), 60)


@pytest.fixture(scope="module")
def small(tokenizer, tmp_path_factory):
    """16 built-in tasks x 6 examples: task epochs wrap every few steps."""
    return _tokenized(tokenizer, tmp_path_factory.mktemp("cache_small"), 6)


def rates_of(tt):
    return task_rates(MixtureConfig(), {t.name: len(t) for t in tt})


def make_loader(
    tt, pad_id, *, seq_len=SEQ, window=64, packing=True, mb=2, ga=1, world=1, rank=0, seed=0, train_on_prompt=False
):
    return PackedLoader(
        tt,
        rates_of(tt),
        seed=seed,
        seq_len=seq_len,
        window=window,
        packing=packing,
        micro_batch_size=mb,
        grad_accum=ga,
        train_on_prompt=train_on_prompt,
        pad_id=pad_id,
        world_size=world,
        rank=rank,
    )


def segments(position_ids_row, task_ids_row):
    """(start, end) of every example in a packed row (padding excluded)."""
    pos, task = position_ids_row.tolist(), task_ids_row.tolist()
    out, start = [], None
    for i, (p, t) in enumerate(zip(pos, task)):
        if p == 0:
            if start is not None:
                out.append((start, i))
            start = i if t >= 0 else None
    if start is not None:
        out.append((start, len(pos)))
    return out


def same_step(a, b):
    assert len(a.micro_batches) == len(b.micro_batches)
    for x, y in zip(a.micro_batches, b.micro_batches):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k], k
    assert (a.target_tokens, a.tokens, a.slots) == (b.target_tokens, b.tokens, b.slots)


# --------------------------------------------------------------------------- best-fit decreasing


def reference_bfd(lengths, capacity):
    """Naive best-fit decreasing: largest first, into the fullest bin it fits (lowest index on ties)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins, room = [], []
    for i in order:
        fits = [(room[b], b) for b in range(len(bins)) if room[b] >= lengths[i]]
        if fits:
            _, b = min(fits)
        else:
            b = len(bins)
            bins.append([])
            room.append(capacity)
        bins[b].append(i)
        room[b] -= lengths[i]
    return [sorted(b) for b in bins]


def first_fit(lengths, capacity):
    bins, room = [], []
    for i, n in enumerate(lengths):
        for b in range(len(bins)):
            if room[b] >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
    return bins


@pytest.mark.parametrize("seed", range(6))
def test_bfd_partition_capacity_and_reference(seed):
    rng = random.Random(seed)
    capacity = rng.choice([64, 256, 512])
    lengths = [rng.randint(1, capacity) if rng.random() < 0.2 else rng.randint(1, capacity // 4) for _ in range(300)]
    bins = best_fit_decreasing(lengths, capacity)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths)))  # every index exactly once
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert all(b == sorted(b) and b for b in bins)
    assert bins == best_fit_decreasing(list(lengths), capacity)  # deterministic
    assert bins == reference_bfd(lengths, capacity)
    assert len(bins) <= len(first_fit(lengths, capacity))
    lower_bound = -(-sum(lengths) // capacity)
    assert len(bins) <= 11 / 9 * lower_bound + 1  # the BFD guarantee


def test_bfd_numpy_lengths_and_edge_cases():
    assert best_fit_decreasing([], 10) == []
    assert best_fit_decreasing(np.array([10, 10, 10]), 10) == [[0], [1], [2]]
    assert best_fit_decreasing(np.array([6, 4, 5, 5]), 10) == [[0, 1], [2, 3]]
    # ties between equally full bins break by index
    assert best_fit_decreasing([3, 3, 3, 3], 6) == [[0, 1], [2, 3]]


def test_bfd_packs_tighter_than_first_fit_on_adversarial_order():
    lengths = [2, 2, 2, 2, 8, 8, 8, 8]  # first-fit in this order leaves 2-slots open forever
    assert len(first_fit(lengths, 10)) == 5
    assert len(best_fit_decreasing(lengths, 10)) == 4


# --------------------------------------------------------------------------- collate


def ex(ids, n_prompt, task):
    return (np.asarray(ids, dtype=np.int32), prompt_mask(len(ids), n_prompt), task)


def test_example_labels_shift_inside_example():
    ids = np.array([10, 11, 12, 13, 14, 15])
    assert example_labels(ids, prompt_mask(6, 3), False).tolist() == [IGNORE, IGNORE, 13, 14, 15, IGNORE]
    assert example_labels(ids, prompt_mask(6, 3), True).tolist() == [11, 12, 13, 14, 15, IGNORE]
    assert example_labels(ids, prompt_mask(6, 0), False).tolist() == [11, 12, 13, 14, 15, IGNORE]
    assert example_labels(ids, prompt_mask(6, 1), False).tolist() == [11, 12, 13, 14, 15, IGNORE]
    # two target spans (a conversation's assistant turns): each predicted from the token before it
    two_turns = np.array([0, 0, 1, 0, 1, 1], dtype=np.int8)
    assert example_labels(ids, two_turns, False).tolist() == [IGNORE, 12, IGNORE, 14, 15, IGNORE]


def test_collate_packed_row():
    a = ex([1, 2, 3, 4, 5], 3, 0)  # prompt 1 2 3, target 4 5
    b = ex([6, 7, 8], 1, 2)  # prompt 6, target 7 8
    c = ex([9, 10, 11, 12], 2, 1)
    batch = collate([[a, b, c], [b]], 16, pad_id=0, train_on_prompt=False)
    # packed: no attention_mask, position_ids carry the boundaries; targets listed for the loss
    assert set(batch) == set(KEYS) | {"target_index", "target_task", "cu_seq_lens", "max_length"}
    assert batch["target_index"].tolist() == [2, 3, 5, 6, 9, 10, 16, 17]
    assert batch["target_task"].tolist() == [0, 0, 2, 2, 1, 1, 2, 2]
    # flash-attention varlen: examples and padding tails as sequences of one flattened row
    assert batch["cu_seq_lens"].tolist() == [0, 5, 8, 12, 16, 19, 32] and batch["max_length"] == 13
    P = IGNORE
    assert batch["input_ids"][0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0]
    assert batch["labels"][0].tolist() == [P, P, 4, 5, P, 7, 8, P, P, 11, 12, P, P, P, P, P]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3]
    assert batch["task_ids"][0].tolist() == [0] * 5 + [2] * 3 + [1] * 4 + [-1] * 4
    assert batch["input_ids"][1].tolist() == [6, 7, 8] + [0] * 13
    assert batch["labels"][1].tolist() == [7, 8] + [P] * 14
    assert batch["position_ids"][1].tolist() == [0, 1, 2] + list(range(13))
    for k in KEYS:
        assert batch[k].dtype == torch.int64 and batch[k].shape == (2, 16)


def test_collate_train_on_prompt_and_full_row():
    a = ex([1, 2, 3, 4], 3, 0)
    b = ex([5, 6, 7, 8], 2, 1)
    batch = collate([[a, b]], 8, pad_id=0, train_on_prompt=True)
    assert batch["labels"][0].tolist() == [2, 3, 4, IGNORE, 6, 7, 8, IGNORE]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_collate_unpacked_pads_to_longest_with_mask():
    a = ex([1, 2, 3, 4, 5], 2, 0)
    b = ex([6, 7], 1, 3)
    batch = collate([[a], [b]], None, pad_id=99, train_on_prompt=False)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 99, 99, 99]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 3, 4, 5, IGNORE], [7, IGNORE, IGNORE, IGNORE, IGNORE]]
    assert batch["task_ids"].tolist() == [[0] * 5, [3, 3, -1, -1, -1]]


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_loader_rows_label_structure(suite, tokenizer, train_on_prompt):
    loader = make_loader(suite, tokenizer.pad_token_id, mb=4, train_on_prompt=train_on_prompt)
    eos = tokenizer.eos_token_id
    n_examples = 0
    for _ in range(3):
        step = loader.next_step()
        target = 0
        for batch in step.micro_batches:
            assert "attention_mask" not in batch
            for r in range(batch["input_ids"].shape[0]):
                ids, labels = batch["input_ids"][r], batch["labels"][r]
                pos, task = batch["position_ids"][r], batch["task_ids"][r]
                segs = segments(pos, task)
                assert len(segs) >= 2
                covered = 0
                for s, e in segs:
                    n_examples += 1
                    covered += e - s
                    assert pos[s:e].tolist() == list(range(e - s))  # positions restart per example
                    assert len(set(task[s:e].tolist())) == 1 and task[s] >= 0
                    assert ids[e - 1] == eos  # each example ends with EOS ...
                    assert labels[e - 1] == IGNORE  # ... and never predicts the next example
                    lab = labels[s : e - 1]
                    kept = (lab != IGNORE).nonzero().flatten()
                    assert torch.equal(lab[kept], ids[s + 1 : e][kept])  # shift inside the example
                    assert labels[e - 2] == eos
                    if train_on_prompt:
                        assert len(kept) == e - s - 1
                    else:  # a contiguous target suffix; prompt positions are ignored
                        assert 0 < len(kept) < e - s - 1
                        assert kept.tolist() == list(range(int(kept[0]), e - s - 1))
                    target += len(kept)
                # padding: no labels, task -1, pad id
                assert (labels[covered:] == IGNORE).all() and (task[covered:] == -1).all()
                assert (ids[covered:] == tokenizer.pad_token_id).all()
                assert (task[:covered] >= 0).all()
        assert step.target_tokens == target
        assert step.tokens == sum(int((b["task_ids"] >= 0).sum()) for b in step.micro_batches)
        assert step.slots == sum(b["input_ids"].numel() for b in step.micro_batches)
    assert n_examples > 3 * 4 * 3


# --------------------------------------------------------------------------- world-size independence


def global_rows(steps, world, mb, ga):
    """Global row k of a step is on rank k % world; on that rank, micro j row i is its (j*mb+i)-th row."""
    n = mb * ga * world
    out = []
    for k in range(n):
        r, local = k % world, k // world
        batch = steps[r].micro_batches[local // mb]
        out.append({key: batch[key][local % mb] for key in KEYS})
    return out


@pytest.mark.parametrize("ga", [1, 2])
def test_world_size_independence(suite, tokenizer, ga):
    rows_per_step, n_steps = 4, 6
    configs = [(1, 4), (2, 2), (4, 1)] if ga == 1 else [(1, 2), (2, 1)]
    reference = None
    for world, mb in configs:
        assert mb * world * ga == rows_per_step
        loaders = [
            make_loader(suite, tokenizer.pad_token_id, window=48, mb=mb, ga=ga, world=world, rank=r)
            for r in range(world)
        ]
        run = []
        for _ in range(n_steps):
            steps = [ld.next_step() for ld in loaders]
            # every rank agrees on the global normalizer and counts
            assert len({(s.target_tokens, s.tokens, s.slots) for s in steps}) == 1
            rows = global_rows(steps, world, mb, ga)
            # ranks are disjoint: no row (token sequence) is on two ranks
            per_rank = [
                {tuple(rows[k]["input_ids"].tolist()) for k in range(len(rows)) if k % world == r}
                for r in range(world)
            ]
            assert sum(len(p) for p in per_rank) == len(set().union(*per_rank)) == len(rows)
            run.append((steps[0].target_tokens, steps[0].tokens, steps[0].slots, rows))
        if reference is None:
            reference = run
            continue
        for (tt, tok, slots, rows), (rtt, rtok, rslots, rrows) in zip(run, reference):
            assert (tt, tok, slots) == (rtt, rtok, rslots)
            assert len(rows) == len(rrows)
            for a, b in zip(rows, rrows):  # same rows in the same global order
                for key in KEYS:
                    assert torch.equal(a[key], b[key]), key


def test_world_size_independence_unpacked(suite, tokenizer):
    def real_rows(world, mb):
        loaders = [
            make_loader(suite, tokenizer.pad_token_id, packing=False, window=48, mb=mb, world=world, rank=r)
            for r in range(world)
        ]
        out, targets = [], []
        for _ in range(4):
            steps = [ld.next_step() for ld in loaders]
            assert len({s.target_tokens for s in steps}) == 1
            targets.append(steps[0].target_tokens)
            for k in range(4):
                batch = steps[k % world].micro_batches[0]
                m = batch["attention_mask"][k // world].bool()
                out.append(batch["input_ids"][k // world][m].tolist())
        return out, targets

    ref = real_rows(1, 4)
    assert real_rows(2, 2) == ref
    assert real_rows(4, 1) == ref


# --------------------------------------------------------------------------- exact resume


def record(loader, n_steps):
    """States (as a checkpoint stores them: JSON) before each step, and the steps."""
    states, steps, info = [], [], []
    for _ in range(n_steps):
        states.append(json.loads(json.dumps(loader.state_dict())))
        info.append(
            {
                "window": loader.window_index,
                "at_end": loader.next_row == len(loader.rows),
                "epochs": list(loader.stream.epoch),
                "drawn": loader.examples_drawn,
            }
        )
        steps.append(loader.next_step())
    states.append(json.loads(json.dumps(loader.state_dict())))
    info.append({"window": loader.window_index, "epochs": list(loader.stream.epoch)})
    return states, steps, info


@pytest.mark.parametrize("packing", [True, False])
def test_exact_resume_across_window_and_epoch_boundaries(small, tokenizer, packing):
    kw = dict(window=24, packing=packing, mb=2 if packing else 4, ga=2)
    ref = make_loader(small, tokenizer.pad_token_id, **kw)
    total, K = 24, 4
    states, steps, info = record(ref, total)
    positions = [0, 1, 2, 3, 5, 8, 13, 20]
    crossed_window = crossed_epoch = at_window_end = carried = False
    for p in positions:
        fresh = make_loader(small, tokenizer.pad_token_id, **kw)
        fresh.load_state_dict(states[p])
        assert fresh.examples_drawn == info[p]["drawn"]
        for k in range(K):
            same_step(fresh.next_step(), steps[p + k])
        assert fresh.state_dict() == states[p + K]
        crossed_window |= info[p + K]["window"] > max(info[p]["window"], 0)
        crossed_epoch |= info[p + K]["epochs"] != info[p]["epochs"]
        at_window_end |= info[p]["at_end"] and p > 0
        carried |= bool(states[p]["carried_in"])
    assert crossed_window and crossed_epoch  # the positions really test the boundaries
    if packing:
        assert carried  # and a window that starts with examples carried over from the previous one
    assert at_window_end  # a state saved exactly at the end of a window (the next step opens a new one)


def test_resume_into_another_micro_batch_layout(suite, tokenizer):
    """The state is about global rows: saved by a 4-rank run, continued by a 1-rank run."""
    a = make_loader(suite, tokenizer.pad_token_id, window=48, mb=1, world=4, rank=3)
    b = make_loader(suite, tokenizer.pad_token_id, window=48, mb=4)
    for _ in range(5):
        a.next_step()
        b.next_step()
    c = make_loader(suite, tokenizer.pad_token_id, window=48, mb=4)
    c.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for _ in range(3):
        same_step(c.next_step(), b.next_step())


def test_load_state_dict_with_different_settings_raises(suite, small, tokenizer):
    ld = make_loader(suite, tokenizer.pad_token_id, window=48)
    ld.next_step()
    state = ld.state_dict()
    for change in (dict(seq_len=128), dict(window=32), dict(packing=False), dict(seed=1)):
        other = make_loader(suite, tokenizer.pad_token_id, **{"window": 48, **change})
        with pytest.raises(UserError, match="loader state was saved with"):
            other.load_state_dict(state)
    renamed = suite[1:]  # another task list
    with pytest.raises(UserError, match="different task list"):
        make_loader(renamed, tokenizer.pad_token_id, window=48).load_state_dict(state)


def test_resume_cost_does_not_grow_with_depth(suite, tokenizer):
    """load_state_dict re-packs one window; it must not replay the stream from the start."""
    window = 64
    # A 16-rank view collates one row per step while the global stream advances 16 rows.
    adv = make_loader(suite, tokenizer.pad_token_id, window=window, mb=1, world=16, rank=0)
    shallow = deep = None
    while deep is None:
        adv.next_step()
        if shallow is None and adv.window_index >= 5:
            shallow = adv.state_dict()
        if adv.window_index >= 200:
            deep = adv.state_dict()
    assert deep["window_start"]["drawn"] >= 150 * window

    def cost(state):
        best = float("inf")
        for _ in range(5):
            ld = make_loader(suite, tokenizer.pad_token_id, window=window, mb=1)
            t = time.perf_counter()
            ld.load_state_dict(state)
            best = min(best, time.perf_counter() - t)
        return best

    cost(shallow)  # warm-up
    t_shallow, t_deep = cost(shallow), cost(deep)
    assert t_deep < 3 * t_shallow + 0.01, (t_shallow, t_deep)
    # and the deep state continues the global stream: compare with an uninterrupted 16-row view
    ld = make_loader(suite, tokenizer.pad_token_id, window=window, mb=16)
    ld.load_state_dict(deep)
    check = make_loader(suite, tokenizer.pad_token_id, window=window, mb=1, world=16, rank=0)
    check.load_state_dict(deep)
    s16, s1 = ld.next_step(), check.next_step()
    assert s16.target_tokens == s1.target_tokens
    assert torch.equal(s16.micro_batches[0]["input_ids"][0], s1.micro_batches[0]["input_ids"][0])


# --------------------------------------------------------------------------- no packing, fill, counts


def test_unpacked_one_example_per_row(suite, tokenizer):
    ld = make_loader(suite, tokenizer.pad_token_id, packing=False, window=32, mb=4, ga=2)
    for _ in range(3):
        step = ld.next_step()
        slots = target = tokens = 0
        for batch in step.micro_batches:
            assert set(batch) == set(KEYS) | {"attention_mask", "target_index", "target_task"}
            mask = batch["attention_mask"]
            lengths = mask.sum(1)
            assert batch["input_ids"].shape[1] == int(lengths.max())  # pads to the longest row only
            for r in range(mask.shape[0]):
                n = int(lengths[r])
                assert mask[r, :n].all() and not mask[r, n:].any()  # right padding
                assert batch["position_ids"][r, :n].tolist() == list(range(n))
                assert len(segments(batch["position_ids"][r], batch["task_ids"][r])) == 1
                assert (batch["labels"][r, n - 1 :] == IGNORE).all()
                assert (batch["task_ids"][r, n:] == -1).all()
                assert batch["input_ids"][r, n - 1] == tokenizer.eos_token_id
            slots += mask.numel()
            tokens += int(mask.sum())
            target += int((batch["labels"] != IGNORE).sum())
        assert (step.slots, step.tokens, step.target_tokens) == (slots, tokens, target)


def test_packed_fill_is_high(suite, tokenizer):
    ld = make_loader(suite, tokenizer.pad_token_id, window=512, mb=4)
    tokens = slots = 0
    for _ in range(30):  # 120 rows: past the first window
        step = ld.next_step()
        tokens += step.tokens
        slots += step.slots
    assert ld.window_index >= 1
    fill = tokens / slots
    print(f"packed fill at max_seq_len={SEQ}, window=512: {fill:.4f}")
    assert fill > 0.9, fill


def test_examples_drawn_counts_consumed_examples(small, tokenizer):
    ld = make_loader(small, tokenizer.pad_token_id, window=24, mb=2, ga=2)
    assert ld.examples_drawn == 0
    consumed = 0
    for _ in range(20):
        step = ld.next_step()
        for b in step.micro_batches:
            consumed += int(((b["position_ids"] == 0) & (b["task_ids"] >= 0)).sum())
        assert ld.examples_drawn == consumed
        assert ld.stream.drawn >= consumed
    # and a resumed loader reports the same count
    fresh = make_loader(small, tokenizer.pad_token_id, window=24, mb=2, ga=2)
    fresh.load_state_dict(ld.state_dict())
    assert fresh.examples_drawn == consumed


def test_packing_neither_loses_nor_duplicates_examples(small, tokenizer):
    """Across packing (and carrying of under-filled rows), no example is lost or duplicated:
    the served multiset of (task, example) equals the stream's draws so far."""
    ld = make_loader(small, tokenizer.pad_token_id, window=24, mb=2, ga=2)
    served = []
    for _ in range(15):
        rows = ld._take_rows(ld.rows_per_step)
        served += [tuple(d) for row in rows for d in row]
    drawn = sorted(served)
    ref = make_loader(small, tokenizer.pad_token_id, window=24)
    expected = sorted(ref.stream.take(ld.stream.drawn))
    pending = sorted([tuple(d) for row in ld.rows[ld.next_row :] for d in row] + [tuple(d) for d in ld.carry_out])
    assert sorted(drawn + pending) == expected


@pytest.mark.parametrize("seq_len,window", [(1024, 8), (SEQ, 12)])
def test_window_whose_rows_are_all_underfilled_does_not_crash(small, tokenizer, seq_len, window):
    """When every packed row of a window is under CARRY_BELOW full and holds no carried example,
    the whole window moves to the next one and the window has no rows of its own. Happens for any
    pack_window * mean example length < 0.95 * max_seq_len (e.g. max_seq_len=1024, pack_window=8 on
    ~28-token examples) and by chance with small windows (max_seq_len=256, pack_window=12). The
    loader must open the next window instead of indexing an empty row list."""
    ld = make_loader(small, tokenizer.pad_token_id, seq_len=seq_len, window=window, mb=2)
    states, consumed = [], 0
    for _ in range(12):
        states.append(ld.state_dict())
        step = ld.next_step()
        assert step.tokens > 0
        consumed += sum(int(((b["position_ids"] == 0) & (b["task_ids"] >= 0)).sum()) for b in step.micro_batches)
        assert ld.examples_drawn == consumed
    resumed = make_loader(small, tokenizer.pad_token_id, seq_len=seq_len, window=window, mb=2)
    resumed.load_state_dict(states[5])
    replay = make_loader(small, tokenizer.pad_token_id, seq_len=seq_len, window=window, mb=2)
    for _ in range(5):
        replay.next_step()
    for _ in range(4):
        same_step(resumed.next_step(), replay.next_step())


@pytest.mark.parametrize("position", [0, 3])
def test_load_state_dict_into_a_used_loader(suite, tokenizer, position):
    """Loading a state must replace everything, even in a loader that has already produced steps
    (e.g. rolling back to an earlier checkpoint in the same process), including the initial state."""
    ref = make_loader(suite, tokenizer.pad_token_id, window=48, mb=2)
    for _ in range(position):
        ref.next_step()
    state = json.loads(json.dumps(ref.state_dict()))
    drawn = ref.examples_drawn
    expected = [ref.next_step() for _ in range(3)]
    used = make_loader(suite, tokenizer.pad_token_id, window=48, mb=2)
    for _ in range(7):
        used.next_step()
    used.load_state_dict(state)
    assert used.examples_drawn == drawn
    for want in expected:
        same_step(used.next_step(), want)
