"""Render a canonical example into (prompt, target) text.

Templates: zero_shot (instruction + input), few_shot (k exemplars of the same task, never the
example itself), cot (the target carries the rationale when there is one), and a FLAN-style mix of
them chosen per example. Every choice is a pure function of (seed, task, example index), so the
same example renders the same way in every process and on every resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def example_rng(seed: int, task: str, index: int, purpose: str) -> random.Random:
    # random.Random(str) hashes the string with SHA-512: stable across processes and Python runs.
    return random.Random(f"{seed}|{task}|{index}|{purpose}")


def choose_template(template: str | dict, seed: int, task: str, index: int) -> str:
    if isinstance(template, str):
        return template
    names = [n for n, p in template.items() if p > 0]
    weights = [template[n] for n in names]
    return example_rng(seed, task, index, "template").choices(names, weights=weights)[0]


def choose_exemplars(n_examples: int, index: int, k: int, seed: int, task: str) -> list[int]:
    """k distinct example indices of the same task, excluding `index` itself."""
    k = min(k, n_examples - 1)
    if k <= 0:
        return []
    rng = example_rng(seed, task, index, "exemplars")
    picks: list[int] = []
    while len(picks) < k:  # rejection keeps this O(k) for large tasks
        j = rng.randrange(n_examples)
        if j != index and j not in picks:
            picks.append(j)
    return picks


def _block(instruction_input: str, output: str | None) -> str:
    text = f"Input: {instruction_input}\nOutput:" if instruction_input else "Output:"
    return text if output is None else f"{text} {output}"


def render(example: dict, template: str, exemplars: Sequence[dict] = ()) -> tuple[str, str]:
    """(prompt, target) in plain text; the target starts after "Output:" with a space."""
    parts = [example["instruction"].strip()]
    if template == "few_shot":
        parts += [_block(ex["input"].strip(), ex["output"].strip()) for ex in exemplars]
    parts.append(_block(example["input"].strip(), None))
    prompt = "\n\n".join(p for p in parts if p)
    target = example["output"].strip()
    if template == "cot" and example.get("rationale"):
        target = f"{example['rationale'].strip()} So the answer is: {target}"
    return prompt, " " + target


def render_chat(tokenizer, prompt: str, target: str) -> tuple[str, str]:
    """Put the prompt through the tokenizer's chat template as one user turn; the target is the
    assistant's reply, so the prompt/target boundary (and the loss mask) stays where it was."""
    chat_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return chat_prompt, target.lstrip()


def uses_chat_template(tokenizer, setting: str) -> bool:
    return setting == "auto" and tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
