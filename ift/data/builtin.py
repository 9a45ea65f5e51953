"""Built-in, procedurally generated instruction tasks (the default dataset; no download).

The suite (splits ``train`` and ``heldout``) is a grid of operations x object kinds. Every input
holds one item of every kind, shuffled ("tea fox hammer plum red"), so only the instruction
tells the tasks apart; each task is one cell (``twice_fruit``: "Say the fruit twice." -> "plum
plum"; ``wins_tool``: "Declare the tool the winner." -> "hammer wins"), phrased by 10-12 paraphrases of its
operation. The held-out cells are unseen combinations:
every word of their instructions occurs in training instructions (the operation with other kinds,
the kind with other operations), but no held-out instruction, no held-out (instruction, input)
pair and no held-out input -> output function occurs in training. A model that learned to follow
the instructions, and not only the training tasks, solves them: a ~1M-parameter model trained from
scratch does in a few CPU minutes (README, "Instruction fine-tuning vs fine-tuning").

The ``classic`` split keeps the first suite's string / list / arithmetic / classification
tasks (``reverse_word``, ``add_numbers``, ...), which tests and examples name directly.

Generation is fully deterministic given ``(task, n, seed)`` and never touches the global RNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ift.data import builtin_classic as classic

# A generator maps an rng to (input, output, rationale, *alternative_references).
Gen = Callable[[random.Random], tuple]
_TASKS: dict[str, tuple[str, tuple[str, ...], Gen]] = {}  # name -> (category, instructions, gen)
_SPLITS: dict[str, list[str]] = {"train": [], "heldout": [], "classic": []}


def _task(name: str, split: str, category: str, *instructions: str):
    def register(gen: Gen) -> Gen:
        _TASKS[name] = (category, instructions, gen)
        _SPLITS[split].append(name)
        return gen

    return register


# The classic split first (its order is the registration order), then the grid suite below.
for _name, _split, _category, _instructions, _gen in classic.TASKS:
    _task(_name, _split, _category, *_instructions)(_gen)


# ----------------------------------------------------------------------------- the grid suite
# Object kinds: ten items each, every one a single common word (one token for a BPE trained on the
# data), no item in two kinds.
KINDS: dict[str, tuple[str, ...]] = {
    "animal": ("cat", "dog", "fox", "cow", "pig", "owl", "bee", "hen", "rat", "bat"),
    "fruit": ("apple", "pear", "plum", "lime", "fig", "kiwi", "grape", "mango", "peach", "melon"),
    "colour": ("red", "blue", "green", "pink", "grey", "black", "white", "brown", "gold", "teal"),
    "drink": ("tea", "milk", "juice", "soda", "wine", "beer", "coffee", "cocoa", "water", "cider"),
    "tool": ("saw", "axe", "drill", "hammer", "wrench", "rake", "hoe", "shovel", "chisel", "pliers"),
}
# Operations: what to do with the item of the kind the instruction names ({o}), phrased many ways.
# fmt: off
OPERATIONS: dict[str, tuple[Callable[[str], str], tuple[str, ...]]] = {
    "name": (lambda x: x, (
        "Name the {o}.", "Which {o} is in the list?", "What is the {o}?", "Find the {o}.", "Pick out the {o}.",
        "Tell me the {o}.", "Write down the {o}.", "Give the {o} from the list.", "Which word is the {o}?",
        "Say the {o}.", "Output the {o}.", "Return only the {o}.")),
    "twice": (lambda x: f"{x} {x}", (
        "Say the {o} twice.", "Write the {o} two times.", "Repeat the {o} twice.", "Give the {o} two times.",
        "Name the {o} twice.", "Output the {o} twice.", "Tell me the {o} two times.", "Find the {o} and say it twice.",
        "Write down the {o} twice.", "Pick out the {o} and repeat it two times.", "Twice, name the {o}.")),
    "thrice": (lambda x: f"{x} {x} {x}", (
        "Say the {o} three times.", "Write the {o} three times.", "Repeat the {o} three times.",
        "Give the {o} three times.", "Name the {o} three times.", "Output the {o} three times.",
        "Tell me the {o} three times.", "Find the {o} and say it three times.", "Write down the {o} three times.",
        "Pick out the {o} and repeat it three times.", "Three times, name the {o}.")),
    # The two below end with a word, not punctuation: the metrics drop punctuation, so "cat?" would
    # score as "cat" and the operation would go unmeasured.
    "please": (lambda x: f"{x} please", (
        "Ask politely for the {o}.", "Say the {o} and then please.", "Name the {o}, adding please.",
        "Give the {o} followed by please.", "Write the {o}, then the word please.", "Request the {o} politely.",
        "Output the {o} with please after it.", "Tell me the {o} and say please.",
        "Find the {o} and ask for it politely.", "Pick out the {o} and end with please.")),
    "wins": (lambda x: f"{x} wins", (
        "Say that the {o} wins.", "Declare the {o} the winner.", "Name the {o} as the winner.",
        "Give the {o} followed by wins.", "Write the {o}, then the word wins.", "Announce that the {o} wins.",
        "Output the {o} with wins after it.", "Tell me the {o} wins.", "Find the {o} and say it wins.",
        "Pick out the {o} and end with wins.")),
}
# fmt: on
# Held-out cells: two kinds per operation, each kind held out of two operations, so every operation
# is trained on three kinds and every kind on three operations.
_KIND_NAMES, _OP_NAMES = tuple(KINDS), tuple(OPERATIONS)
HELDOUT_CELLS: tuple[tuple[str, str], ...] = tuple(
    (op, _KIND_NAMES[(i + d) % len(_KIND_NAMES)]) for i, op in enumerate(_OP_NAMES) for d in (0, 3)
)


def _grid_task(op: str, kind: str) -> None:
    fn, phrasings = OPERATIONS[op]

    def gen(rng: random.Random) -> tuple:
        picked = {k: rng.choice(KINDS[k]) for k in _KIND_NAMES}
        items = list(picked.values())
        rng.shuffle(items)
        return " ".join(items), fn(picked[kind]), f"The {kind} is {picked[kind]}."

    split = "heldout" if (op, kind) in HELDOUT_CELLS else "train"
    _task(f"{op}_{kind}", split, op, *(p.format(o=kind) for p in phrasings))(gen)


for _op in _OP_NAMES:
    for _kind in _KIND_NAMES:
        _grid_task(_op, _kind)

TRAIN_TASKS: tuple[str, ...] = tuple(_SPLITS["train"])
HELDOUT_TASKS: tuple[str, ...] = tuple(_SPLITS["heldout"])
CLASSIC_TASKS: tuple[str, ...] = tuple(_SPLITS["classic"])
assert not set(TRAIN_TASKS) & set(HELDOUT_TASKS)


def task_names(split: str) -> list[str]:
    """Task names for ``"train"``, ``"heldout"``, ``"classic"`` or ``"all"``; a single task name gives ``[name]``."""
    if split in _SPLITS:
        return list(_SPLITS[split])
    if split == "all":
        return list(TRAIN_TASKS + HELDOUT_TASKS + CLASSIC_TASKS)
    if split in _TASKS:
        return [split]
    raise ValueError(
        f"unknown builtin split or task {split!r}; valid choices: 'train', 'heldout', 'classic', "
        f"'all' or one of the task names {sorted(_TASKS)}"
    )


def examples(task: str, n: int = 200, seed: int = 0) -> list[dict]:
    """``n`` deterministic records of ``task``; ``examples(t, k, s)`` is a prefix of
    ``examples(t, m, s)`` for k <= m."""
    if task not in _TASKS:
        raise ValueError(f"unknown builtin task {task!r}; valid tasks: {sorted(_TASKS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    category, instructions, gen = _TASKS[task]
    rng = random.Random(f"{seed}:{task}")
    seen: set[tuple[str, str]] = set()
    records: list[dict] = []
    while len(records) < n:
        for _ in range(20):  # a few retries to avoid exact duplicates while the pool allows
            instruction = rng.choice(instructions)
            inp, out, rationale, *alts = gen(rng)
            if (instruction, inp) not in seen:
                break
        seen.add((instruction, inp))
        records.append(
            {
                "task": task,
                "instruction": instruction,
                "input": inp,
                "output": out,
                "references": [out] + [a for a in dict.fromkeys(alts) if a != out],
                "rationale": rationale,
                "category": category,
            }
        )
    return records
