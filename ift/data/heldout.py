"""The held-out sample a run scores its loss on during training (`eval.every`, and the adaptive
mixture's `signal: heldout`): the first examples of eval.tasks as padded batches. The loss itself
is ift.step_metrics.heldout_loss."""

from __future__ import annotations

from ift.config import Config
from ift.data.packing import collate

EVAL_SEED_OFFSET = 1  # built-in tasks are generated from the seed: eval instances differ from training's


def heldout_batches(cfg: Config, tokenizer, per_task: int = 32) -> tuple[list[str], list[dict]]:
    """(task names, padded batches) of the first `eval.limit` (or `per_task`) examples of eval.tasks.
    Under several ranks, local rank 0 fills the data caches first and the others then read them."""
    from ift.data.sources import load_tasks
    from ift.data.tokenize import tokenize_tasks
    from ift.distributed import main_process_first

    with main_process_first(local=True):
        tasks = load_tasks(cfg.data, cfg.run.seed + EVAL_SEED_OFFSET, sources=cfg.eval.tasks, section="eval.tasks")
        tokenized = tokenize_tasks(tasks, tokenizer, cfg.data, cfg.run.seed + EVAL_SEED_OFFSET)
    n = cfg.eval.limit or per_task
    rows = [[(task.ids(e), task.mask(e), t)] for t, task in enumerate(tokenized) for e in range(min(n, len(task)))]
    size = cfg.eval.batch_size
    batches = [
        collate(rows[i : i + size], None, tokenizer.pad_token_id, cfg.data.train_on_prompt)
        for i in range(0, len(rows), size)
    ]
    return [t.name for t in tokenized], batches
