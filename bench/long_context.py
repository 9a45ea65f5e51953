#!/usr/bin/env python
"""Long-context benchmark: the longest packed row that trains, at sequence parallelism 1, 2, ...

For every SP size N (--sp, default 1,2) it runs `ift train` on N local processes (one
data-parallel rank: the N ranks split every row) with max_seq_len doubling from --start-len until
a run fails for memory (CUDA out of memory), its peak passes --memory-gib per device, or
--max-len is reached. Every row is one document of exactly max_seq_len tokens (a synthetic task
whose long prompt is truncated from the left to the row: full causal attention over the row, the
hard case), so memory is that of the length, not of short packed examples.

Printed: per (N, length) the tokens/s per device over the steps after the first; the activation
memory per rank of one forward pass (the bytes of the tensors autograd saves for backward,
parameters excluded: what SP divides by N, measured the same way on CPU and GPU); on a GPU the
peak memory allocated; per N the longest row that trained; and at each length both ran, SP=N's
activations over SP=1's (about 1/N is the goal). Each run is ift's own Trainer (the real set-up:
Ulysses attention, sliced rows, ZeRO) stepping its train_step under torchrun.

CPU (default: the demo model, 512 .. 4096 tokens, ~4 min on 2 cores):
    python bench/long_context.py
GPU (Llama-3.2-1B shape from config, bf16, tiled MLP, gradient checkpointing, the chunked loss):
    python bench/long_context.py --device cuda --model llama-1b --sp 1,2,4,8 --start-len 16384 \
        --max-len 1048576 --tiled-mlp --gradient-checkpointing
Goal to report against: DeepSpeed ALST's 500K tokens for Llama-8B on one H100 with all its tricks
(arXiv 2506.13996); this bench does not offload activation checkpoints to the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from train_bench import MODELS  # noqa: E402  (the same model shapes as the throughput bench)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(MODELS), default="demo")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sp", default="1,2", help="SP sizes, comma-separated (default 1,2); N processes each")
    p.add_argument("--start-len", type=int, default=512)
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--memory-gib", type=float, default=0.0, help="per-device budget (0: until out of memory)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per run (default 3; the first is warm-up)")
    p.add_argument("--zero-stage", type=int, default=3, choices=[1, 2, 3])
    p.add_argument("--tiled-mlp", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process on CPU (default 1)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per run (default 900)")
    p.add_argument(
        "--dist-timeout-min",
        type=float,
        default=2.0,
        help="train.dist_timeout_min: how long ranks wait for one that ran out of memory",
    )
    p.add_argument("--out", default="/tmp/ift_long_context", help="work folder (wiped first)")
    return p.parse_args(argv)


def write_data(path: str, words: int, n: int = 16) -> None:
    """n examples whose prompt holds `words` random words: longer than any row tried, so
    truncate_prompt_left cuts each to exactly one row."""
    rng = random.Random(0)
    vocab = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
    with open(path, "w") as f:
        for _ in range(n):
            text = " ".join(rng.choice(vocab) for _word in range(words))
            f.write(
                json.dumps(
                    {
                        "instruction": "Name the last word of the text.",
                        "input": text,
                        "output": text.rsplit(" ", 1)[-1],
                    }
                )
                + "\n"
            )


def write_config(args, out: str, data: str, sp: int, length: int) -> str:
    import yaml

    shape = MODELS[args.model]
    model = dict(shape, max_position_embeddings=max(length, shape["max_position_embeddings"]))
    cfg = {
        "run": {"name": f"sp{sp}_len{length}", "output_dir": os.path.join(out, "runs"), "seed": 0},
        "model": {
            "config": model,
            "dtype": "auto",
            "gradient_checkpointing": args.gradient_checkpointing,
            "tokenizer": os.path.join(out, "tokenizer"),
        },
        "data": {
            "tasks": [{"path": data, "schema": "alpaca"}],
            "template": "zero_shot",
            "max_seq_len": length,
            "truncation": "truncate_prompt_left",
            "cache_dir": os.path.join(out, "cache"),
        },
        "train": {
            "max_steps": args.steps,
            "micro_batch_size": 1,
            "zero_stage": args.zero_stage,
            "log_every": 1,
            "warmup_steps": 0,
            "resume": "never",
            "sequence_parallel": sp,
            "tiled_mlp": args.tiled_mlp,
            "dist_timeout_min": args.dist_timeout_min,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    path = os.path.join(out, f"sp{sp}_len{length}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def make_tokenizer(out: str, data: str) -> None:
    """One BPE for every run (the model is built from config; nothing is downloaded)."""
    sys.path.insert(0, REPO)
    from ift.model import train_bpe_tokenizer

    with open(data) as f:
        texts = [json.loads(line)["input"][:20000] for line in f][:2]
    tokenizer = train_bpe_tokenizer(texts + ["Name the last word of the text."], 1024)
    tokenizer.save_pretrained(os.path.join(out, "tokenizer"))


def run_one(args, out: str, data: str, sp: int, length: int) -> dict:
    from ift.distributed import free_port

    cfg = write_config(args, out, data, sp, length)
    result = os.path.join(out, f"sp{sp}_len{length}.json")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={sp}",
        f"--master-port={free_port()}",
        os.path.abspath(__file__),
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="disabled",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        IFT_LONG_CONTEXT=json.dumps({"config": cfg, "result": result, "steps": args.steps}),
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    if args.device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    began = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"over {args.timeout}s"}
    if os.path.exists(result):
        with open(result) as f:
            r = json.load(f)
        if r["ok"]:
            r["wall"] = time.perf_counter() - began
        return r
    tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or [""]
    return {"ok": False, "why": f"exit {done.returncode}: {tail[0][:120]}"}


def worker() -> None:
    """One (SP, length) run inside torchrun: ift's Trainer (the real set-up: Ulysses attention,
    sliced rows, ZeRO), `--steps` of its train_step, timed; the activation memory of one forward
    pass counted as the bytes of the tensors autograd saves for backward (parameters excluded,
    shared storage once): per rank, what sequence parallelism divides."""
    import torch

    from ift.config import load_config
    from ift.train import Trainer

    spec = json.loads(os.environ["IFT_LONG_CONTEXT"])
    cfg = load_config(spec["config"])
    trainer = Trainer(cfg)
    saved, seen = [0], set()

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                saved[0] += storage.nbytes()
        return t

    plain_forward = trainer.engine.forward

    def counted_forward(*a, **kw):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            return plain_forward(*a, **kw)

    cuda = trainer.engine.device.type == "cuda"
    times = []
    try:
        for step in range(spec["steps"]):
            batch = trainer.data.next_step()
            trainer.engine.forward = counted_forward if step == 0 else plain_forward
            if cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            trainer.train_step(batch)
            if cuda:
                torch.cuda.synchronize()
            times.append((batch.tokens, time.perf_counter() - began))
    except torch.OutOfMemoryError:
        if trainer.rank == 0:
            with open(spec["result"], "w") as f:
                json.dump({"ok": False, "why": "out of memory"}, f)
        os._exit(3)  # the other ranks wait in a collective: torchrun ends them
    measured = times[1:] or times
    world = trainer.world
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    activations = torch.tensor([saved[0] / 2**30])
    if trainer.rank == 0:
        with open(spec["result"], "w") as f:
            json.dump(
                {
                    "ok": True,
                    "tok_s_dev": sum(t for t, _ in measured) / sum(d for _, d in measured) / world,
                    "activation_gib": activations.item(),
                    "peak_gib": peak,
                },
                f,
            )
    trainer.finish()


def main() -> int:
    args = parse_args()
    sizes = [int(x) for x in args.sp.split(",")]
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    data = os.path.join(args.out, "long.jsonl")
    write_data(data, words=args.max_len + 64)
    make_tokenizer(args.out, data)
    print(
        f"long_context: {args.model} on {args.device}, ZeRO-{args.zero_stage}, SP {sizes}, rows of "
        f"{args.start_len}..{args.max_len} tokens (one document each), tiled MLP {args.tiled_mlp}, "
        f"gradient checkpointing {args.gradient_checkpointing}, {args.steps} steps per run",
        flush=True,
    )
    results: dict[int, dict[int, dict]] = {}
    for sp in sizes:
        results[sp] = {}
        length = args.start_len
        while length <= args.max_len:
            r = run_one(args, args.out, data, sp, length)
            results[sp][length] = r
            if r["ok"]:
                print(
                    f"  SP={sp} len={length}: {r['tok_s_dev']:.0f} tok/s/device, activations "
                    f"{r['activation_gib']:.3f} GiB per rank, peak {r['peak_gib']:.2f} GiB ({r['wall']:.0f}s)",
                    flush=True,
                )
            else:
                print(f"  SP={sp} len={length}: {r['why']}", flush=True)
            if not r["ok"] or over_budget(args, r):
                break
            length *= 2
    report(args, results)
    return 0


def over_budget(args, r: dict) -> bool:
    return bool(args.memory_gib) and r["peak_gib"] > args.memory_gib  # nan on CPU: never


def report(args, results) -> None:
    print()
    print(f"{'SP':>3} {'length':>9} {'tok/s/dev':>10} {'activations GiB/rank':>21} {'peak GiB':>9}")
    for sp, rows in results.items():
        for length, r in rows.items():
            if r["ok"]:
                print(
                    f"{sp:>3} {length:>9} {r['tok_s_dev']:>10.0f} {r['activation_gib']:>21.3f} {r['peak_gib']:>9.2f}"
                )
            else:
                print(f"{sp:>3} {length:>9} {'-':>10} {r['why']:>21}")
    print()
    for sp, rows in results.items():
        fits = [n for n, r in rows.items() if r["ok"] and not over_budget(args, r)]
        capped = " (--max-len reached)" if fits and fits[-1] * 2 > args.max_len else ""
        print(f"SP={sp}: longest row that trained: {fits[-1] if fits else 'none'}{capped}")
    for sp in (s for s in results if s != 1 and 1 in results):
        for length, r in results[sp].items():
            one = results[1].get(length)
            if r["ok"] and one and one["ok"]:
                print(
                    f"activations per rank, SP={sp} / SP=1 at {length}: "
                    f"{r['activation_gib'] / one['activation_gib']:.2f} (goal ~{1 / sp:.2f})"
                )


if __name__ == "__main__":
    if "IFT_LONG_CONTEXT" in os.environ:
        worker()
    else:
        sys.exit(main())
