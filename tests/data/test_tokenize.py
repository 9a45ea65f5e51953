"""Tokenization: loss-mask boundary, truncation policies, the shared-prefix fast path, the cache."""

from __future__ import annotations

import os

import pytest

from ift.config import DataConfig, TaskSource
from ift.data import templates
from ift.data.sources import load_tasks
from ift.data.tokenize import _encode_with_shared_prefix, tokenize_tasks
from ift.errors import UserError
from ift.model import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(DataConfig(tasks=[TaskSource(builtin="train", n=40)]), seed=0)


@pytest.fixture(scope="module")
def tok(tasks):
    from ift.model import corpus_texts

    return train_bpe_tokenizer(corpus_texts(tasks), 400)


def test_prompt_and_target_boundary(tmp_path, tasks, tok):
    data = DataConfig(cache_dir=str(tmp_path), template="zero_shot")
    tt = tokenize_tasks(tasks[:2], tok, data, seed=0)[0]
    ex = tasks[0].dataset[0]
    prompt, target = templates.render(ex, "zero_shot")
    ids = list(tt.ids(0))
    assert ids == tok(prompt)["input_ids"] + tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert list(tt.mask(0)).index(1) == len(tok(prompt)["input_ids"]) and tt.lengths[0] == len(ids)


def test_shared_prefix_encoding_equals_full_encoding(tasks, tok):
    for task in tasks:
        ds = task.dataset.select(range(10))
        prompts = [templates.render(ds[i], "few_shot", [ds[(i + 1) % 10]])[0] for i in range(10)]
        joined = _encode_with_shared_prefix(tok, prompts, [x.strip() for x in ds["instruction"]])
        assert joined == tok(prompts)["input_ids"]


def test_shared_prefix_falls_back_when_the_join_differs():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # SentencePiece-style: every encoded piece of text starts with "▁", so encoding the rest of a
    # prompt on its own adds a token the full prompt does not have; the fast path must refuse.
    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    raw.train_from_iterator(
        ["Sort the numbers. Input: 3 1 2 Output: 1 2 3"] * 3,
        trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"]),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    prompts = ["Sort the numbers.\n\nInput: 3 1 2\nOutput:"] * 2
    head, rest = "Sort the numbers.", "\n\nInput: 3 1 2\nOutput:"
    assert tok(prompts[0])["input_ids"] != tok(head)["input_ids"] + tok(rest, add_special_tokens=False)["input_ids"]
    assert _encode_with_shared_prefix(tok, prompts, [head, head]) is None


def test_truncation_policies(tmp_path, tasks, tok):
    few = dict(cache_dir=str(tmp_path), template="few_shot", few_shot_k=3)
    full = tokenize_tasks(tasks[:1], tok, DataConfig(**few, max_seq_len=512), seed=0)[0]
    limit = int(sorted(full.lengths)[len(full) // 2])  # the median: about half the examples are too long
    short = dict(few, max_seq_len=limit)
    dropped = tokenize_tasks(tasks[:1], tok, DataConfig(**short, truncation="drop"), seed=0)[0]
    cut = tokenize_tasks(tasks[:1], tok, DataConfig(**short, truncation="truncate_prompt_left"), seed=0)[0]
    too_long = int((full.lengths > limit).sum())
    assert too_long > 0
    assert dropped.counts["dropped"] == too_long and len(dropped) == len(full) - too_long
    assert cut.counts["truncated"] == too_long and len(cut) == len(full) and max(cut.lengths) <= limit
    # Left truncation keeps the end of the prompt and the whole target.
    i = int(next(i for i, n in enumerate(full.lengths) if n > limit))
    target_len = full.lengths[i] - list(full.mask(i)).index(1)
    assert list(cut.ids(i)) == list(full.ids(i)[-limit:]) and cut.lengths[i] - list(cut.mask(i)).index(1) == target_len
    with pytest.raises(UserError, match=rf"tokens > data.max_seq_len={limit}"):
        tokenize_tasks(tasks[:1], tok, DataConfig(**short, truncation="error"), seed=0)


def test_second_run_reads_the_cache(tmp_path, tasks, tok):
    data = DataConfig(cache_dir=str(tmp_path))
    first = tokenize_tasks(tasks[:3], tok, data, seed=0)
    files = sorted(os.listdir(tmp_path / "tokenized"))
    stamps = {f: os.stat(tmp_path / "tokenized" / f).st_mtime_ns for f in files}
    second = tokenize_tasks(tasks[:3], tok, data, seed=0)
    assert sorted(os.listdir(tmp_path / "tokenized")) == files
    assert {f: os.stat(tmp_path / "tokenized" / f).st_mtime_ns for f in files} == stamps
    assert all((a.flat_ids == b.flat_ids).all() for a, b in zip(first, second))
    other_seed = tokenize_tasks(tasks[:3], tok, data, seed=1)
    assert len(os.listdir(tmp_path / "tokenized")) > len(files)
    assert other_seed[0].name == first[0].name
