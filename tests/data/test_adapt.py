"""Tests for the adaptive mixture (ift.data.adapt): the updates against hand computations, the
bounds, the state, the errors; and the loader's rate change at a step boundary (ift.data.loader)."""

import json
import math

import numpy as np
import pytest

from ift.config import AdaptConfig, ConfigError, DataConfig, TaskSource, load_config
from ift.data.adapt import Adapter, bound, rate_ceiling
from ift.data.loader import Prefetcher
from ift.data.sources import load_tasks
from ift.errors import UserError
from ift.model import corpus_texts, train_bpe_tokenizer
from tests.data.test_loader import _tokenized, make_loader, same_step

NAMES = ["a", "b", "c"]
BASE = [0.5, 0.3, 0.2]


def adapter(rule="excess_loss", sizes=(100, 60, 40), cap=None, **kw):
    return Adapter(AdaptConfig(rule=rule, **kw), NAMES, BASE, list(sizes), cap)


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def window(a, losses, tokens=(10.0, 10.0, 10.0)):
    """Fold one window's sums whose token means are `losses`, as the trainer does."""
    a.add([loss * n for loss, n in zip(losses, tokens)], list(tokens))
    return a.window_losses()


# --------------------------------------------------------------------------- the rules, by hand


def test_excess_loss_against_initial_by_hand():
    a = adapter(eta=2.0, smoothing=0.1)
    first = a.update(10, window(a, [2.0, 3.0, 1.0]))
    assert first.tolist() == BASE  # the first window only fixes the reference
    rates = a.update(20, window(a, [1.5, 2.9, 0.4]))
    # w = log(base) + eta * (L - L0): the task that improved least (b) gains
    alpha = softmax([math.log(0.5) + 2 * -0.5, math.log(0.3) + 2 * -0.1, math.log(0.2) + 2 * -0.6])
    hand = [0.9 * x + 0.1 * b for x, b in zip(alpha, BASE)]
    assert rates == pytest.approx(hand, abs=1e-12)
    assert rates[1] > BASE[1] and rates[2] < BASE[2]
    assert [s for s, _ in a.history] == [0, 10, 20]
    assert a.metrics() == {f"mix/{n}": pytest.approx(r) for n, r in zip(NAMES, hand)}
    # the next window compares against the first window again, and the weights accumulate
    rates = a.update(30, window(a, [1.0, 2.0, 0.5]))
    w = [math.log(0.5) + 2 * (-0.5 - 1.0), math.log(0.3) + 2 * (-0.1 - 1.0), math.log(0.2) + 2 * (-0.6 - 0.5)]
    assert rates == pytest.approx([0.9 * x + 0.1 * b for x, b in zip(softmax(w), BASE)], abs=1e-12)


def test_excess_loss_against_a_reference_run_clips_at_zero(tmp_path):
    ref = tmp_path / "metrics.jsonl"
    ref.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 5, "loss/a": 9.0, "loss/b": 9.0, "loss/c": 9.0},
                {"step": 10, "loss/a": 1.0, "loss/b": 2.0, "loss/c": 1.5, "loss": 1.4},
                {"step": 10, "eval/loss": 3.0},
            ]
        )
        + "\n"
    )
    a = adapter(eta=1.0, smoothing=0.0, reference=str(ref))
    rates = a.update(10, window(a, [1.5, 1.8, 2.5]))  # a reference run: the first window moves rates
    alpha = softmax([math.log(0.5) + 0.5, math.log(0.3) + 0.0, math.log(0.2) + 1.0])  # b: below its reference
    assert rates == pytest.approx(alpha, abs=1e-12)


def test_learning_progress_by_hand():
    a = adapter(rule="learning_progress", eta=3.0, smoothing=0.2, epsilon=0.1)
    assert a.update(10, window(a, [2.0, 4.0, 1.0])).tolist() == BASE
    rates = a.update(20, window(a, [1.0, 3.0, 1.0]))
    progress = [(2.0 - 1.0) / 2.0, (4.0 - 3.0) / 4.0, 0.0]
    alpha = softmax([math.log(b) + 3.0 * p for b, p in zip(BASE, progress)])
    explored = [0.9 * x + 0.1 / 3 for x in alpha]
    assert rates == pytest.approx([0.8 * x + 0.2 * b for x, b in zip(explored, BASE)], abs=1e-12)
    # the next window compares against this one
    rates = a.update(30, window(a, [1.0, 1.5, 1.0]))
    progress2 = [0.0, (3.0 - 1.5) / 3.0, 0.0]
    alpha = softmax([math.log(b) + 3.0 * (p + q) for b, p, q in zip(BASE, progress, progress2)])
    explored = [0.9 * x + 0.1 / 3 for x in alpha]
    assert rates == pytest.approx([0.8 * x + 0.2 * b for x, b in zip(explored, BASE)], abs=1e-12)


def test_a_task_without_targets_in_the_window_gets_the_mean_update():
    a = adapter(eta=1.0, smoothing=0.0)
    a.update(10, window(a, [2.0, 2.0, 2.0]))
    losses = window(a, [1.0, 3.0, 0.0], tokens=(10.0, 10.0, 0.0))
    assert math.isnan(losses[2])
    rates = a.update(20, losses)
    alpha = softmax([math.log(0.5) - 1.0, math.log(0.3) + 1.0, math.log(0.2) + 0.0])  # c: the mean of -1, +1
    assert rates == pytest.approx(alpha, abs=1e-12)


def test_floor_and_cap_bound_the_rates():
    # floor: r = floor + (1 - k floor) r
    assert bound(np.array([0.98, 0.01, 0.01]), 0.1, None) == pytest.approx([0.1 + 0.7 * 0.98, 0.107, 0.107])
    # cap 50 over sizes 100, 60, 40: the ceiling is n / sum(min(n, 50)) = n / 140
    ceiling = rate_ceiling([100, 60, 40], 50)
    assert ceiling == pytest.approx([100 / 140, 60 / 140, 40 / 140])
    r = bound(np.array([0.1, 0.1, 0.8]), 0.0, ceiling)  # c over its ceiling: the excess goes to a and b, 1:1
    excess = 0.8 - 40 / 140
    assert r == pytest.approx([0.1 + excess / 2, 0.1 + excess / 2, 40 / 140])
    assert r.sum() == pytest.approx(1.0)
    a = adapter(eta=50.0, smoothing=0.0, floor=0.05, cap=50)
    a.update(1, window(a, [1.0, 1.0, 1.0]))
    rates = a.update(2, window(a, [0.0, 0.0, 1.0]))  # c improved least by far
    assert rates[2] == pytest.approx(40 / 140) and min(rates) >= 0.05 - 1e-12 and rates.sum() == pytest.approx(1)


def test_state_round_trip_continues_identically():
    a, b = adapter(rule="learning_progress"), adapter(rule="learning_progress")
    for step, losses in [(10, [2.0, 4.0, 1.0]), (20, [1.0, 3.0, 1.0])]:
        a.update(step, window(a, losses))
    a.add([5.0, 6.0, 7.0], [4.0, 4.0, 0.0])  # half a window, saved mid-way
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for x in (a, b):
        window(x, [1.0, 2.0, 1.0])
    assert a.update(30, a.window_losses()).tolist() == b.update(30, b.window_losses()).tolist()
    assert a.history == b.history


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "override, field",
    [
        ("data.mixture.adapt.rule=doremi", "data.mixture.adapt.rule"),
        ("data.mixture.adapt.eta=0", "data.mixture.adapt.eta"),
        ("data.mixture.adapt.eta=-1", "data.mixture.adapt.eta"),
        ("data.mixture.adapt.every=0", "data.mixture.adapt.every"),
        ("data.mixture.adapt.smoothing=1", "data.mixture.adapt.smoothing"),
        ("data.mixture.adapt.epsilon=2", "data.mixture.adapt.epsilon"),
        ("data.mixture.adapt.signal=test", "data.mixture.adapt.signal"),
    ],
)
def test_config_errors_name_the_field(override, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        load_config(None, ["data.mixture.adapt.rule=excess_loss", override])


def test_errors_that_need_the_tasks(tmp_path):
    with pytest.raises(UserError, match=r"^data.mixture.adapt.rule: an adaptive mixture needs at least 2 tasks"):
        Adapter(AdaptConfig(rule="excess_loss"), ["a"], [1.0], [10], None)
    with pytest.raises(UserError, match=r"^data.mixture.adapt.floor: 0.4 x 3 tasks = 1.2 > 1"):
        adapter(floor=0.4)
    ref = tmp_path / "metrics.jsonl"
    ref.write_text(json.dumps({"step": 1, "loss/a": 1.0, "loss/b": 1.0}) + "\n")
    with pytest.raises(
        UserError,
        match=r"^data.mixture.adapt.reference: .*metrics.jsonl has no loss/<task> "
        r"for task\(s\) \['c'\]",
    ):
        adapter(reference=str(ref))
    with pytest.raises(UserError, match=r"^data.mixture.adapt.reference: cannot read .*nowhere.jsonl"):
        adapter(reference=str(tmp_path / "nowhere.jsonl"))
    ref.write_text("{not json\n")
    with pytest.raises(UserError, match=r"^data.mixture.adapt.reference: .*metrics.jsonl:1: not JSON"):
        adapter(reference=str(ref))
    with pytest.raises(UserError, match=r"^data.mixture.adapt.signal: heldout needs eval.tasks .* missing \['c'\]"):
        Adapter(AdaptConfig(rule="excess_loss", signal="heldout"), NAMES, BASE, [1, 1, 1], None, ["a", "b", "x"])


# --------------------------------------------------------------------------- the loader at new rates


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(corpus_texts(load_tasks(DataConfig(tasks=[TaskSource(builtin="train", n=60)]), 0)), 512)


@pytest.fixture(scope="module")
def suite(tokenizer, tmp_path_factory):
    return _tokenized(tokenizer, tmp_path_factory.mktemp("cache"), 60)


def consumed(loader, steps):
    """(task, example) draws of the global rows of `steps` steps."""
    out = []
    for _ in range(steps):
        out += [d for row in loader._take_rows(loader.rows_per_step) for d in row]
    return out


def test_new_rates_lose_nothing_and_take_effect(suite, tokenizer):
    from collections import Counter

    pad = tokenizer.pad_token_id
    loader = make_loader(suite, pad, window=64, mb=4)
    before = consumed(loader, 3)
    rates = [0.0] * len(suite)
    rates[0], rates[1] = 0.5, 0.5  # only tasks 0 and 1 from now on
    pending = Counter([d for row in loader.rows[loader.next_row :] for d in row] + loader.carry_out)
    loader.set_rates(rates)
    after = Counter(consumed(loader, 40))
    assert not pending - after  # the rows not handed out yet are all consumed after the change
    new = Counter(t for t, _ in (after - pending).elements())
    # the new draws follow the new rates; a task at rate 0 settles its round-robin credit (< 1 draw) at most once
    assert all(n <= 1 for t, n in new.items() if t not in (0, 1))
    assert abs(new[0] - new[1]) <= 0.02 * (new[0] + new[1]) and new[0] + new[1] > 100
    assert len(before) + sum(after.values()) == loader.examples_drawn  # each draw consumed once


def test_a_resume_after_new_rates_continues_exactly(suite, tokenizer):
    pad = tokenizer.pad_token_id
    rates = list(np.linspace(1, 3, len(suite)) / np.linspace(1, 3, len(suite)).sum())
    a = make_loader(suite, pad, window=64, mb=4)
    for _ in range(3):
        a.next_step()
    a.set_rates(rates)
    a.next_step()
    state = json.loads(json.dumps(a.state_dict()))
    b = make_loader(suite, pad, window=64, mb=4)
    b.load_state_dict(state)
    for _ in range(12):
        same_step(a.next_step(), b.next_step())


@pytest.mark.parametrize("window", [8, 512])  # the thread ran into later windows / stayed in the same one
def test_the_prefetcher_changes_rates_at_the_step_handed_out(suite, tokenizer, window):
    """The prefetch thread runs up to two steps ahead; the change still lands after the last step
    the trainer took, as in a loader that never ran ahead (and so at any thread timing)."""
    pad = tokenizer.pad_token_id
    rates = [1.0 / len(suite)] * len(suite)
    direct = make_loader(suite, pad, window=window, mb=4)
    ahead = Prefetcher(make_loader(suite, pad, window=window, mb=4))
    for _ in range(5):
        same_step(direct.next_step(), ahead.next_step())
    import time

    time.sleep(0.2)  # let the thread run ahead
    direct.set_rates(rates)
    ahead.set_rates(rates)
    assert ahead.state_dict() == direct.state_dict()
    for _ in range(10):
        same_step(direct.next_step(), ahead.next_step())


def test_new_rates_give_the_same_global_rows_at_any_world_size(suite, tokenizer):
    pad = tokenizer.pad_token_id
    rates = list(np.linspace(3, 1, len(suite)) / np.linspace(3, 1, len(suite)).sum())
    one = make_loader(suite, pad, window=64, mb=4)
    two = [make_loader(suite, pad, window=64, mb=2, world=2, rank=r) for r in range(2)]
    for step in range(12):
        if step == 4:
            for x in (one, *two):
                x.set_rates(rates)
        rows = one._take_rows(one.rows_per_step)
        assert all(x._take_rows(x.rows_per_step) == rows for x in two)
