"""Data preparation ahead of training (`ift prepare`) and the check that tells a run whether it
must prepare first (a cold cache).

Loading (files -> one canonical Arrow table per source) and tokenization (one cached map per
table) land in `data.cache_dir`; a run whose cache is warm memory-maps both and starts at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from ift import distributed, faults
from ift.config import Config
from ift.errors import UserError
from ift.rundir import RunDir

log = logging.getLogger(__name__)

# Measured on the 2-core CPU reference machine (bench/scale_bench.py): alpaca-style examples of
# 10-60-word instructions, one process. Only for the estimate printed before a cold start.
EXAMPLES_PER_S = 7000


def _folder_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def estimate(examples: int, num_proc: int) -> str:
    seconds = examples / (EXAMPLES_PER_S * max(num_proc, 1))
    took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    return f"about {took} at ~{EXAMPLES_PER_S:,} examples/s per process x data.num_proc={num_proc}"


def cold_cache_note(tasks, tokenizer, cfg: Config, seed: int) -> str | None:
    """A line saying the tokenization cache is cold (and what preparing will cost), else None."""
    from ift.data.sources import cache_dir
    from ift.data.tokenize import is_cached

    if is_cached(tasks, tokenizer, cfg.data, seed):
        return None
    examples = sum(len(t) for t in tasks)
    return (
        f"data cache cold: {examples:,} examples of {len(tasks)} task(s) to tokenize into {cache_dir(cfg.data)}, "
        f"{estimate(examples, cfg.data.num_proc)}; `ift prepare CONFIG` does this ahead on a CPU machine"
    )


def submit_note(cfg: Config) -> str | None:
    """For `ift submit` on a login node: is the run's data cache warm? Loads only what is cheap."""
    from ift.data.sources import load_tasks
    from ift.model import load_tokenizer

    saved = os.path.join(RunDir(cfg.run_dir).tokenizer, "tokenizer_config.json")
    if not (cfg.model.tokenizer or cfg.model.name_or_path or os.path.isfile(saved)):
        return (
            "data cache: an inline model's tokenizer is trained from the data at the start; "
            "`ift prepare CONFIG` trains and saves it and fills the cache ahead"
        )
    started = time.perf_counter()
    tasks = load_tasks(cfg.data, cfg.run.seed)  # from the source cache when warm: milliseconds
    loaded = time.perf_counter() - started
    note = cold_cache_note(tasks, load_tokenizer(cfg.model, cfg.run_dir, tasks), cfg, cfg.run.seed)
    if note and loaded > 5:
        note += f" (loading the files took {loaded:.0f} s here)"
    return note


def prepare_data(cfg: Config):
    """Tasks, tokenizer, tokenized tasks and rates. Rank 0 trains/saves the tokenizer and local
    rank 0 fills the data caches first; the other ranks then read them."""
    from ift.data.mixture import task_rates
    from ift.data.sources import load_tasks
    from ift.data.tokenize import tokenize_tasks
    from ift.model import load_tokenizer

    with distributed.main_process_first(local=True):  # local rank 0 fills the source cache; the others memory-map it
        tasks = load_tasks(cfg.data, cfg.run.seed)
    if only := cfg.data.only_task:
        tasks = [t for t in tasks if t.name == only]
        if not tasks:
            raise UserError(f"data.only_task (--only-task): no task named '{only}' in data.tasks")
    rank, tok_dir = distributed.rank(), RunDir(cfg.run_dir).tokenizer
    # rank 0 builds (or trains) the tokenizer; everyone else loads what it saved
    with distributed.main_process_first():
        faults.maybe_stall("tokenizer", rank)  # tests only
        tokenizer = load_tokenizer(cfg.model, cfg.run_dir, tasks)
        if rank == 0 and not os.path.isdir(tok_dir):
            tokenizer.save_pretrained(tok_dir)
    if rank == 0 and (note := cold_cache_note(tasks, tokenizer, cfg, cfg.run.seed)):
        log.info(note)
    with distributed.main_process_first(local=True):
        tokenized = tokenize_tasks(tasks, tokenizer, cfg.data, cfg.run.seed)
    rates = task_rates(cfg.data.mixture, {t.name: len(t) for t in tokenized})
    return tasks, tokenizer, tokenized, rates


def mixture_report(tasks: list, tokenized: list, rates: dict) -> dict:
    """The run's mixture.json: per task its examples, rate, skipped records and tokenization counts."""
    return {
        "tasks": {
            x.name: {"examples": len(x), "rate": rates[x.name], "skipped": dict(src.skipped), **dict(x.counts)}
            for x, src in zip(tokenized, tasks)
        }
    }


def mixture_definition(cfg: Config, rates: dict) -> dict:
    """What fixes the data stream: tasks and rates, rendering and packing settings (not where the
    data or the cache live)."""
    d = cfg.data
    definition: dict[str, Any] = {
        "rates": rates,
        "template": d.template,
        "few_shot_k": d.few_shot_k,
        "chat_template": d.chat_template,
        "max_seq_len": d.max_seq_len,
        "packing": d.packing,
        "pack_window": d.pack_window,
        "truncation": d.truncation,
        "train_on_prompt": d.train_on_prompt,
        "seed": cfg.run.seed,
    }
    if d.train_on != "all_assistant":  # only when set: checkpoints from before the key still match
        definition["train_on"] = d.train_on
    if d.mixture.adapt.rule:  # likewise
        definition["adapt"] = dataclasses.asdict(d.mixture.adapt)
    return definition


def prepare(cfg: Config) -> dict:
    """Load, render and tokenize the run's training data (and eval.tasks for the held-out loss)
    into data.cache_dir, as the run itself would; the tokenizer of an inline model is trained and
    saved in the run directory. Returns what was prepared."""
    started = time.perf_counter()
    tasks, tokenizer, tokenized, _ = prepare_data(cfg)
    if cfg.eval.every and cfg.eval.tasks:
        from ift.data.heldout import heldout_batches

        heldout_batches(cfg, tokenizer)
    from ift.data.sources import cache_dir

    folder = cache_dir(cfg.data)
    return {
        "tasks": len(tasks),
        "examples": sum(len(t) for t in tokenized),
        "tokens": int(sum(int(t.lengths.sum()) for t in tokenized)),
        "cache_dir": folder,
        "cache_bytes": _folder_bytes(folder),
        "seconds": time.perf_counter() - started,
    }
