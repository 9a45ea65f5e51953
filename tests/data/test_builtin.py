"""Tests for the embedded procedurally generated task suite (ift.data.builtin)."""

import pytest

from ift.data import builtin_classic
from ift.data.builtin import CLASSIC_TASKS, HELDOUT_TASKS, KINDS, OPERATIONS, TRAIN_TASKS, examples, task_names

ALL = TRAIN_TASKS + HELDOUT_TASKS + CLASSIC_TASKS
KEYS = {"task", "instruction", "input", "output", "references", "rationale", "category"}
CATEGORIES = {"string", "list", "arithmetic", "classification", *OPERATIONS}


def _ints(s):
    return [int(x) for x in s.split()]


def _pairs(task, n=200, seed=0):
    return {r["input"]: r["output"] for r in examples(task, n, seed)}.items()


def test_split_sizes_and_no_overlap():
    assert len(OPERATIONS) >= 4 and len(KINDS) >= 5 and len(HELDOUT_TASKS) >= 8
    assert len(TRAIN_TASKS) + len(HELDOUT_TASKS) == len(OPERATIONS) * len(KINDS)
    assert len(set(ALL)) == len(ALL)
    assert not set(TRAIN_TASKS) & set(HELDOUT_TASKS)


def _grid(task):
    op, kind = task.split("_")
    return op, kind


def test_heldout_cells_are_unseen_combinations_of_trained_parts():
    trained = [_grid(t) for t in TRAIN_TASKS]
    for op, kind in map(_grid, HELDOUT_TASKS):
        assert (op, kind) not in trained
        assert sum(o == op for o, _ in trained) >= 3, op  # the operation is trained with other kinds
        assert sum(k == kind for _, k in trained) >= 3, kind  # the kind is trained with other operations


def test_heldout_tasks_are_separated_from_training():
    """No held-out instruction string and no held-out (instruction, input) pair occurs in training; no
    held-out task computes a training task's input -> output function; every word of a held-out
    instruction occurs in training instructions (reachable by the instruction alone)."""
    n = 2000
    train = [r for t in TRAIN_TASKS for r in examples(t, n)]
    train_instr = {r["instruction"] for r in train}
    train_pairs = {(r["instruction"], r["input"]) for r in train}
    train_words = {w.strip(".,?").lower() for i in train_instr for w in i.split()}
    inputs = sorted({r["input"] for r in train[:500]})
    for task in HELDOUT_TASKS:
        held = examples(task, n)
        assert not {r["instruction"] for r in held} & train_instr, task
        assert not {(r["instruction"], r["input"]) for r in held} & train_pairs, task
        words = {w.strip(".,?").lower() for r in held for w in r["instruction"].split()}
        assert words <= train_words, (task, words - train_words)
        op, kind = _grid(task)
        fn = OPERATIONS[op][0]
        held_fn = [fn(next(x for x in i.split() if x in KINDS[kind])) for i in inputs]
        for other in TRAIN_TASKS:  # same inputs, some different output: a different function
            o_op, o_kind = _grid(other)
            other_fn = [OPERATIONS[o_op][0](next(x for x in i.split() if x in KINDS[o_kind])) for i in inputs]
            assert held_fn != other_fn, (task, other)


def test_grid_outputs_are_the_operation_on_the_named_item():
    for task in TRAIN_TASKS + HELDOUT_TASKS:
        op, kind = _grid(task)
        for r in examples(task, 100):
            items = r["input"].split()
            assert sorted(len([x for x in items if x in KINDS[k]]) for k in KINDS) == [1] * len(KINDS)
            (item,) = [x for x in items if x in KINDS[kind]]
            assert r["output"] == OPERATIONS[op][0](item) and kind in r["instruction"]


def test_task_names_splits():
    assert task_names("train") == list(TRAIN_TASKS)
    assert task_names("heldout") == list(HELDOUT_TASKS)
    assert task_names("classic") == list(CLASSIC_TASKS)
    assert task_names("all") == list(ALL)
    assert task_names("reverse_word") == ["reverse_word"]
    assert task_names(HELDOUT_TASKS[0]) == [HELDOUT_TASKS[0]]


def test_task_names_unknown_split_error_lists_choices():
    with pytest.raises(ValueError) as exc:
        task_names("validation")
    msg = str(exc.value)
    assert "validation" in msg
    for choice in ("train", "heldout", "classic", "all"):
        assert repr(choice) in msg


def test_examples_unknown_task_raises():
    with pytest.raises(ValueError, match="no_such_task"):
        examples("no_such_task")


def test_deterministic_and_seed_dependent():
    for task in ALL:
        a, b = examples(task, 50, seed=3), examples(task, 50, seed=3)
        assert a == b, task
        assert a != examples(task, 50, seed=4), task
        # a shorter request is a prefix of a longer one
        assert examples(task, 20, seed=0)[:1] == examples(task, 1, seed=0)


def test_prefix_stable_and_no_global_random_state():
    import random

    random.seed(123)
    state = random.getstate()
    long = examples("add_numbers", 100, seed=7)
    assert random.getstate() == state  # generation never touches the global RNG
    random.seed(999)
    assert examples("add_numbers", 30, seed=7) == long[:30]
    assert examples("add_numbers", 0) == []


@pytest.mark.parametrize("task", ALL)
def test_record_schema(task):
    recs = examples(task, 200, seed=0)
    assert len(recs) == 200
    for r in recs:
        assert set(r) == KEYS
        for k in KEYS - {"references"}:
            assert isinstance(r[k], str), (task, k)
        assert r["task"] == task
        assert r["category"] in CATEGORIES
        assert r["instruction"].strip() and r["output"].strip()
        assert isinstance(r["references"], list) and all(isinstance(x, str) for x in r["references"])
        assert r["output"] in r["references"]
        assert len(set(r["references"])) == len(r["references"])
    assert len({r["instruction"] for r in recs}) >= 3, task
    # mostly distinct examples
    assert len({(r["instruction"], r["input"]) for r in recs}) >= 0.75 * len(recs), task
    # short enough for a tiny model
    assert sum(len(r["input"]) + len(r["output"]) <= 64 for r in recs) >= 0.95 * len(recs), task
    # most tasks have an input
    assert sum(bool(r["input"]) for r in recs) > 0


def test_instructions_are_task_specific():
    owner = {}
    for task in ALL:
        for r in examples(task, 200):
            assert owner.setdefault(r["instruction"], task) == task, r["instruction"]


def test_every_category_represented_in_train():
    assert {examples(t, 1)[0]["category"] for t in TRAIN_TASKS} == set(OPERATIONS)
    assert {examples(t, 1)[0]["category"] for t in CLASSIC_TASKS} == CATEGORIES - set(OPERATIONS)


def test_string_tasks_correct():
    for inp, out in _pairs("reverse_word"):
        assert out == inp[::-1] and inp in builtin_classic.WORDS
    for inp, out in _pairs("uppercase_word"):
        assert out == inp.upper() and out != inp
    for inp, out in _pairs("lowercase_word"):
        assert out == inp.lower() and out != inp
    for inp, out in _pairs("first_letter"):
        assert out == inp[0]
    for inp, out in _pairs("last_letter"):
        assert out == inp[-1]
    for inp, out in _pairs("word_length"):
        assert out == str(len(inp))
    for inp, out in _pairs("vowel_count"):
        assert out == str(sum(c in "aeiou" for c in inp))
    for inp, out in _pairs("last_word"):
        assert out == inp.split()[-1] and len(inp.split()) >= 2
    for inp, out in _pairs("first_word"):
        assert out == inp.split()[0] and len(inp.split()) >= 2
    for r in examples("repeat_word", 50):
        assert r["output"] == f"{r['input']} {r['input']}"


def test_list_tasks_correct():
    for inp, out in _pairs("sort_ascending"):
        assert _ints(out) == sorted(_ints(inp))
    for inp, out in _pairs("sort_descending"):
        assert _ints(out) == sorted(_ints(inp), reverse=True)
    for inp, out in _pairs("max_of_list"):
        assert int(out) == max(_ints(inp))
    for inp, out in _pairs("min_of_list"):
        assert int(out) == min(_ints(inp))
    for inp, out in _pairs("count_items"):
        assert int(out) == len(_ints(inp))
    r = examples("sort_ascending", 1)[0]
    assert ", ".join(r["output"].split()) in r["references"]


def test_arithmetic_tasks_correct():
    for inp, out in _pairs("add_numbers"):
        a, b = _ints(inp)
        assert int(out) == a + b
    for inp, out in _pairs("subtract_numbers"):
        a, b = _ints(inp)
        assert int(out) == a - b >= 0
    for inp, out in _pairs("multiply_numbers"):
        a, b = _ints(inp)
        assert int(out) == a * b and 1 <= a <= 9 and 1 <= b <= 9
    for inp, out in _pairs("larger_number"):
        assert int(out) == max(_ints(inp))
    for inp, out in _pairs("smaller_number"):
        assert int(out) == min(_ints(inp))
    for inp, out in _pairs("even_or_odd"):
        assert out == ("even" if int(inp) % 2 == 0 else "odd")
    r = examples("add_numbers", 1, seed=5)[0]
    assert r["output"] in r["rationale"] and r["rationale"].startswith(" + ".join(r["input"].split()))


def test_classification_tasks_correct_and_balanced():
    recs = examples("sentiment", 200)
    for r in recs:
        words = set(r["input"].split())
        pos, neg = words & set(builtin_classic.POSITIVE), words & set(builtin_classic.NEGATIVE)
        assert (r["output"], bool(pos), bool(neg)) in {("positive", True, False), ("negative", False, True)}
    assert 0.3 < sum(r["output"] == "positive" for r in recs) / len(recs) < 0.7
    recs = examples("is_animal", 200)
    for r in recs:
        assert r["output"] == ("yes" if r["input"] in builtin_classic.ANIMALS else "no")
    assert 0.3 < sum(r["output"] == "yes" for r in recs) / len(recs) < 0.7


def test_rationales_present_where_meaningful():
    for task in ("add_numbers", "subtract_numbers", "multiply_numbers", "even_or_odd", "vowel_count"):
        assert all(r["rationale"] for r in examples(task, 20)), task
