"""Loss on a small held-out sample during training (`eval.every`), per task.

Each rank scores its share of the batches (batch i on rank i mod world) and the sums are
all-reduced. Under ZeRO-3 a forward pass gathers parameters collectively, so every rank runs the
same number of forwards: a rank whose share is one short scores a batch again and counts nothing."""
from __future__ import annotations

import torch

from ift.config import Config
from ift.data.packing import collate
from ift.eval.tasks import EVAL_SEED_OFFSET


def heldout_batches(cfg: Config, tokenizer, per_task: int = 32) -> tuple[list[str], list[dict]]:
    """(task names, padded batches) of the first `eval.limit` (or `per_task`) examples of eval.tasks."""
    from ift.data.sources import load_tasks
    from ift.data.tokenize import tokenize_tasks

    tasks = load_tasks(cfg.data, cfg.run.seed + EVAL_SEED_OFFSET, sources=cfg.eval.tasks, section="eval.tasks")
    tokenized = tokenize_tasks(tasks, tokenizer, cfg.data, cfg.run.seed + EVAL_SEED_OFFSET)
    n = cfg.eval.limit or per_task
    rows = [[(task.ids(e), task.mask(e), t)] for t, task in enumerate(tokenized) for e in range(min(n, len(task)))]
    size = cfg.eval.batch_size
    batches = [collate(rows[i:i + size], None, tokenizer.pad_token_id, cfg.data.train_on_prompt)
               for i in range(0, len(rows), size)]
    return [t.name for t in tokenized], batches


@torch.no_grad()
def heldout_loss(engine, names: list[str], batches: list[dict]) -> dict[str, float]:
    """Token-mean loss over all batches (`eval/loss`) and per task (`eval/loss/<task>`)."""
    from ift.distributed import all_reduce, collective_device, rank, world_size
    from ift.engine import model_inputs

    sums = torch.zeros(len(names), dtype=torch.float64, device=engine.device)
    counts = torch.zeros_like(sums)
    was_training = engine.module.training
    engine.module.eval()
    world = world_size()
    mine = batches[rank()::world]
    for i in range(-(-len(batches) // world)):  # the most batches any rank has
        inputs, task = model_inputs(mine[i] if i < len(mine) else batches[0], engine.device)
        losses = engine(**inputs).double()  # per target token
        if i < len(mine):
            sums.index_add_(0, task, losses)
            counts.index_add_(0, task, torch.ones_like(losses))
    engine.module.train(was_training)
    both = all_reduce(torch.cat([sums, counts]).to(collective_device(engine.device))).tolist()
    sums, counts = both[:len(names)], both[len(names):]
    out = {"eval/loss": sum(sums) / max(sum(counts), 1)}
    out.update({f"eval/loss/{n}": sums[i] / counts[i] for i, n in enumerate(names) if counts[i] > 0})
    return out
