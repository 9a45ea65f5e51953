"""Data preparation ahead of training (`ift prepare`) and the check that tells a run whether it
must prepare first (a cold cache).

Loading (files -> one canonical Arrow table per source) and tokenization (one cached map per
table) land in `data.cache_dir`; a run whose cache is warm memory-maps both and starts at once.
"""
from __future__ import annotations

import logging
import os
import time

from ift.config import Config

log = logging.getLogger("ift.prepare")

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
    from ift.data.tokenize import cache_dir, is_cached

    if is_cached(tasks, tokenizer, cfg.data, seed):
        return None
    examples = sum(len(t) for t in tasks)
    return (f"data cache cold: {examples:,} examples of {len(tasks)} task(s) to tokenize into {cache_dir(cfg.data)}, "
            f"{estimate(examples, cfg.data.num_proc)}; `ift prepare CONFIG` does this ahead on a CPU machine")


def submit_note(cfg: Config) -> str | None:
    """For `ift submit` on a login node: is the run's data cache warm? Loads only what is cheap."""
    from ift.data.sources import load_tasks
    from ift.model import load_tokenizer

    saved = os.path.join(cfg.run_dir, "tokenizer", "tokenizer_config.json")
    if not (cfg.model.tokenizer or cfg.model.name_or_path or os.path.isfile(saved)):
        return ("data cache: an inline model's tokenizer is trained from the data at the start; "
                "`ift prepare CONFIG` trains and saves it and fills the cache ahead")
    started = time.perf_counter()
    tasks = load_tasks(cfg.data, cfg.run.seed)  # from the source cache when warm: milliseconds
    loaded = time.perf_counter() - started
    note = cold_cache_note(tasks, load_tokenizer(cfg.model, cfg.run_dir, tasks), cfg, cfg.run.seed)
    if note and loaded > 5:
        note += f" (loading the files took {loaded:.0f} s here)"
    return note


def prepare(cfg: Config) -> dict:
    """Load, render and tokenize the run's training data (and eval.tasks for the held-out loss)
    into data.cache_dir, as the run itself would; the tokenizer of an inline model is trained and
    saved in the run directory. Returns what was prepared."""
    from ift.train import prepare_data

    started = time.perf_counter()
    tasks, tokenizer, tokenized, _ = prepare_data(cfg, rank=0, local_rank=0)
    if cfg.eval.every and cfg.eval.tasks:
        from ift.eval.heldout_loss import heldout_batches

        heldout_batches(cfg, tokenizer)
    from ift.data.tokenize import cache_dir

    folder = cache_dir(cfg.data)
    return {"tasks": len(tasks), "examples": sum(len(t) for t in tokenized),
            "tokens": int(sum(int(t.lengths.sum()) for t in tokenized)), "cache_dir": folder,
            "cache_bytes": _folder_bytes(folder), "seconds": time.perf_counter() - started}
