"""Tests for mixing rates (ift.data.mixture.task_rates) and the global draw stream (MixtureStream).

Every expected rate below is computed by hand from the formula, not by re-running the library.
"""

import json
import math

import numpy as np
import pytest

from ift.config import ConfigError, GroupConfig, MixtureConfig, load_config
from ift.data.mixture import MixtureStream, task_rates
from ift.errors import UserError


def approx(d):
    return pytest.approx(d, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- rate formulas


def test_proportional():
    assert task_rates(MixtureConfig(), {"a": 100, "b": 300}) == approx({"a": 0.25, "b": 0.75})


def test_proportional_keeps_task_order():
    rates = task_rates(MixtureConfig(), {"z": 1, "a": 3, "m": 4})
    assert list(rates) == ["z", "a", "m"]
    assert rates == approx({"z": 1 / 8, "a": 3 / 8, "m": 4 / 8})


def test_examples_proportional_cap():
    rates = task_rates(MixtureConfig(cap=1000), {"a": 100, "b": 5000})
    assert rates == approx({"a": 100 / 1100, "b": 1000 / 1100})
    assert rates["a"] == pytest.approx(1 / 11) and rates["b"] == pytest.approx(10 / 11)


def test_cap_above_every_size_is_proportional():
    assert task_rates(MixtureConfig(cap=10_000), {"a": 100, "b": 300}) == approx({"a": 0.25, "b": 0.75})


def test_temperature_seqio_formula():
    # r = min(n, cap) ** (1 / T): T=2 -> sqrt(100)=10, sqrt(400)=20
    rates = task_rates(MixtureConfig(strategy="temperature", temperature=2.0), {"a": 100, "b": 400})
    assert rates == approx({"a": 10 / 30, "b": 20 / 30})


def test_temperature_with_cap():
    # min(n, 400) ** 0.5: 10, 20, 20
    rates = task_rates(
        MixtureConfig(strategy="temperature", temperature=2.0, cap=400), {"a": 100, "b": 400, "c": 10_000}
    )
    assert rates == approx({"a": 0.2, "b": 0.4, "c": 0.4})


def test_temperature_one_is_proportional_and_large_is_near_uniform():
    assert task_rates(MixtureConfig(strategy="temperature", temperature=1.0), {"a": 100, "b": 300}) == approx(
        {"a": 0.25, "b": 0.75}
    )
    # T=3 on 8 and 64: 2 and 4
    assert task_rates(MixtureConfig(strategy="temperature", temperature=3.0), {"a": 8, "b": 64}) == pytest.approx(
        {"a": 1 / 3, "b": 2 / 3}
    )


def test_explicit_weights_ignore_sizes():
    rates = task_rates(
        MixtureConfig(strategy="explicit", weights={"a": 1, "b": 3, "c": 4}), {"a": 5, "b": 100_000, "c": 7}
    )
    assert rates == approx({"a": 1 / 8, "b": 3 / 8, "c": 4 / 8})


def test_nested_groups_multiply():
    sizes = {"a1": 100, "a2": 300, "b1": 10, "b2": 999}
    mx = MixtureConfig(
        groups=[
            GroupConfig(name="A", weight=0.4, tasks=["a1", "a2"]),  # proportional (the mixture's default)
            GroupConfig(name="B", weight=0.6, tasks=["b1", "b2"], strategy="explicit", weights={"b1": 1, "b2": 3}),
        ]
    )
    rates = task_rates(mx, sizes)
    assert list(rates) == list(sizes)
    assert rates == approx({"a1": 0.4 * 0.25, "a2": 0.4 * 0.75, "b1": 0.6 * 0.25, "b2": 0.6 * 0.75})
    assert sum(rates.values()) == pytest.approx(1.0)


def test_group_weights_are_normalized():
    sizes = {"a": 1, "b": 1, "c": 3}
    mx = MixtureConfig(
        groups=[GroupConfig(name="A", weight=2, tasks=["a", "b"]), GroupConfig(name="C", weight=6, tasks=["c"])]
    )
    assert task_rates(mx, sizes) == approx({"a": 0.125, "b": 0.125, "c": 0.75})


def test_group_overrides_strategy_cap_and_temperature():
    sizes = {"x1": 100, "x2": 5000, "y1": 100, "y2": 400}
    mx = MixtureConfig(
        strategy="proportional",
        groups=[
            GroupConfig(name="X", weight=1, tasks=["x*"], cap=1000),
            GroupConfig(name="Y", weight=1, tasks=["y*"], strategy="temperature", temperature=2.0),
        ],
    )
    assert task_rates(mx, sizes) == approx(
        {"x1": 0.5 / 11, "x2": 0.5 * 10 / 11, "y1": 0.5 * 10 / 30, "y2": 0.5 * 20 / 30}
    )


def test_group_inherits_mixture_cap_and_temperature():
    sizes = {"a": 100, "b": 400, "c": 10_000}
    mx = MixtureConfig(strategy="temperature", temperature=2.0, cap=400, groups=[GroupConfig(name="all", tasks=["*"])])
    assert task_rates(mx, sizes) == approx({"a": 0.2, "b": 0.4, "c": 0.4})


def test_globs_in_group_tasks():
    sizes = {"math_add": 100, "math_sub": 300, "text_a": 50, "text_b": 50, "other": 10}
    mx = MixtureConfig(
        groups=[
            GroupConfig(name="math", weight=1, tasks=["math_*"]),
            GroupConfig(name="text", weight=1, tasks=["text_?", "text_a"]),  # overlap inside a group is fine
            GroupConfig(name="rest", weight=2, tasks=["[o]ther"]),
        ]
    )
    rates = task_rates(mx, sizes)
    assert rates == approx(
        {"math_add": 0.25 * 0.25, "math_sub": 0.25 * 0.75, "text_a": 0.125, "text_b": 0.125, "other": 0.5}
    )


# --------------------------------------------------------------------------- clear errors


def test_unknown_task_in_weights_is_named():
    with pytest.raises(UserError, match=r"data\.mixture\.weights: unknown task 'nope'"):
        task_rates(MixtureConfig(strategy="explicit", weights={"a": 1, "nope": 2}), {"a": 1, "b": 1})


def test_unknown_task_in_group_weights_is_named():
    mx = MixtureConfig(
        groups=[GroupConfig(name="A", tasks=["a", "b"], strategy="explicit", weights={"a": 1, "b": 1, "ghost": 1})]
    )
    with pytest.raises(UserError, match=r"data\.mixture\.groups\[0\]\.weights: unknown task 'ghost'"):
        task_rates(mx, {"a": 1, "b": 1})


def test_group_pattern_matching_nothing_is_named():
    mx = MixtureConfig(groups=[GroupConfig(name="A", tasks=["a"]), GroupConfig(name="B", tasks=["b", "zz_*"])])
    with pytest.raises(UserError, match=r"data\.mixture\.groups\[1\]\.tasks: 'zz_\*' matches no loaded task"):
        task_rates(mx, {"a": 1, "b": 1})


def test_task_in_two_groups_is_named():
    mx = MixtureConfig(groups=[GroupConfig(name="A", tasks=["a", "b"]), GroupConfig(name="B", tasks=["b*"])])
    with pytest.raises(UserError, match=r"groups\[1\]\.tasks: task 'b' is already in group 'A'"):
        task_rates(mx, {"a": 1, "b": 1})


def test_task_in_no_group_is_named():
    mx = MixtureConfig(groups=[GroupConfig(name="A", tasks=["a"])])
    with pytest.raises(UserError, match=r"data\.mixture\.groups: task\(s\) \['c'\] belong to no group"):
        task_rates(mx, {"a": 1, "c": 1})


def test_explicit_missing_weight_is_named():
    with pytest.raises(UserError, match=r"data\.mixture\.weights: no weight for task\(s\) \['b'\]"):
        task_rates(MixtureConfig(strategy="explicit", weights={"a": 1}), {"a": 1, "b": 1})
    mx = MixtureConfig(groups=[GroupConfig(name="A", tasks=["a", "b"], strategy="explicit", weights={"a": 1})])
    with pytest.raises(UserError, match=r"data\.mixture\.groups\[0\]\.weights: no weight for task\(s\) \['b'\]"):
        task_rates(mx, {"a": 1, "b": 1})


@pytest.mark.parametrize("w", [0, -1.0, float("nan"), float("inf")])
def test_mixture_check_rejects_bad_weights(w):
    """A mixture built in code gets the same check as one loaded (task_rates trusts it)."""
    with pytest.raises(UserError, match=r"data\.mixture\.weights\.a: must be a number > 0"):
        MixtureConfig(strategy="explicit", weights={"a": w, "b": 1}).check("data.mixture")


def test_empty_task_is_named():
    with pytest.raises(UserError, match=r"\['b'\] have no examples"):
        task_rates(MixtureConfig(), {"a": 5, "b": 0})


def test_duplicate_group_names_give_a_clear_error():
    """Two groups with the same name: rates are keyed by group name, so the first group's tasks
    vanish and task_rates dies with a bare KeyError. It must be a UserError naming the group
    (raised by config validation or by task_rates)."""
    override = "data.mixture.groups=[{name: A, tasks: [a]}, {name: A, tasks: [b]}]"
    try:
        cfg = load_config(None, [override])
    except ConfigError as e:
        assert "A" in str(e)
        return
    with pytest.raises(UserError, match="A"):
        task_rates(cfg.data.mixture, {"a": 10, "b": 10})


@pytest.mark.parametrize("value", ["0", "-2", ".nan", ".inf", "'heavy'"])
def test_config_rejects_bad_task_weight(value):
    with pytest.raises(ConfigError, match=r"data\.mixture\.weights\.a: must be a number > 0"):
        load_config(None, [f"data.mixture.weights.a={value}"])


@pytest.mark.parametrize("value", ["0", "-0.5", ".nan", ".inf"])
def test_config_rejects_bad_group_weight(value):
    with pytest.raises(ConfigError, match=r"data\.mixture\.groups\[1\]\.weight: must be > 0"):
        load_config(None, [f"data.mixture.groups=[{{name: A, tasks: [a]}}, {{name: B, weight: {value}, tasks: [b]}}]"])


def test_config_rejects_bad_weight_inside_group():
    with pytest.raises(ConfigError, match=r"data\.mixture\.groups\[0\]\.weights\.a: must be a number > 0"):
        load_config(None, ["data.mixture.groups=[{name: A, tasks: [a], strategy: explicit, weights: {a: -1}}]"])


def test_config_rejects_empty_group():
    with pytest.raises(ConfigError, match=r"data\.mixture\.groups\[0\]\.tasks: must list at least one task"):
        load_config(None, ["data.mixture.groups=[{name: A, tasks: []}]"])


def test_config_rejects_unnamed_group_bad_strategy_cap_temperature():
    with pytest.raises(ConfigError, match=r"data\.mixture\.groups\[0\]\.name"):
        load_config(None, ["data.mixture.groups=[{tasks: [a]}]"])
    with pytest.raises(ConfigError, match=r"data\.mixture\.strategy"):
        load_config(None, ["data.mixture.strategy=uniform"])
    with pytest.raises(ConfigError, match=r"data\.mixture\.cap"):
        load_config(None, ["data.mixture.cap=0"])
    with pytest.raises(ConfigError, match=r"data\.mixture\.temperature"):
        load_config(None, ["data.mixture.temperature=-1"])
    with pytest.raises(ConfigError, match=r"data\.mixture\.groups\[0\]\.temperature"):
        load_config(None, ["data.mixture.groups=[{name: A, tasks: [a], temperature: .nan}]"])


def test_valid_grouped_config_loads_and_rates():
    cfg = load_config(
        None,
        [
            "data.mixture.groups=[{name: A, weight: 0.4, tasks: ['a*']}, "
            "{name: B, weight: 0.6, tasks: [b], strategy: explicit, weights: {b: 2}}]"
        ],
    )
    assert task_rates(cfg.data.mixture, {"a1": 1, "a2": 3, "b": 50}) == approx({"a1": 0.1, "a2": 0.3, "b": 0.6})


# --------------------------------------------------------------------------- the stream


def make_stream(sizes, rates, seed=0):
    return MixtureStream([f"t{i}" for i in range(len(sizes))], sizes, rates, seed)


def tasks_of(stream, n):
    return np.array([t for t, _ in stream.take(n)])


def max_prefix_deviation(choices: np.ndarray, rates) -> float:
    """max over prefixes n and tasks i of |count_i(first n) - n * rate_i|."""
    rates = np.asarray(rates)
    onehot = np.zeros((len(choices), len(rates)))
    onehot[np.arange(len(choices)), choices] = 1
    counts = np.cumsum(onehot, axis=0)
    n = np.arange(1, len(choices) + 1)[:, None]
    return float(np.abs(counts - n * rates).max())


RATE_SETS = [
    [0.25, 0.75],
    [1 / 11, 10 / 11],
    [0.5, 0.3, 0.15, 0.05],
    list(np.array([1, 2, 3, 5, 8, 13, 21, 34]) / 87),
    [0.001, 0.009, 0.09, 0.9],
]


@pytest.mark.parametrize("rates", RATE_SETS)
def test_realized_proportions_low_discrepancy_vs_multinomial(rates):
    n = 10_000
    choices = tasks_of(make_stream([1000] * len(rates), rates, seed=3), n)
    fractions = np.bincount(choices, minlength=len(rates)) / n
    assert np.abs(fractions - rates).max() < 0.01
    # Low discrepancy: every prefix, every task within 2 of n * rate (plain sampling drifts ~ sqrt(n)).
    dev = max_prefix_deviation(choices, rates)
    assert dev <= 2.0, dev
    multinomial = np.random.default_rng(3).choice(len(rates), size=n, p=np.asarray(rates) / sum(rates))
    dev_multi = max_prefix_deviation(multinomial, rates)
    assert dev < dev_multi, (dev, dev_multi)
    assert dev_multi > 3 * dev  # not a close call: sampling error grows with sqrt(n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_and_three_tasks_within_one(seed):
    for rates in ([0.25, 0.75], [1 / 11, 10 / 11], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]):
        choices = tasks_of(make_stream([50] * len(rates), rates, seed), 3000)
        assert max_prefix_deviation(choices, rates) <= 1.0 + 1e-9


def test_many_tasks_bounded():
    rng = np.random.default_rng(0)
    w = rng.random(40) ** 3
    rates = list(w / w.sum())
    choices = tasks_of(make_stream([10] * 40, rates, seed=5), 8000)
    assert max_prefix_deviation(choices, rates) <= 2.0


def test_every_example_once_per_epoch():
    sizes = [3, 7, 50]
    s = make_stream(sizes, [1 / 3, 1 / 3, 1 / 3], seed=11)
    per_task = {t: [] for t in range(3)}
    for t, e in s.take(600):
        per_task[t].append(e)
    for t, size in enumerate(sizes):
        seq = per_task[t]
        full = len(seq) // size
        assert full >= 2
        for k in range(full):
            assert sorted(seq[k * size : (k + 1) * size]) == list(range(size)), (t, k)
        assert len(set(seq[full * size :])) == len(seq) - full * size  # the partial epoch has no repeats


def test_epochs_advance_independently():
    s = make_stream([4, 100], [0.5, 0.5], seed=0)
    choices = tasks_of(s, 40)  # ~20 draws each
    assert s.epoch[0] >= 4 and s.epoch[1] == 0  # the small task wrapped, the large one has not
    assert 0 <= s.pos[0] < 4 and 0 < s.pos[1] < 100
    counts = np.bincount(choices, minlength=2)  # exact bookkeeping: draws = epoch * size + pos
    assert counts[0] == s.epoch[0] * 4 + s.pos[0]
    assert counts[1] == s.epoch[1] * 100 + s.pos[1]
    assert s.drawn == 40
    # the large task's order is unaffected by how often the small task wrapped
    t = MixtureStream(["t0", "t1"], [4, 100], [0.5, 0.5], 0)
    big_a = [e for k, e in t.take(200) if k == 1]
    u = MixtureStream(["t0", "t1"], [9, 100], [0.5, 0.5], 0)
    big_b = [e for k, e in u.take(200) if k == 1]
    assert big_a == big_b


def test_permutation_differs_between_epochs_and_tasks():
    size = 12
    s = make_stream([size, size], [0.5, 0.5], seed=4)
    per_task = {0: [], 1: []}
    for t, e in s.take(2 * size * 4):
        per_task[t].append(e)
    epochs0 = [tuple(per_task[0][k * size : (k + 1) * size]) for k in range(4)]
    assert len(set(epochs0)) == 4  # a fresh permutation every epoch
    assert epochs0[0] != tuple(range(size))  # and actually shuffled
    assert tuple(per_task[1][:size]) != epochs0[0]  # tasks get their own permutations


def test_same_seed_same_stream_different_seed_different():
    sizes, rates = [5, 17, 40], [0.2, 0.3, 0.5]
    a = make_stream(sizes, rates, seed=7).take(500)
    b = make_stream(sizes, rates, seed=7).take(500)
    c = make_stream(sizes, rates, seed=8).take(500)
    assert a == b
    assert a != c
    ta, tc = [t for t, _ in a], [t for t, _ in c]
    assert ta != tc  # the interleaving itself depends on the seed, not only the permutations
    # ...while the realized counts stay within the bound for both seeds
    assert abs(ta.count(2) - tc.count(2)) <= 4


def test_stream_is_independent_of_task_list_object_identity():
    # names, sizes, rates and seed fully determine the stream
    a = MixtureStream(["x", "y"], [3, 9], [0.4, 0.6], 1).take(100)
    b = MixtureStream(("x", "y"), np.array([3, 9]), np.array([0.4, 0.6]), 1).take(100)
    assert a == b


@pytest.mark.parametrize("position", [0, 1, 3, 7, 12, 100, 1234])
def test_state_dict_resume_continues_identically(position):
    sizes, rates = [3, 10, 64], [0.5, 0.3, 0.2]
    ref = make_stream(sizes, rates, seed=2)
    ref.take(position)
    state = json.loads(json.dumps(ref.state_dict()))  # checkpoints store it as JSON
    expected = ref.take(300)
    fresh = make_stream(sizes, rates, seed=2)
    fresh.load_state_dict(state)
    assert fresh.take(300) == expected
    # also into a stream that has already moved on (stale permutation cache)
    moved = make_stream(sizes, rates, seed=2)
    moved.take(position + 517)
    moved.load_state_dict(state)
    assert moved.take(300) == expected
    assert moved.drawn == position + 300


def test_load_state_dict_rejects_other_task_list():
    s = make_stream([3, 4], [0.5, 0.5])
    other = MixtureStream(["t0", "zz"], [3, 4], [0.5, 0.5], 0)
    with pytest.raises(UserError, match="different task list"):
        other.load_state_dict(s.state_dict())


def test_state_dict_is_small_and_json_plain():
    s = make_stream([100_000, 5], [0.5, 0.5])
    s.take(1000)
    text = json.dumps(s.state_dict())
    assert len(text) < 1000  # no permutations stored: they are recomputed from (seed, task, epoch)
    assert not any(math.isnan(c) for c in json.loads(text)["credit"])
