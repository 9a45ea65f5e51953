"""Templates + tokenizer -> token ids with a prompt/target boundary, cached by `datasets.map`.

Each task becomes a Dataset with `input_ids` (prompt + target + EOS), `target_mask` (1 where the
token is a target; 0 for prompt tokens, which the loss ignores unless data.train_on_prompt),
`length` and `status`. A conversation (ift.data.chat) has a target span per assistant turn; any
other example has one, after its prompt. The cache key is explicit: the source data's
fingerprint, the tokenizer, the template settings and the seed, so a second run with the same
inputs tokenizes nothing.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import os
from dataclasses import dataclass, field

import datasets
import numpy as np

from ift.config import DataConfig
from ift.data import chat as chat_format
from ift.data import templates
from ift.data.sources import Task, cache_dir
from ift.errors import UserError
from ift.hashing import fingerprint

CACHE_VERSION = "3"  # bump when the rendering or tokenization logic changes
OK, TRUNCATED, DROPPED = 0, 1, 2


@dataclass
class TokenizedTask:
    name: str
    lengths: np.ndarray  # tokens per example (dropped examples removed)
    n_target: np.ndarray  # target tokens per example (the loss's count unless data.train_on_prompt)
    counts: collections.Counter = field(default_factory=collections.Counter)  # truncated / dropped
    # Token ids and target flags of the whole tokenized table end to end (zero-copy views of its
    # Arrow columns, shared by its tasks) and where each example of this task starts and ends:
    # fetching an example is a slice, not a row lookup through `datasets`.
    flat_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    flat_mask: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))
    starts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ends: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.lengths)

    def ids(self, i: int) -> np.ndarray:
        return self.flat_ids[self.starts[i] : self.ends[i]]

    def mask(self, i: int) -> np.ndarray:
        return self.flat_mask[self.starts[i] : self.ends[i]]


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    text += repr(getattr(tokenizer, "chat_template", None)) + repr(tokenizer.eos_token_id)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_with_shared_prefix(tokenizer, prompts: list[str], prefixes: list[str]) -> list[list[int]] | None:
    """Encode each distinct instruction once and the rest of every prompt in one batch (most of a
    prompt's tokens are its task's instruction). Only used when, on this batch's first prompt, the
    joined encoding equals the full one (true for byte-level BPE, whose pre-tokenizer splits at the
    blank line); otherwise None, and the caller encodes prompts whole."""
    if not all(p.startswith(x) for p, x in zip(prompts, prefixes)):
        return None
    distinct = sorted(set(prefixes))
    head = dict(zip(distinct, tokenizer(distinct, add_special_tokens=True)["input_ids"]))
    rest = tokenizer([p[len(x) :] for p, x in zip(prompts, prefixes)], add_special_tokens=False)["input_ids"]
    joined = [head[x] + r for x, r in zip(prefixes, rest)]
    if joined[0] != tokenizer(prompts[0], add_special_tokens=True)["input_ids"]:
        return None
    return joined


def _truncate(ids: list[int], mask: list[int], max_len: int, truncation: str, conversation: bool, where: str):
    """(ids, mask, status) within max_len. truncate_prompt_left: a prompt loses tokens from the left
    (an example that would lose a target token is dropped); a conversation keeps its first max_len
    tokens, later turns cut (as TRL and open-instruct do), if a target token is left."""
    if len(ids) <= max_len:
        return ids, mask, OK
    if truncation == "error":
        raise UserError(
            f"{where}: {len(ids)} tokens > data.max_seq_len={max_len} "
            "(set data.truncation to drop or truncate_prompt_left)"
        )
    if truncation == "truncate_prompt_left":
        cut = len(ids) - max_len
        if conversation and any(mask[1:max_len]):
            return ids[:max_len], mask[:max_len], TRUNCATED
        if not conversation and not any(mask[: cut + 1]):  # a prompt token stays to predict the first target
            return ids[cut:], mask[cut:], TRUNCATED
    return [], [], DROPPED


def _render_and_tokenize(
    batch, indices, *, table, spans: dict, tokenizer, data: DataConfig, seed: int, chat: bool, max_len: int
):
    """Rows of `table` (one or many tasks; spans: task -> (first row, rows)) to token ids and masks.
    Every choice depends on (seed, task, index within the task), as if each task were alone."""
    out: dict[str, list] = {"input_ids": [], "target_mask": [], "length": [], "status": []}
    conversations = batch["messages"]
    within = [g - spans[task][0] for g, task in zip(indices, batch["task"])]
    plain = [j for j, turns in enumerate(conversations) if not turns]
    prompts, targets = [], []
    for j in plain:
        task, i = batch["task"][j], within[j]
        start, size = spans[task]
        example = {k: batch[k][j] for k in ("instruction", "input", "output", "rationale")}
        name = templates.choose_template(data.template, seed, task, i)
        exemplars = []
        if name == "few_shot":
            exemplars = [table[start + k] for k in templates.choose_exemplars(size, i, data.few_shot_k, seed, task)]
        prompt, target = templates.render(example, name, exemplars)
        if chat:
            prompt, target = templates.render_chat(tokenizer, prompt, target)
        prompts.append(prompt)
        targets.append(target)
    encoded = {}
    if plain:
        # A chat template writes its own BOS; a plain prompt gets the tokenizer's special tokens.
        instructions = [batch["instruction"][j].strip() for j in plain]
        p_ids = None if chat else _encode_with_shared_prefix(tokenizer, prompts, instructions)
        if p_ids is None:
            p_ids = tokenizer(prompts, add_special_tokens=not chat)["input_ids"]
        t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
        for j, p, t in zip(plain, p_ids, t_ids):
            t = t + [tokenizer.eos_token_id]
            encoded[j] = (p + t, [0] * len(p) + [1] * len(t))
    for j, i in enumerate(within):
        where = f"task {batch['task'][j]} example {i}"
        if j not in encoded:  # a conversation: every (or the last) assistant turn is a target
            encoded[j] = chat_format.tokenize_conversation(
                tokenizer, conversations[j], chat=chat, train_on=data.train_on, where=where
            )
        ids, mask, status = _truncate(*encoded[j], max_len, data.truncation, bool(conversations[j]), where)
        out["input_ids"].append(np.asarray(ids, dtype=np.int32))
        out["target_mask"].append(np.asarray(mask, dtype=np.int8))
        out["length"].append(len(ids))
        out["status"].append(status)
    return out


def _column(ds: datasets.Dataset, name: str):
    """A whole column as one Arrow array (reading ds[name] walks it row by row)."""
    return ds.with_format("arrow", columns=[name])[:][name].combine_chunks()


def _table_fingerprint(
    table: datasets.Dataset, spans: dict, chat: bool, data: DataConfig, seed: int, tok_fingerprint: str
) -> str:
    settings = {
        "v": CACHE_VERSION,
        "data": table._fingerprint,
        "spans": spans,
        "tok": tok_fingerprint,
        "template": data.template,
        "k": data.few_shot_k,
        "chat": chat,
        "seed": seed,
        "train_on": data.train_on,
        "max_len": data.max_seq_len,
        "truncation": data.truncation,
    }
    return fingerprint(settings)


def _tokenize_table(
    table: datasets.Dataset, spans: dict, tokenizer, data: DataConfig, seed: int, tok_fingerprint: str
) -> dict:
    """One cached `datasets.map` over a table of tasks; its columns as numpy arrays."""
    chat = templates.uses_chat_template(tokenizer, data.chat_template)
    fingerprint = _table_fingerprint(table, spans, chat, data, seed, tok_fingerprint)
    folder = os.path.join(cache_dir(data), "tokenized")
    os.makedirs(folder, exist_ok=True)
    ds = table.map(
        _render_and_tokenize,
        batched=True,
        batch_size=256,
        with_indices=True,
        remove_columns=table.column_names,
        num_proc=data.num_proc if data.num_proc > 1 else None,
        fn_kwargs=dict(
            table=table, spans=spans, tokenizer=tokenizer, data=data, seed=seed, chat=chat, max_len=data.max_seq_len
        ),
        new_fingerprint=fingerprint,
        cache_file_name=os.path.join(folder, f"{fingerprint}.arrow"),
        load_from_cache_file=True,
        desc=f"tokenize {len(spans)} task(s)",
    )
    ids, mask = _column(ds, "input_ids"), _column(ds, "target_mask")
    flat_mask = mask.values.to_numpy(zero_copy_only=False)
    offsets = ids.offsets.to_numpy().astype(np.int64)
    nonempty = offsets[:-1] < offsets[1:]
    # Targets per example, not counting a first token (nothing predicts it); dropped rows are empty.
    n_target = np.zeros(len(ds), dtype=np.int64)
    if nonempty.any():
        firsts = offsets[:-1][nonempty]
        n_target[nonempty] = np.add.reduceat(flat_mask.astype(np.int64), firsts) - flat_mask[firsts]
    return {
        "status": _column(ds, "status").to_numpy(),
        "lengths": _column(ds, "length").to_numpy().astype(np.int64),
        "n_target": n_target,
        "flat_ids": ids.values.to_numpy(zero_copy_only=False),
        "flat_mask": flat_mask,
        "offsets": offsets,
    }


def _task_view(name: str, arrays: dict, start: int, stop: int, max_len: int) -> TokenizedTask:
    status = arrays["status"][start:stop]
    keep = status != DROPPED
    if not keep.any():
        raise UserError(f"task {name}: every example is longer than data.max_seq_len={max_len}")
    counts = collections.Counter({"truncated": int((status == TRUNCATED).sum()), "dropped": int((~keep).sum())})
    offsets = arrays["offsets"]
    return TokenizedTask(
        name,
        arrays["lengths"][start:stop][keep],
        arrays["n_target"][start:stop][keep],
        counts,
        flat_ids=arrays["flat_ids"],
        flat_mask=arrays["flat_mask"],
        starts=offsets[start:stop][keep],
        ends=offsets[start + 1 : stop + 1][keep],
    )


def _plan(tasks: list[Task]) -> list[tuple[datasets.Dataset, dict, list[Task]]]:
    """(table, its tasks' spans, the tasks wanted from it) per tokenization map. Tasks that are
    most of one source's table (ift.data.sources) share one map over it and one cache file: the
    cost is per example, not per task. Others (one task picked out of many) get a map each."""
    by_parent: dict[int, list[Task]] = {}
    for t in tasks:
        by_parent.setdefault(id(t.parent) if t.parent is not None else id(t), []).append(t)
    plan: list = []
    for group in by_parent.values():
        parent = group[0].parent
        if parent is not None and 2 * sum(len(t) for t in group) >= len(parent):
            plan.append((parent, group[0].parent_spans, group))
        else:
            plan += [(t.dataset, {t.name: (0, len(t))}, [t]) for t in group]
    return plan


def is_cached(tasks: list[Task], tokenizer, data: DataConfig, seed: int) -> bool:
    """Whether tokenize_tasks would find every map in the cache (a warm start)."""
    chat = templates.uses_chat_template(tokenizer, data.chat_template)
    fp = tokenizer_fingerprint(tokenizer)
    folder = os.path.join(cache_dir(data), "tokenized")
    # with data.num_proc > 1 the cache file is written in shards named <fingerprint>_0000x_of_0000n.arrow
    return all(
        glob.glob(os.path.join(folder, f"{_table_fingerprint(table, spans, chat, data, seed, fp)}*.arrow"))
        for table, spans, _ in _plan(tasks)
    )


def tokenize_tasks(tasks: list[Task], tokenizer, data: DataConfig, seed: int) -> list[TokenizedTask]:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; set one (model.tokenizer) so targets can end")
    fingerprint = tokenizer_fingerprint(tokenizer)
    views = {}
    for table, spans, wanted in _plan(tasks):
        arrays = _tokenize_table(table, spans, tokenizer, data, seed, fingerprint)
        for t in wanted:
            start = spans[t.name][0]
            views[t.name] = _task_view(t.name, arrays, start, start + len(t), data.max_seq_len)
    return [views[t.name] for t in tasks]
