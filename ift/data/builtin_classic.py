"""The built-in suite's `classic` split: the first suite's string / list / arithmetic /
classification tasks (``reverse_word``, ``add_numbers``, ...), which tests and examples name
directly. Each generator maps an rng to (input, output, rationale, *alternative_references);
`TASKS` lists them in registration order for ift.data.builtin."""

from __future__ import annotations

import random
from collections.abc import Callable

# Word lists and task registrations are data: kept as tables, not one item per line.
# fmt: off
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
# fmt: on
THINGS = tuple(w for w in WORDS if w not in ANIMALS)
POSITIVE = ("good", "great", "nice", "fun", "lovely", "happy", "amazing", "perfect")
NEGATIVE = ("bad", "awful", "boring", "sad", "terrible", "ugly", "poor", "horrible")
SUBJECTS = ("the movie", "the food", "this book", "my day", "the song", "the trip", "the game", "the room")
VOWELS = "aeiou"

Gen = Callable[[random.Random], tuple]
TASKS: list[tuple[str, str, str, tuple[str, ...], Gen]] = []  # (name, split, category, instructions, gen)


def _task(name: str, split: str, category: str, *instructions: str):
    def register(gen: Gen) -> Gen:
        TASKS.append((name, split, category, instructions, gen))
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
# fmt: off
@_task("reverse_word", "classic", "string", "Reverse the letters of the word.",
       "Write the word backwards.", "Spell the given word in reverse order.",
       "Output the word with its letters reversed.")
def _reverse_word(rng):
    w = rng.choice(WORDS)
    return w, w[::-1], f"{'-'.join(w)} backwards is {'-'.join(w[::-1])}."


@_task("uppercase_word", "classic", "string", "Convert the word to uppercase.",
       "Write the word in capital letters.", "Rewrite the word using only upper-case letters.")
def _uppercase_word(rng):
    w = rng.choice(WORDS)
    return w, w.upper(), ""


@_task("first_letter", "classic", "string", "What is the first letter of the word?",
       "Give the letter the word starts with.", "Output only the initial letter of the word.")
def _first_letter(rng):
    w = rng.choice(WORDS)
    return w, w[0], ""


@_task("word_length", "classic", "string", "How many letters does the word have?",
       "Count the letters in the word.", "Give the length of the word in letters.")
def _word_length(rng):
    w = rng.choice(WORDS)
    return w, str(len(w)), f"{'-'.join(w)} has {len(w)} letters."


@_task("repeat_word", "classic", "string", "Repeat the word twice.",
       "Write the word two times, separated by a space.", "Say the word, then say it again.")
def _repeat_word(rng):
    w = rng.choice(WORDS)
    return w, f"{w} {w}", "", f"{w}, {w}", f"{w}{w}"


@_task("vowel_count", "classic", "string", "How many vowels are in the word?",
       "Count the vowels (a, e, i, o, u) in the word.", "Give the number of vowels in the word.")
def _vowel_count(rng):
    w = rng.choice(WORDS)
    vs = [c for c in w if c in VOWELS]
    return w, str(len(vs)), f"The vowels in {w} are {', '.join(vs) or 'none'}: {len(vs)} in total."


@_task("last_word", "classic", "string", "What is the last word?",
       "Output the final word of the text.", "Give only the word at the end.")
def _last_word(rng):
    ws = _phrase(rng)
    return " ".join(ws), ws[-1], ""


@_task("sort_ascending", "classic", "list", "Sort the numbers from smallest to largest.",
       "Put the numbers in ascending order.", "Arrange the list in increasing order.")
def _sort_ascending(rng):
    xs = _nums(rng, 3)
    ans = _list_answer(sorted(xs))
    return _show(xs), ans[0], "", *ans[1:]


@_task("max_of_list", "classic", "list", "What is the largest number in the list?",
       "Give the maximum of the numbers.", "Find the biggest number.")
def _max_of_list(rng):
    xs = _nums(rng, 3)
    return _show(xs), str(max(xs)), f"Comparing {', '.join(map(str, xs))}, the largest is {max(xs)}."


@_task("count_items", "classic", "list", "How many numbers are in the list?",
       "Count the items in the list.", "Give the length of the list.")
def _count_items(rng):
    xs = _nums(rng, 2, 7)
    return _show(xs), str(len(xs)), f"Counting {', '.join(map(str, xs))} gives {len(xs)} numbers."


@_task("add_numbers", "classic", "arithmetic", "Add the two numbers.",
       "What is the sum of the two numbers?", "Compute the total of the numbers.")
def _add_numbers(rng):
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return f"{a} {b}", str(a + b), f"{a} + {b}: {a} plus {b} is {a + b}."


@_task("subtract_numbers", "classic", "arithmetic", "Subtract the second number from the first.",
       "What is the first number minus the second?", "Compute the difference: first minus second.")
def _subtract_numbers(rng):
    a, b = sorted((rng.randint(0, 20), rng.randint(0, 20)), reverse=True)
    return f"{a} {b}", str(a - b), f"{a} - {b}: {a} minus {b} is {a - b}."


@_task("even_or_odd", "classic", "arithmetic", "Is the number even or odd?",
       "Answer even or odd for the number.", "Say whether the number is even or odd.")
def _even_or_odd(rng):
    n = rng.randint(0, 999)
    p = "odd" if n % 2 else "even"
    return str(n), p, f"{n} ends in {n % 10}, so it is {p}."


@_task("larger_number", "classic", "arithmetic", "Which of the two numbers is larger?",
       "Output the bigger number.", "Give the greater of the two numbers.")
def _larger_number(rng):
    a, b = rng.sample(range(100), 2)
    return f"{a} {b}", str(max(a, b)), f"{max(a, b)} is greater than {min(a, b)}."


@_task("sentiment", "classic", "classification", "Is the sentiment positive or negative?",
       "Classify the review as positive or negative.", "Does the sentence sound positive or negative?",
       "Label the opinion: positive or negative.")
def _sentiment(rng):
    label = rng.choice(("positive", "negative"))
    adj = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    text = f"{rng.choice(SUBJECTS)} {rng.choice(('is', 'was'))} {rng.choice(('', 'very ', 'so '))}{adj}"
    return text, label, f"'{adj}' is a {label} word, so the sentiment is {label}."


@_task("is_animal", "classic", "classification", "Is this an animal? Answer yes or no.",
       "Does the word name an animal?", "Answer yes if the word is an animal, otherwise no.",
       "Is the following a kind of animal?")
def _is_animal(rng):
    yes = rng.random() < 0.5
    w = rng.choice(ANIMALS if yes else THINGS)
    return w, "yes" if yes else "no", f"{w} is {'' if yes else 'not '}an animal.", "true" if yes else "false"


# ----------------------------------------------------------------------------- held-out tasks
@_task("lowercase_word", "classic", "string", "Convert the word to lowercase.",
       "Write the word in small letters.", "Rewrite the word using only lower-case letters.")
def _lowercase_word(rng):
    w = rng.choice(WORDS)
    return w.upper(), w, ""


@_task("last_letter", "classic", "string", "What is the last letter of the word?",
       "Give the letter the word ends with.", "Output only the final letter of the word.")
def _last_letter(rng):
    w = rng.choice(WORDS)
    return w, w[-1], ""


@_task("first_word", "classic", "string", "What is the first word?",
       "Output the opening word of the text.", "Give only the word at the start.")
def _first_word(rng):
    ws = _phrase(rng)
    return " ".join(ws), ws[0], ""


@_task("sort_descending", "classic", "list", "Sort the numbers from largest to smallest.",
       "Put the numbers in descending order.", "Arrange the list in decreasing order.")
def _sort_descending(rng):
    xs = _nums(rng, 3)
    ans = _list_answer(sorted(xs, reverse=True))
    return _show(xs), ans[0], "", *ans[1:]


@_task("min_of_list", "classic", "list", "What is the smallest number in the list?",
       "Give the minimum of the numbers.", "Find the lowest number.")
def _min_of_list(rng):
    xs = _nums(rng, 3)
    return _show(xs), str(min(xs)), f"Comparing {', '.join(map(str, xs))}, the smallest is {min(xs)}."


@_task("multiply_numbers", "classic", "arithmetic", "Multiply the two numbers.",
       "What is the product of the two numbers?", "Compute the first number times the second.")
def _multiply_numbers(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"{a} {b}", str(a * b), f"{a} x {b}: {a} times {b} is {a * b}."


@_task("smaller_number", "classic", "arithmetic", "Which of the two numbers is smaller?",
       "Output the lesser number.", "Give the smaller of the two numbers.")
def _smaller_number(rng):
    a, b = rng.sample(range(100), 2)
    return f"{a} {b}", str(min(a, b)), f"{min(a, b)} is less than {max(a, b)}."


# fmt: on
