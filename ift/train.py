"""The training loop. Read this file first: everything it calls lives in its own module
(data: ift.data, model: ift.model, parallelism: ift.engine, checkpoints: ift.checkpoint,
tracking: ift.tracking)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import signal
import time

import torch

from ift import checkpoint
from ift.config import Config, UserError, save_config, to_dict
from ift.engine import deepspeed_config, init_distributed, initialize, setup_environment

log = logging.getLogger("ift.train")

# Set by a signal (Slurm's pre-timeout USR2, preemption's TERM) on whichever rank receives it;
# all ranks agree on it at the next step boundary, then save together.
STOP = {"requested": False, "why": ""}


def request_stop(why: str) -> None:
    STOP.update(requested=True, why=why)


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
    return t


def prepare_data(cfg: Config, rank: int, local_rank: int, only_task: str | None = None):
    """Tasks, tokenizer, tokenized tasks and rates. Rank 0 trains/saves the tokenizer and local
    rank 0 fills the tokenization cache first; the other ranks then read them."""
    from ift.data.mixture import task_rates
    from ift.data.sources import load_tasks
    from ift.data.tokenize import tokenize_tasks
    from ift.model import load_tokenizer

    tasks = load_tasks(cfg.data, cfg.run.seed)
    if only_task:
        tasks = [t for t in tasks if t.name == only_task]
        if not tasks:
            raise UserError(f"--only-task: no task named '{only_task}' in data.tasks")
    tok_dir = os.path.join(cfg.run_dir, "tokenizer")
    for turn in (0, 1):  # turn 0: rank 0 builds; turn 1: everyone else loads what it saved
        if (rank == 0) == (turn == 0):
            tokenizer = load_tokenizer(cfg.model, cfg.run_dir, tasks)
            if rank == 0 and not os.path.isdir(tok_dir):
                tokenizer.save_pretrained(tok_dir)
        _barrier()
    for turn in (0, 1):
        if (local_rank == 0) == (turn == 0):
            tokenized = tokenize_tasks(tasks, tokenizer, cfg.data, cfg.run.seed)
        _barrier()
    rates = task_rates(cfg.data.mixture, {t.name: len(t) for t in tokenized})
    return tasks, tokenizer, tokenized, rates


def mixture_definition(cfg: Config, rates: dict) -> dict:
    """What fixes the data stream: tasks and rates, rendering and packing settings (not where the
    data or the cache live)."""
    d = cfg.data
    return {"rates": rates, "template": d.template, "few_shot_k": d.few_shot_k, "chat_template": d.chat_template,
            "max_seq_len": d.max_seq_len, "packing": d.packing, "pack_window": d.pack_window,
            "truncation": d.truncation, "train_on_prompt": d.train_on_prompt, "seed": cfg.run.seed}


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def train(cfg: Config, only_task: str | None = None) -> dict:
    setup_environment()
    from accelerate.utils import set_seed

    from ift.data.loader import PackedLoader
    from ift.model import build_model, count_parameters, token_losses
    from ift.tracking import Tracker, truncate_metrics, wandb_id_path

    rank, world, local_rank = init_distributed()
    main = rank == 0
    run_dir, t = cfg.run_dir, cfg.train
    if main:
        os.makedirs(run_dir, exist_ok=True)
        save_config(cfg, os.path.join(run_dir, "config.yaml"))
    set_seed(cfg.run.seed)
    tasks, tokenizer, tokenized, rates = prepare_data(cfg, rank, local_rank, only_task)
    names = [x.name for x in tokenized]
    if main:
        report = {"tasks": {x.name: {"examples": len(x), "rate": rates[x.name],
                                      "skipped": dict(src.skipped), **dict(x.counts)}
                            for x, src in zip(tokenized, tasks)}}
        with open(os.path.join(run_dir, "mixture.json"), "w") as f:
            json.dump(report, f, indent=1)

    ds_config = deepspeed_config(cfg, world)
    resume_path = checkpoint.find_resume(t.resume, run_dir)
    universal = None
    if resume_path:
        saved_world = checkpoint.read_state(resume_path)["world_size"]
        if saved_world != world and t.zero_stage > 0:  # ZeRO shards are per rank: re-shard via universal
            if main:
                log.info("checkpoint was saved by %d ranks, this run has %d: loading it as a universal checkpoint", saved_world, world)
            universal = checkpoint.prepare_universal(resume_path)
            ds_config["checkpoint"] = {"load_universal": True}
    model = build_model(cfg.model, tokenizer, ds_config, cfg.run.seed)
    n_params = count_parameters(model)
    engine, _, scheduler = initialize(cfg, model, ds_config)

    def make_loader(seed: int) -> PackedLoader:
        return PackedLoader(tokenized, rates, seed=seed, seq_len=cfg.data.max_seq_len, window=cfg.data.pack_window,
                            packing=cfg.data.packing, micro_batch_size=t.micro_batch_size, grad_accum=t.grad_accum,
                            train_on_prompt=cfg.data.train_on_prompt, pad_id=tokenizer.pad_token_id,
                            world_size=world, rank=rank)

    loader = make_loader(cfg.run.seed)
    fingerprints = {"model": _fingerprint(engine.module.config.to_dict()),
                    "tokenizer": _fingerprint(tokenizer.get_vocab()),
                    "mixture": _fingerprint(mixture_definition(cfg, rates))}

    step, resumed_at = 0, None
    if resume_path:
        loaded_at = time.perf_counter()
        saved = checkpoint.read_state(resume_path)
        allowed = checkpoint.check_match(saved, fingerprints, t.resume_allow_mismatch, resume_path)
        state = checkpoint.load(engine, resume_path, universal)
        step = state["step"]
        if "mixture" in allowed:  # new rates: the stream restarts here, seeded by the step
            loader = make_loader(cfg.run.seed + step)
            log.warning("mixture changed since %s: data stream restarted at step %d with the new rates", resume_path, step)
        else:
            loader.load_state_dict(state["loader"])
        resumed_at = loaded_at
        if main:
            truncate_metrics(run_dir, step)
            id_path = wandb_id_path(run_dir)
            if state.get("wandb_id") and not os.path.exists(id_path):  # continue the same W&B run
                with open(id_path, "w") as f:
                    f.write(state["wandb_id"])
            log.info("resumed from %s at step %d", resume_path, step)

    heldout = None
    if cfg.eval.every:  # a small held-out sample scored every eval.every steps
        from ift.eval.heldout_loss import heldout_batches, heldout_loss

        for turn in (0, 1):  # local rank 0 fills the tokenization cache first
            if (local_rank == 0) == (turn == 0):
                heldout = heldout_batches(cfg, tokenizer)
            _barrier()

    tracker = Tracker(cfg, run_dir, enabled=main)
    if main and step == 0:
        tracker.table("mixture", [{"task": n, "examples": len(x), "rate": rates[n]} for n, x in zip(names, tokenized)])
    for sig, why in ((signal.SIGUSR2, "time limit (SIGUSR2)"), (signal.SIGTERM, "preemption (SIGTERM)")):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, lambda *_, why=why: request_stop(why))

    total_examples = sum(len(x) for x in tokenized)
    bar = None
    if main:
        from tqdm import tqdm
        bar = tqdm(total=t.max_steps, initial=step, desc=cfg.run.name, dynamic_ncols=True)
    log_sum = torch.zeros(2 * len(names) + 1, dtype=torch.float64)
    nonfinite_skipped = 0
    window = {"tokens": 0, "slots": 0, "rows": 0, "time": 0.0, "steps": 0}
    last = {}

    def state_now() -> dict:
        return {"step": step, "loader": loader.state_dict(), "examples_drawn": loader.examples_drawn,
                "wandb_id": tracker.wandb.id if tracker.wandb else _read_wandb_id(run_dir),
                "world_size": world, "fingerprints": fingerprints, "config": to_dict(cfg)}

    while step < t.max_steps:
        if t.epochs is not None and loader.examples_drawn >= t.epochs * total_examples:
            break
        began = time.perf_counter()
        skipped_before = engine.skipped_steps
        batch = loader.next_step()
        sums = torch.zeros(2 * len(names) + 1, dtype=torch.float64)
        for micro in batch.micro_batches:
            losses = token_losses(engine, micro)
            # Global-batch token mean: DeepSpeed divides by grad_accum and averages over ranks,
            # so scale by both to get sum(token losses) / (target tokens of the global batch).
            engine.backward(losses.sum() * (world * t.grad_accum / batch.target_tokens))
            engine.step()
            with torch.no_grad():
                ids = micro["task_ids"].flatten()
                mask = micro["labels"].flatten() != -100
                flat = losses.detach().flatten().double()
                sums[: len(names)].index_add_(0, ids[mask], flat[mask])
                sums[len(names): 2 * len(names)].index_add_(0, ids[mask], torch.ones_like(flat[mask]))
        sums[-1] = 0.0 if not STOP["requested"] else 1.0
        _all_reduce(sums)
        loss = sums[: len(names)].sum().item() / batch.target_tokens
        step += 1
        if not math.isfinite(loss):
            # ZeRO's overflow check drops an update whose gradient norm is not finite (and counts it);
            # without it (stage 0) the weights are already spoiled, so the run stops either way.
            skipped = engine.skipped_steps > skipped_before
            if not (t.skip_nonfinite and skipped):
                why = "" if t.skip_nonfinite else " (train.skip_nonfinite=true skips such steps at ZeRO stage >= 1)"
                raise UserError(f"non-finite loss ({loss}) at step {step}; stopping{why}")
            nonfinite_skipped += 1
            log.warning("non-finite loss at step %d: update skipped (%d so far)", step, nonfinite_skipped)
        elapsed = time.perf_counter() - began
        if resumed_at is not None and main:
            log.info("first step after resume done %.2fs after loading began", time.perf_counter() - resumed_at)
            resumed_at = None
        if math.isfinite(loss):
            log_sum += sums
        window["tokens"] += batch.tokens
        window["slots"] += batch.slots
        window["rows"] += loader.rows_per_step
        window["time"] += elapsed
        window["steps"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{batch.tokens / elapsed:.0f}")
        scores = heldout_loss(engine, *heldout) if heldout and step % cfg.eval.every == 0 else {}
        if step % t.log_every == 0 or step == t.max_steps:
            tok_s = window["tokens"] / window["time"]
            metrics = {
                "loss": log_sum[: len(names)].sum().item() / max(log_sum[len(names): 2 * len(names)].sum().item(), 1),
                "lr": scheduler.get_last_lr()[0], "grad_norm": _grad_norm(engine),
                "tokens_per_s": tok_s, "samples_per_s": window["rows"] / window["time"],
                "padding_frac": 1 - window["tokens"] / max(window["slots"], 1),
                "examples_drawn": loader.examples_drawn, "peak_mem_gb": _peak_memory_gb(),
                "skipped_nonfinite": nonfinite_skipped,
            }
            if t.peak_tflops:
                metrics["mfu"] = 6 * n_params * tok_s / (t.peak_tflops * 1e12 * world)
            for i, n in enumerate(names):
                count = log_sum[len(names) + i].item()
                if count:
                    metrics[f"loss/{n}"] = log_sum[i].item() / count
            metrics.update(scores)
            tracker.log(metrics, step)
            last = metrics
            log_sum.zero_()
            window = {"tokens": 0, "slots": 0, "rows": 0, "time": 0.0, "steps": 0}
        elif scores:
            tracker.log(scores, step)
        stop = sums[-1].item() > 0
        if (t.save_every and step % t.save_every == 0) or stop:
            path = checkpoint.save(engine, run_dir, step, state_now(), t.keep_last, t.keep_every,
                                   _stop_inside=os.environ.get("IFT_TEST_DIE_IN_SAVE") == str(step))
            if main:
                log.info("saved %s", path)
        if os.environ.get("IFT_TEST_KILL_AT_STEP") == str(step):  # test hook: an unclean death
            os.kill(os.getpid(), signal.SIGKILL)
        if stop:
            if main:
                log.info("stopping at step %d: %s; checkpoint saved, the requeued job resumes from it", step, STOP["why"] or "stop requested")
            break
    finished = step >= t.max_steps or (t.epochs is not None and loader.examples_drawn >= t.epochs * total_examples)
    final = None
    if finished:
        done = checkpoint.complete_checkpoints(os.path.join(run_dir, "checkpoints"))
        if not done or done[-1][0] != step:
            final = checkpoint.save(engine, run_dir, step, state_now(), t.keep_last, t.keep_every)
        else:
            final = done[-1][1]
        if t.export_final:
            from ift.export import export_checkpoint

            _barrier()
            if main:
                export_checkpoint(final, os.path.join(run_dir, "export"))
            _barrier()
    if bar is not None:
        bar.close()
    tracker.finish()
    result = {"step": step, "finished": finished, "run_dir": run_dir, "checkpoint": final, "last_metrics": last}
    if main:
        log.info("run directory: %s (metrics.jsonl, checkpoints/, tokenizer/, wandb/)", run_dir)
    return result


def _read_wandb_id(run_dir: str) -> str | None:
    from ift.tracking import wandb_id_path

    path = wandb_id_path(run_dir)
    return open(path).read().strip() if os.path.exists(path) else None


def _grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


def _peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
