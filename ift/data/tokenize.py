"""Templates + tokenizer -> token ids with a prompt/target boundary, cached by `datasets.map`.

Each task becomes a Dataset with `input_ids` (prompt + target + EOS), `n_prompt` (tokens the loss
ignores unless data.train_on_prompt) and `length`. The cache key is explicit: the source data's
fingerprint, the tokenizer, the template settings and the seed, so a second run with the same
inputs tokenizes nothing.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass, field

import datasets
import numpy as np

from ift.config import DataConfig, UserError
from ift.data import templates
from ift.data.sources import Task

CACHE_VERSION = "1"  # bump when the rendering or tokenization logic changes
OK, TRUNCATED, DROPPED = 0, 1, 2


@dataclass
class TokenizedTask:
    name: str
    dataset: datasets.Dataset  # input_ids, n_prompt, length (dropped examples removed)
    lengths: np.ndarray  # tokens per example
    n_prompt: np.ndarray  # prompt tokens per example
    counts: collections.Counter = field(default_factory=collections.Counter)  # truncated / dropped
    # All token ids end to end with per-example offsets: a zero-copy view of the Arrow column,
    # so fetching an example is a slice, not a row lookup through `datasets`.
    flat_ids: np.ndarray = None
    offsets: np.ndarray = None

    def __len__(self) -> int:
        return len(self.lengths)

    def ids(self, i: int) -> np.ndarray:
        return self.flat_ids[self.offsets[i]:self.offsets[i + 1]]


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    text += repr(getattr(tokenizer, "chat_template", None)) + repr(tokenizer.eos_token_id)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(data: DataConfig) -> str:
    return os.path.expanduser(data.cache_dir or os.environ.get("IFT_CACHE", "~/.cache/ift"))


def _encode_with_shared_prefix(tokenizer, prompts: list[str], prefixes: list[str]) -> list[list[int]] | None:
    """Encode each distinct instruction once and the rest of every prompt in one batch (most of a
    prompt's tokens are its task's instruction). Only used when, on this batch's first prompt, the
    joined encoding equals the full one (true for byte-level BPE, whose pre-tokenizer splits at the
    blank line); otherwise None, and the caller encodes prompts whole."""
    if not all(p.startswith(x) for p, x in zip(prompts, prefixes)):
        return None
    distinct = sorted(set(prefixes))
    head = dict(zip(distinct, tokenizer(distinct, add_special_tokens=True)["input_ids"]))
    rest = tokenizer([p[len(x):] for p, x in zip(prompts, prefixes)], add_special_tokens=False)["input_ids"]
    joined = [head[x] + r for x, r in zip(prefixes, rest)]
    if joined[0] != tokenizer(prompts[0], add_special_tokens=True)["input_ids"]:
        return None
    return joined


def _render_and_tokenize(batch, indices, *, task_ds, tokenizer, data: DataConfig, seed: int, task: str,
                         chat: bool, max_len: int):
    prompts, targets = [], []
    for j, i in enumerate(indices):
        example = {k: batch[k][j] for k in ("instruction", "input", "output", "rationale")}
        name = templates.choose_template(data.template, seed, task, i)
        exemplars = []
        if name == "few_shot":
            exemplars = [task_ds[k] for k in templates.choose_exemplars(len(task_ds), i, data.few_shot_k, seed, task)]
        prompt, target = templates.render(example, name, exemplars)
        if chat:
            prompt, target = templates.render_chat(tokenizer, prompt, target)
        prompts.append(prompt)
        targets.append(target)
    # A chat template writes its own BOS; a plain prompt gets the tokenizer's special tokens.
    p_ids = None if chat else _encode_with_shared_prefix(tokenizer, prompts, [s.strip() for s in batch["instruction"]])
    if p_ids is None:
        p_ids = tokenizer(prompts, add_special_tokens=not chat)["input_ids"]
    t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    out = {"input_ids": [], "n_prompt": [], "length": [], "status": []}
    for i, p, t in zip(indices, p_ids, t_ids):
        t = t + [tokenizer.eos_token_id]
        status = OK
        if len(p) + len(t) > max_len:
            if data.truncation == "error":
                raise UserError(f"task {task} example {i}: {len(p) + len(t)} tokens > data.max_seq_len={max_len} "
                                "(set data.truncation to drop or truncate_prompt_left)")
            keep = max_len - len(t)
            if data.truncation == "truncate_prompt_left" and keep >= 1:
                p, status = p[-keep:], TRUNCATED
            else:
                p, t, status = [], [], DROPPED
        out["input_ids"].append(np.asarray(p + t, dtype=np.int32))
        out["n_prompt"].append(len(p))
        out["length"].append(len(p) + len(t))
        out["status"].append(status)
    return out


def _column(ds: datasets.Dataset, name: str):
    """A whole column as one Arrow array (reading ds[name] walks it row by row)."""
    return ds.with_format("arrow", columns=[name])[:][name].combine_chunks()


def tokenize_task(task: Task, tokenizer, data: DataConfig, seed: int, tok_fingerprint: str | None = None) -> TokenizedTask:
    chat = templates.uses_chat_template(tokenizer, data.chat_template)
    settings = {
        "v": CACHE_VERSION, "data": task.dataset._fingerprint, "tok": tok_fingerprint or tokenizer_fingerprint(tokenizer),
        "template": data.template, "k": data.few_shot_k, "chat": chat, "seed": seed, "task": task.name,
        "max_len": data.max_seq_len, "truncation": data.truncation,
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    folder = os.path.join(cache_dir(data), "tokenized")
    os.makedirs(folder, exist_ok=True)
    ds = task.dataset.map(
        _render_and_tokenize, batched=True, batch_size=256, with_indices=True,
        remove_columns=task.dataset.column_names, num_proc=data.num_proc if data.num_proc > 1 else None,
        fn_kwargs=dict(task_ds=task.dataset, tokenizer=tokenizer, data=data, seed=seed, task=task.name,
                       chat=chat, max_len=data.max_seq_len),
        new_fingerprint=fingerprint, cache_file_name=os.path.join(folder, f"{fingerprint}.arrow"),
        load_from_cache_file=True, desc=f"tokenize {task.name}",
    )
    status = _column(ds, "status").to_numpy()
    counts = collections.Counter({"truncated": int((status == TRUNCATED).sum()), "dropped": int((status == DROPPED).sum())})
    if counts["dropped"]:
        ds = ds.filter(lambda s: [x != DROPPED for x in s], input_columns="status", batched=True,
                       cache_file_name=os.path.join(folder, f"{fingerprint}.kept.arrow"))
    if len(ds) == 0:
        raise UserError(f"task {task.name}: every example is longer than data.max_seq_len={data.max_seq_len}")
    ids = _column(ds, "input_ids")
    return TokenizedTask(task.name, ds, _column(ds, "length").to_numpy().astype(np.int64),
                         _column(ds, "n_prompt").to_numpy().astype(np.int64), counts,
                         flat_ids=ids.values.to_numpy(zero_copy_only=False), offsets=ids.offsets.to_numpy())


def tokenize_tasks(tasks: list[Task], tokenizer, data: DataConfig, seed: int) -> list[TokenizedTask]:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; set one (model.tokenizer) so targets can end")
    fingerprint = tokenizer_fingerprint(tokenizer)
    return [tokenize_task(t, tokenizer, data, seed, fingerprint) for t in tasks]
