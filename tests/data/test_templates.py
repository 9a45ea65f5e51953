"""Tests for rendering canonical examples into (prompt, target) text (ift.data.templates)."""

import collections

import pytest

from ift.data.templates import choose_exemplars, choose_template, render, render_chat, uses_chat_template


def ex(instruction="Reverse the word.", input="stone", output="enots", rationale="", task="reverse_word"):
    return {
        "task": task,
        "instruction": instruction,
        "input": input,
        "output": output,
        "references": [output],
        "rationale": rationale,
        "category": "string",
    }


TASK = [ex(input=w, output=w[::-1]) for w in ("apple", "river", "green", "house", "table", "music", "bread")]


# --------------------------------------------------------------------------- zero_shot


def test_zero_shot_renders_instruction_and_input():
    prompt, target = render(ex(), "zero_shot")
    assert prompt == "Reverse the word.\n\nInput: stone\nOutput:"
    assert target == " enots"
    assert target.startswith(" ") and not target.startswith("  ")
    assert (prompt + target).endswith("Output: enots")


def test_zero_shot_without_input():
    prompt, target = render(ex(instruction="Name a color.", input="", output="red"), "zero_shot")
    assert prompt == "Name a color.\n\nOutput:"
    assert "Input:" not in prompt
    assert target == " red"


def test_zero_shot_strips_whitespace():
    prompt, target = render(ex(instruction="  Reverse it. \n", input=" cat ", output="  tac\n"), "zero_shot")
    assert prompt == "Reverse it.\n\nInput: cat\nOutput:"
    assert target == " tac"


def test_zero_shot_without_instruction():
    prompt, _ = render(ex(instruction="", input="just the input", output="y"), "zero_shot")
    assert prompt == "Input: just the input\nOutput:"


# --------------------------------------------------------------------------- few_shot


@pytest.mark.parametrize("index", [0, 3, 6])
def test_choose_exemplars_k_distinct_never_itself(index):
    picks = choose_exemplars(len(TASK), index, 3, seed=0, task="reverse_word")
    assert len(picks) == 3 and len(set(picks)) == 3
    assert index not in picks
    assert all(0 <= j < len(TASK) for j in picks)


def test_choose_exemplars_deterministic_and_seed_dependent():
    a = choose_exemplars(1000, 17, 4, seed=1, task="t")
    assert a == choose_exemplars(1000, 17, 4, seed=1, task="t")
    assert a != choose_exemplars(1000, 17, 4, seed=2, task="t")
    assert a != choose_exemplars(1000, 17, 4, seed=1, task="other_task")
    assert a != choose_exemplars(1000, 18, 4, seed=1, task="t")


def test_choose_exemplars_never_itself_over_many_indices():
    for index in range(50):
        picks = choose_exemplars(5, index % 5, 4, seed=index, task="small")
        assert sorted(picks) == sorted(set(range(5)) - {index % 5})


def test_choose_exemplars_small_tasks():
    assert choose_exemplars(1, 0, 2, seed=0, task="t") == []  # only the example itself
    assert choose_exemplars(10, 0, 0, seed=0, task="t") == []
    assert choose_exemplars(3, 1, 5, seed=0, task="t") in ([0, 2], [2, 0])  # k capped at n - 1


def test_few_shot_includes_exactly_k_exemplars_of_the_task_never_itself():
    k, index = 3, 2
    picks = choose_exemplars(len(TASK), index, k, seed=0, task="reverse_word")
    prompt, target = render(TASK[index], "few_shot", [TASK[j] for j in picks])
    example = TASK[index]
    assert target == f" {example['output']}"
    # the instruction once, k solved blocks, then the unsolved query
    assert prompt.count("Reverse the word.") == 1
    assert prompt.count("Output:") == k + 1
    for j in picks:
        assert f"Input: {TASK[j]['input']}\nOutput: {TASK[j]['output']}" in prompt
    assert prompt.count(f"Input: {example['input']}") == 1  # the example appears only as the query
    assert example["output"] not in prompt  # its answer never leaks
    assert prompt.endswith(f"Input: {example['input']}\nOutput:")
    blocks = prompt.split("\n\n")
    assert blocks[0] == "Reverse the word." and len(blocks) == k + 2


def test_few_shot_with_no_exemplars_equals_zero_shot():
    assert render(TASK[0], "few_shot", []) == render(TASK[0], "zero_shot")


def test_zero_shot_ignores_exemplars():
    assert render(TASK[0], "zero_shot", TASK[1:3]) == render(TASK[0], "zero_shot")


# --------------------------------------------------------------------------- cot


def test_cot_puts_rationale_in_target():
    e = ex(rationale="s-t-o-n-e backwards is e-n-o-t-s.")
    prompt, target = render(e, "cot")
    assert prompt == render(e, "zero_shot")[0]
    assert target == " s-t-o-n-e backwards is e-n-o-t-s. So the answer is: enots"
    assert target.endswith("enots")
    assert "backwards" not in prompt


def test_cot_without_rationale_is_plain_target():
    assert render(ex(rationale=""), "cot") == render(ex(), "zero_shot")
    no_key = {k: v for k, v in ex().items() if k != "rationale"}
    assert render(no_key, "cot")[1] == " enots"


def test_rationale_not_in_target_for_other_templates():
    e = ex(rationale="because.")
    assert render(e, "zero_shot")[1] == " enots"
    assert render(e, "few_shot", TASK[:2])[1] == " enots"


# --------------------------------------------------------------------------- mixed templates


def test_choose_template_plain_name():
    assert choose_template("cot", 0, "t", 5) == "cot"


def test_choose_template_mixture_deterministic_and_proportional():
    mix = {"zero_shot": 0.5, "few_shot": 0.5}
    picks = [choose_template(mix, 0, "reverse_word", i) for i in range(2000)]
    assert picks == [choose_template(mix, 0, "reverse_word", i) for i in range(2000)]
    counts = collections.Counter(picks)
    assert set(counts) == {"zero_shot", "few_shot"}
    assert abs(counts["zero_shot"] / 2000 - 0.5) < 0.05
    # a different seed or task gives a different (but equally balanced) assignment
    other_seed = [choose_template(mix, 1, "reverse_word", i) for i in range(2000)]
    other_task = [choose_template(mix, 0, "sort_ascending", i) for i in range(2000)]
    assert other_seed != picks and other_task != picks
    assert abs(collections.Counter(other_seed)["zero_shot"] / 2000 - 0.5) < 0.05


def test_choose_template_uneven_proportions_and_zero_weight():
    mix = {"zero_shot": 0.6, "few_shot": 0.3, "cot": 0.1}
    counts = collections.Counter(choose_template(mix, 7, "t", i) for i in range(2000))
    for name, p in mix.items():
        assert abs(counts[name] / 2000 - p) < 0.05, (name, counts)
    never = {"zero_shot": 1, "cot": 0}
    assert {choose_template(never, 0, "t", i) for i in range(300)} == {"zero_shot"}


# --------------------------------------------------------------------------- chat templates


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture
def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|end|>": 1, "hello": 2, "world": 3}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|end|>")


def test_render_chat_keeps_target_as_assistant_reply(tiny_tokenizer):
    tiny_tokenizer.chat_template = CHAT_TEMPLATE
    prompt, target = render(ex(), "zero_shot")
    chat_prompt, chat_target = render_chat(tiny_tokenizer, prompt, target)
    assert chat_prompt == f"<|user|>\n{prompt}<|end|>\n<|assistant|>\n"
    assert chat_prompt.endswith("<|assistant|>\n")  # the generation prompt ends the prompt
    assert chat_target == "enots"  # the reply itself, without the plain-text leading space
    assert "enots" not in chat_prompt


def test_uses_chat_template(tiny_tokenizer):
    tiny_tokenizer.chat_template = CHAT_TEMPLATE
    assert uses_chat_template(tiny_tokenizer, "auto") is True
    assert uses_chat_template(tiny_tokenizer, "none") is False
    assert uses_chat_template(None, "auto") is False
    tiny_tokenizer.chat_template = None
    assert uses_chat_template(tiny_tokenizer, "auto") is False
