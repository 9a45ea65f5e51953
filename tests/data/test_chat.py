"""Multi-turn chat: every assistant turn (with the end-of-turn its template writes) is a target and
nothing else is, for real-world chat templates (Llama-3 and ChatML, written here), with and without
{% generation %} markers, and the plain role format without a template; then a 2-process run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY_MODEL, read_metrics, run_concurrently, write_config

from ift.config import DataConfig, TaskSource
from ift.data.chat import PLAIN_ROLES, prompt_ids, tokenize_conversation
from ift.data.sources import load_tasks
from ift.data.tokenize import tokenize_tasks
from ift.errors import UserError
from ift.model import train_bpe_tokenizer

# Meta's Llama-3 template (as shipped with Meta-Llama-3-8B-Instruct).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen2.5's ChatML template without tools (a default system prompt when none is given).
CHATML = (
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
# ChatML with the generation markers transformers reads for return_assistant_tokens_mask.
CHATML_MARKED = (
    "{%- for message in messages %}{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}{% generation %}"
    "{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\n' }}{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
# What each template writes after an assistant reply, inside the target.
END_OF_TURN = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>\n", "chatml_marked": "<|im_end|>"}
TEMPLATES = {"llama3": LLAMA3, "chatml": CHATML, "chatml_marked": CHATML_MARKED}
CHAT_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>"]

SYSTEM = {"role": "system", "content": "You answer in one word."}
TURNS = [("Capital of France?", "Paris"), ("And of Italy?", "Rome is the capital"), ("Thanks, bye.", "Bye!")]


def conversation(n_turns: int, system: bool = True) -> list[dict]:
    msgs = [SYSTEM] if system else []
    for q, a in TURNS[:n_turns]:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs


@pytest.fixture(scope="module")
def base_tokenizer():
    texts = [t for q, a in TURNS for t in (q, a)] + [SYSTEM["content"], "user assistant system"] * 3
    tok = train_bpe_tokenizer(texts, 300)
    tok.add_special_tokens({"additional_special_tokens": CHAT_SPECIALS})
    return tok


def with_template(tok, name):
    tok = tok.__class__(
        tokenizer_object=tok.backend_tokenizer,
        **{k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token")},
        additional_special_tokens=CHAT_SPECIALS,
    )
    tok.chat_template = TEMPLATES[name] if name else None
    return tok


def target_runs(tok, ids, mask) -> list[str]:
    """The text of each run of consecutive target tokens."""
    runs, current = [], []
    for t, m in zip(ids, mask):
        if m:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize("template", ["llama3", "chatml", "chatml_marked"])
@pytest.mark.parametrize("n_turns", [1, 2, 3])
@pytest.mark.parametrize("system", [True, False], ids=["system", "no_system"])
def test_every_assistant_turn_and_its_end_of_turn_is_target(base_tokenizer, template, n_turns, system):
    tok = with_template(base_tokenizer, template)
    msgs = conversation(n_turns, system)
    ids, mask = tokenize_conversation(tok, msgs, chat=True, train_on="all_assistant", where="t")
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert ids == tok(full, add_special_tokens=False)["input_ids"]  # rendered once, whole
    assert len(mask) == len(ids)
    # token by token: the targets are exactly each reply followed by its end-of-turn, in order ...
    replies = [a for _, a in TURNS[:n_turns]]
    assert target_runs(tok, ids, mask) == [a + END_OF_TURN[template] for a in replies]
    # ... and every other token (system prompt, user turns, headers) is not
    prompt_text = tok.decode([t for t, m in zip(ids, mask) if not m])
    for q, _ in TURNS[:n_turns]:
        assert q in prompt_text
    if system:
        assert SYSTEM["content"] in prompt_text
    for a in replies:
        assert a not in prompt_text

    last_ids, last_mask = tokenize_conversation(tok, msgs, chat=True, train_on="last_assistant", where="t")
    assert last_ids == ids and target_runs(tok, ids, last_mask) == [replies[-1] + END_OF_TURN[template]]


@pytest.mark.parametrize("n_turns", [1, 2, 3])
def test_plain_role_format_without_a_template(base_tokenizer, n_turns):
    tok = with_template(base_tokenizer, None)
    msgs = conversation(n_turns)
    ids, mask = tokenize_conversation(tok, msgs, chat=False, train_on="all_assistant", where="t")
    replies = [a for _, a in TURNS[:n_turns]]
    assert target_runs(tok, ids, mask) == [f" {a}{tok.eos_token}" for a in replies]
    text = tok.decode(ids)
    specials = tok.decode(tok("", add_special_tokens=True)["input_ids"])  # what the tokenizer adds in front (once)
    expected = (
        specials
        + f"{PLAIN_ROLES['system']}: {SYSTEM['content']}"
        + "".join(f"\n\nUser: {q}\n\nAssistant: {a}{tok.eos_token}" for q, a in TURNS[:n_turns])
    )
    assert text == expected
    # evaluation renders the same turns the same way, up to the last reply
    last_start = max(i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1]))
    assert prompt_ids(tok, msgs[:-1], chat=False) == ids[:last_start]


def test_template_that_rewrites_earlier_turns_is_an_error(base_tokenizer):
    tok = with_template(base_tokenizer, "chatml")
    tok.chat_template = "<|im_start|>system\nTurns: {{ messages | length }}<|im_end|>\n" + CHATML
    with pytest.raises(UserError, match=r"task t example 3: the chat template renders turn \d differently"):
        tokenize_conversation(tok, conversation(2), chat=True, train_on="all_assistant", where="task t example 3")


def write_chat_file(path, n=24):
    rows = []
    for i in range(n):
        k = 1 + i % 3
        rows.append({"messages": conversation(k, system=i % 2 == 0)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tokenized_task_keeps_each_turns_mask(base_tokenizer, tmp_path):
    tok = with_template(base_tokenizer, "llama3")
    write_chat_file(tmp_path / "chat.jsonl", n=6)
    data = DataConfig(tasks=[TaskSource(path=str(tmp_path / "chat.jsonl"))], cache_dir=str(tmp_path / "cache"))
    task = tokenize_tasks(load_tasks(data), tok, data, seed=0)[0]
    for i in range(6):
        msgs = conversation(1 + i % 3, system=i % 2 == 0)
        ids, mask = tokenize_conversation(tok, msgs, chat=True, train_on="all_assistant", where="")
        assert task.ids(i).tolist() == ids and task.mask(i).tolist() == mask
        assert task.n_target[i] == sum(mask)
    last = DataConfig(**{**data.__dict__, "train_on": "last_assistant"})
    task_last = tokenize_tasks(load_tasks(last), tok, last, seed=0)[0]
    assert task_last.n_target[2] < task.n_target[2]  # 3 turns: only the last one's tokens


@pytest.mark.slow
def test_two_process_training_on_chat_data_matches_one_process(base_tokenizer, tmp_path):
    """Packed rows of multi-turn conversations (and an alpaca task beside them) give the same per-step
    and per-task losses on 1 and 2 processes: the masks survive packing and sharding."""
    tok = with_template(base_tokenizer, "chatml")
    tok.save_pretrained(tmp_path / "tok")
    (tmp_path / "data").mkdir()
    write_chat_file(tmp_path / "data" / "chat.jsonl", n=48)
    (tmp_path / "data" / "qa.jsonl").write_text(
        "".join(
            json.dumps({"instruction": "Repeat the word.", "input": w, "output": w}) + "\n"
            for w in ("Paris", "Rome", "bye", "capital", "one", "word") * 4
        )
    )
    data = {
        "tasks": [{"path": str(tmp_path / "data" / "*.jsonl")}],
        "max_seq_len": 256,
        "pack_window": 16,
        "cache_dir": str(tmp_path / "cache"),
    }
    model = {"config": {**TINY_MODEL, "vocab_size": len(tok)}, "tokenizer": str(tmp_path / "tok")}
    jobs = {}
    for name, nproc, mb in (("one", 1, 4), ("two", 2, 2)):
        path = write_config(tmp_path, name, data=data, model=model, train={"micro_batch_size": mb})
        jobs[name] = (path, {"nproc": nproc})
    runs = run_concurrently(jobs)
    metrics = {}
    for name, job in runs.items():
        job.wait()
        metrics[name] = read_metrics(job.run_dir)
    one, two = metrics["one"], metrics["two"]
    assert [m["step"] for m in one] == [m["step"] for m in two] == [1, 2, 3, 4]
    assert any("loss/chat" in m for m in one) and any("loss/qa" in m for m in one)
    for a, b in zip(one, two):
        assert np.isfinite(a["loss"]) and b["examples_drawn"] == a["examples_drawn"]
        for key in (k for k in a if k == "loss" or k.startswith("loss/")):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=0), (a["step"], key)


@pytest.mark.parametrize("template", ["chatml", None])
def test_eval_prompt_is_the_conversation_before_the_last_reply(base_tokenizer, tmp_path, template):
    from ift.eval.tasks import render_prompts

    tok = with_template(base_tokenizer, template)
    write_chat_file(tmp_path / "chat.jsonl", n=3)
    data = DataConfig(tasks=[TaskSource(path=str(tmp_path / "chat.jsonl"))], cache_dir=str(tmp_path / "cache"))
    task = load_tasks(data)[0]
    items = render_prompts(task, shots=0, seed=0, tokenizer=tok, chat=template is not None, limit=None)
    for i, item in enumerate(items):
        msgs = conversation(1 + i % 3, system=i % 2 == 0)
        ids, mask = tokenize_conversation(tok, msgs, chat=template is not None, train_on="all_assistant", where="")
        last_start = max(j for j in range(len(mask)) if mask[j] and not mask[j - 1])
        assert item["prompt_ids"] == ids[:last_start]  # exactly what training saw before the reply
        assert item["references"] == [msgs[-1]["content"]]
