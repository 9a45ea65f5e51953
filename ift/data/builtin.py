"""Built-in, procedurally generated instruction tasks (the default dataset; no download).

Every task is a tiny string / list / arithmetic / classification problem with a
short answer, so a very small randomly initialised model can learn the train
tasks in a few hundred CPU steps and then be evaluated on *related but unseen*
held-out tasks (e.g. train ``max_of_list``, evaluate ``min_of_list``).

Inputs are deliberately bare ("7 3", "4 9 1", "apple") and shared between tasks,
so the model has to read the instruction to know what to do. Generation is fully
deterministic given ``(task, n, seed)`` and never touches the global RNG.
"""
from __future__ import annotations

import random
from typing import Callable

WORDS = (
    "apple", "river", "green", "house", "table", "music", "bread", "cloud", "smile", "stone",
    "light", "water", "chair", "dream", "plant", "ocean", "train", "paper", "sugar", "lemon",
    "night", "storm", "candy", "grape", "money", "queen", "sun", "map", "box", "cup",
    "hat", "pen", "red", "blue", "book", "tree", "milk", "star", "moon", "rain",
    "lamp", "door", "king", "ship", "rose", "snow", "fire", "wind", "gold", "salt",
    "tiger", "horse", "sheep", "zebra", "cat", "dog", "bird", "fish", "frog", "duck",
)
ANIMALS = (
    "tiger", "horse", "sheep", "zebra", "cat", "dog", "bird", "fish", "frog", "duck", "lion",
    "mouse", "goat", "bear", "wolf", "owl", "cow", "pig", "fox", "deer", "snake", "whale",
    "rabbit", "monkey", "camel", "eagle", "shark", "ant", "bee", "hen",
)
THINGS = tuple(w for w in WORDS if w not in ANIMALS)
POSITIVE = ("good", "great", "nice", "fun", "lovely", "happy", "amazing", "perfect")
NEGATIVE = ("bad", "awful", "boring", "sad", "terrible", "ugly", "poor", "horrible")
SUBJECTS = ("the movie", "the food", "this book", "my day", "the song", "the trip", "the game", "the room")
VOWELS = "aeiou"

# A generator maps an rng to (input, output, rationale, *alternative_references).
Gen = Callable[[random.Random], tuple]
_TASKS: dict[str, tuple[str, tuple[str, ...], Gen]] = {}  # name -> (category, instructions, gen)
_SPLITS: dict[str, list[str]] = {"train": [], "heldout": []}


def _task(name: str, split: str, category: str, *instructions: str):
    def register(gen: Gen) -> Gen:
        _TASKS[name] = (category, instructions, gen)
        _SPLITS[split].append(name)
        return gen
    return register


def _nums(rng: random.Random, lo: int = 2, hi: int = 5) -> list[int]:
    return [rng.randint(0, 20) for _ in range(rng.randint(lo, hi))]


def _show(xs: list[int]) -> str:
    return " ".join(map(str, xs))


def _list_answer(xs: list[int]) -> tuple[str, ...]:
    s = [str(x) for x in xs]
    return " ".join(s), ", ".join(s), ",".join(s), "[" + ", ".join(s) + "]"


def _phrase(rng: random.Random) -> list[str]:
    return rng.sample(WORDS, rng.randint(2, 4))


# ----------------------------------------------------------------------------- train tasks
@_task("reverse_word", "train", "string", "Reverse the letters of the word.",
       "Write the word backwards.", "Spell the given word in reverse order.",
       "Output the word with its letters reversed.")
def _reverse_word(rng):
    w = rng.choice(WORDS)
    return w, w[::-1], f"{'-'.join(w)} backwards is {'-'.join(w[::-1])}."


@_task("uppercase_word", "train", "string", "Convert the word to uppercase.",
       "Write the word in capital letters.", "Rewrite the word using only upper-case letters.")
def _uppercase_word(rng):
    w = rng.choice(WORDS)
    return w, w.upper(), ""


@_task("first_letter", "train", "string", "What is the first letter of the word?",
       "Give the letter the word starts with.", "Output only the initial letter of the word.")
def _first_letter(rng):
    w = rng.choice(WORDS)
    return w, w[0], ""


@_task("word_length", "train", "string", "How many letters does the word have?",
       "Count the letters in the word.", "Give the length of the word in letters.")
def _word_length(rng):
    w = rng.choice(WORDS)
    return w, str(len(w)), f"{'-'.join(w)} has {len(w)} letters."


@_task("repeat_word", "train", "string", "Repeat the word twice.",
       "Write the word two times, separated by a space.", "Say the word, then say it again.")
def _repeat_word(rng):
    w = rng.choice(WORDS)
    return w, f"{w} {w}", "", f"{w}, {w}", f"{w}{w}"


@_task("vowel_count", "train", "string", "How many vowels are in the word?",
       "Count the vowels (a, e, i, o, u) in the word.", "Give the number of vowels in the word.")
def _vowel_count(rng):
    w = rng.choice(WORDS)
    vs = [c for c in w if c in VOWELS]
    return w, str(len(vs)), f"The vowels in {w} are {', '.join(vs) or 'none'}: {len(vs)} in total."


@_task("last_word", "train", "string", "What is the last word?",
       "Output the final word of the text.", "Give only the word at the end.")
def _last_word(rng):
    ws = _phrase(rng)
    return " ".join(ws), ws[-1], ""


@_task("sort_ascending", "train", "list", "Sort the numbers from smallest to largest.",
       "Put the numbers in ascending order.", "Arrange the list in increasing order.")
def _sort_ascending(rng):
    xs = _nums(rng, 3)
    ans = _list_answer(sorted(xs))
    return _show(xs), ans[0], "", *ans[1:]


@_task("max_of_list", "train", "list", "What is the largest number in the list?",
       "Give the maximum of the numbers.", "Find the biggest number.")
def _max_of_list(rng):
    xs = _nums(rng, 3)
    return _show(xs), str(max(xs)), f"Comparing {', '.join(map(str, xs))}, the largest is {max(xs)}."


@_task("count_items", "train", "list", "How many numbers are in the list?",
       "Count the items in the list.", "Give the length of the list.")
def _count_items(rng):
    xs = _nums(rng, 2, 7)
    return _show(xs), str(len(xs)), f"Counting {', '.join(map(str, xs))} gives {len(xs)} numbers."


@_task("add_numbers", "train", "arithmetic", "Add the two numbers.",
       "What is the sum of the two numbers?", "Compute the total of the numbers.")
def _add_numbers(rng):
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return f"{a} {b}", str(a + b), f"{a} + {b}: {a} plus {b} is {a + b}."


@_task("subtract_numbers", "train", "arithmetic", "Subtract the second number from the first.",
       "What is the first number minus the second?", "Compute the difference: first minus second.")
def _subtract_numbers(rng):
    a, b = sorted((rng.randint(0, 20), rng.randint(0, 20)), reverse=True)
    return f"{a} {b}", str(a - b), f"{a} - {b}: {a} minus {b} is {a - b}."


@_task("even_or_odd", "train", "arithmetic", "Is the number even or odd?",
       "Answer even or odd for the number.", "Say whether the number is even or odd.")
def _even_or_odd(rng):
    n = rng.randint(0, 999)
    p = "odd" if n % 2 else "even"
    return str(n), p, f"{n} ends in {n % 10}, so it is {p}."


@_task("larger_number", "train", "arithmetic", "Which of the two numbers is larger?",
       "Output the bigger number.", "Give the greater of the two numbers.")
def _larger_number(rng):
    a, b = rng.sample(range(100), 2)
    return f"{a} {b}", str(max(a, b)), f"{max(a, b)} is greater than {min(a, b)}."


@_task("sentiment", "train", "classification", "Is the sentiment positive or negative?",
       "Classify the review as positive or negative.", "Does the sentence sound positive or negative?",
       "Label the opinion: positive or negative.")
def _sentiment(rng):
    label = rng.choice(("positive", "negative"))
    adj = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    text = f"{rng.choice(SUBJECTS)} {rng.choice(('is', 'was'))} {rng.choice(('', 'very ', 'so '))}{adj}"
    return text, label, f"'{adj}' is a {label} word, so the sentiment is {label}."


@_task("is_animal", "train", "classification", "Is this an animal? Answer yes or no.",
       "Does the word name an animal?", "Answer yes if the word is an animal, otherwise no.",
       "Is the following a kind of animal?")
def _is_animal(rng):
    yes = rng.random() < 0.5
    w = rng.choice(ANIMALS if yes else THINGS)
    return w, "yes" if yes else "no", f"{w} is {'' if yes else 'not '}an animal.", "true" if yes else "false"


# ----------------------------------------------------------------------------- held-out tasks
@_task("lowercase_word", "heldout", "string", "Convert the word to lowercase.",
       "Write the word in small letters.", "Rewrite the word using only lower-case letters.")
def _lowercase_word(rng):
    w = rng.choice(WORDS)
    return w.upper(), w, ""


@_task("last_letter", "heldout", "string", "What is the last letter of the word?",
       "Give the letter the word ends with.", "Output only the final letter of the word.")
def _last_letter(rng):
    w = rng.choice(WORDS)
    return w, w[-1], ""


@_task("first_word", "heldout", "string", "What is the first word?",
       "Output the opening word of the text.", "Give only the word at the start.")
def _first_word(rng):
    ws = _phrase(rng)
    return " ".join(ws), ws[0], ""


@_task("sort_descending", "heldout", "list", "Sort the numbers from largest to smallest.",
       "Put the numbers in descending order.", "Arrange the list in decreasing order.")
def _sort_descending(rng):
    xs = _nums(rng, 3)
    ans = _list_answer(sorted(xs, reverse=True))
    return _show(xs), ans[0], "", *ans[1:]


@_task("min_of_list", "heldout", "list", "What is the smallest number in the list?",
       "Give the minimum of the numbers.", "Find the lowest number.")
def _min_of_list(rng):
    xs = _nums(rng, 3)
    return _show(xs), str(min(xs)), f"Comparing {', '.join(map(str, xs))}, the smallest is {min(xs)}."


@_task("multiply_numbers", "heldout", "arithmetic", "Multiply the two numbers.",
       "What is the product of the two numbers?", "Compute the first number times the second.")
def _multiply_numbers(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"{a} {b}", str(a * b), f"{a} x {b}: {a} times {b} is {a * b}."


@_task("smaller_number", "heldout", "arithmetic", "Which of the two numbers is smaller?",
       "Output the lesser number.", "Give the smaller of the two numbers.")
def _smaller_number(rng):
    a, b = rng.sample(range(100), 2)
    return f"{a} {b}", str(min(a, b)), f"{min(a, b)} is less than {max(a, b)}."


TRAIN_TASKS: tuple[str, ...] = tuple(_SPLITS["train"])
HELDOUT_TASKS: tuple[str, ...] = tuple(_SPLITS["heldout"])
assert not set(TRAIN_TASKS) & set(HELDOUT_TASKS)


def task_names(split: str) -> list[str]:
    """Task names for ``"train"``, ``"heldout"`` or ``"all"``; a single task name gives ``[name]``."""
    if split == "train":
        return list(TRAIN_TASKS)
    if split == "heldout":
        return list(HELDOUT_TASKS)
    if split == "all":
        return list(TRAIN_TASKS + HELDOUT_TASKS)
    if split in _TASKS:
        return [split]
    raise ValueError(f"unknown builtin split or task {split!r}; valid choices: 'train', 'heldout', "
                     f"'all' or one of the task names {sorted(_TASKS)}")


def examples(task: str, n: int = 200, seed: int = 0) -> list[dict]:
    """``n`` deterministic records of ``task``; ``examples(t, k, s)`` is a prefix of ``examples(t, m, s)`` for k <= m."""
    if task not in _TASKS:
        raise ValueError(f"unknown builtin task {task!r}; valid tasks: {sorted(_TASKS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    category, instructions, gen = _TASKS[task]
    rng = random.Random(f"{seed}:{task}")
    seen: set[tuple[str, str]] = set()
    records = []
    while len(records) < n:
        for _ in range(20):  # a few retries to avoid exact duplicates while the pool allows
            instruction = rng.choice(instructions)
            inp, out, rationale, *alts = gen(rng)
            if (instruction, inp) not in seen:
                break
        seen.add((instruction, inp))
        records.append({
            "task": task, "instruction": instruction, "input": inp, "output": out,
            "references": [out] + [a for a in dict.fromkeys(alts) if a != out],
            "rationale": rationale, "category": category,
        })
    return records
