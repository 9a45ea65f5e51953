#!/usr/bin/env python
"""Training-throughput benchmark: `ift train` versus a bare DeepSpeed loop and versus
`transformers.Trainer`, side by side in one run, on the same model and the same packed batches.

  (a) ift      `ift train`'s library call (ift.train.train, what the verb runs inside each torchrun
               worker; the verb's wrapper would end the process groups the other two still
               need), logging every step; tokens/s read from its metrics.jsonl, the first windows (--warmup-steps)
               left out as warm-up.
  (b) bare     `deepspeed.initialize` with the same model, DeepSpeed config (ZeRO-2) and optimizer
               settings, looping over the very micro-batches ift's PackedLoader yields: plain
               `model(input_ids, position_ids, attention_mask, labels).loss`, backward, step. No
               per-task bookkeeping, no token-level loss, no metrics.
  (c) Trainer  `transformers.Trainer` with `TrainingArguments(deepspeed=<the same config dict>)`
               over a torch Dataset of the same packed rows, in an order that hands every rank the
               rows ift gives it; Trainer computes its own loss.
All three pass packed rows with restarting position_ids and no attention mask, so transformers builds
the same block-diagonal causal mask (or flash-attention's varlen path) for each: the comparison is of
the training loops, not of attention kernels. ift's loss projects only target positions, in chunks;
(b) and (c) compute Hugging Face's loss over full logits. Each step's tokens are the
non-padding tokens of the global batch; all three are timed per step over the same steps, on rank 0
(ift's own step time: data + forward/backward/step + its loss all-reduce; bare: the same span;
Trainer: from one on_step_end to the next).

The three run one after another in the same two torchrun workers (one start-up), in --rounds
rounds of alternating order (a b c, c b a, ...). Other processes' load comes in bursts that hit
single steps, so the verdict uses the median of the per-step tokens/s pooled over the rounds; the
plain mean (total tokens / total time) is printed too.

Targets: ift >= 0.97x bare, ift >= 1.0x Trainer.

Run from the repo root:   python bench/train_bench.py          (2 local processes, ~4-5 min on 2 cores)
Options:                  python bench/train_bench.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# configs/demo.yaml's model (as it was when measured: 4 heads; the demo now has 8) and data, made short
# enough for a CPU benchmark
DEMO_MODEL = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
# Llama-3.2-1B's shape (random init from config: nothing is downloaded), for GPU runs (bench/gpu_check.py)
LLAMA_1B = {
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}
MODELS = {"demo": DEMO_MODEL, "llama-1b": LLAMA_1B}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nproc", type=int, default=2, help="local processes (default 2)")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per method (default 30)")
    p.add_argument("--warmup-steps", type=int, default=10, help="first steps left out as warm-up (default 10)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--examples-per-task", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="rounds of (a, b, c), alternating order (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--out", default="/tmp/ift_train_bench", help="work folder (wiped first)")
    p.add_argument("--model", choices=sorted(MODELS), default="demo", help="model shape (default demo)")
    p.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (gloo) or cuda (NCCL, bf16)")
    p.add_argument(
        "--data", default=None, help="Super-NaturalInstructions folder with train/ (default: built-in suite)"
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: a BPE trained on the data)")
    p.add_argument("--cache-dir", default=None, help="tokenization cache (default: <out>/cache)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="per-device peak bf16 TFLOP/s, for MFU")
    p.add_argument("--methods", default="ift,bare,trainer", help="comma-separated subset of ift,bare,trainer")
    return p.parse_args(argv)


def write_config(args) -> str:
    import yaml

    tasks = (
        [
            {
                "path": os.path.join(os.path.abspath(args.data), "train", "*.jsonl"),
                "schema": "sni",
                "n": args.examples_per_task,
            }
        ]
        if args.data
        else [{"builtin": "train", "n": args.examples_per_task}]
    )
    cfg = {
        "run": {"name": "ift", "output_dir": os.path.join(args.out, "runs"), "seed": 0},
        "model": {"config": MODELS[args.model], "dtype": "auto", "tokenizer": args.tokenizer},
        "data": {
            "tasks": tasks,
            "template": {"zero_shot": 0.7, "few_shot": 0.3},
            "max_seq_len": args.seq_len,
            "mixture": {"strategy": "proportional", "cap": 3000},
            "packing": True,
            "cache_dir": args.cache_dir or os.path.join(args.out, "cache"),
            "on_bad_record": "skip",
        },
        "train": {
            "max_steps": args.steps,
            "micro_batch_size": args.micro_batch_size,
            "grad_accum": args.grad_accum,
            "lr": 2e-3,
            "warmup_steps": 5,
            "zero_stage": args.zero_stage,
            "log_every": 1,
            "resume": "never",
            "peak_tflops": args.peak_tflops,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    path = os.path.join(args.out, "bench.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


# --------------------------------------------------------------------------- launcher


def launch(args) -> int:
    from ift.distributed import free_port

    if args.warmup_steps >= args.steps:
        sys.exit("--warmup-steps must be < --steps")
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    write_config(args)
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="disabled",
        IFT_BENCH_OUT=args.out,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        IFT_BENCH_ARGV=json.dumps(sys.argv[1:]),
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    if args.device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={args.nproc}",
        f"--master-port={free_port()}",
        os.path.abspath(__file__),
    ]  # the workers read the arguments from IFT_BENCH_ARGV (torchrun would parse them)
    print(
        f"train_bench: {args.nproc} processes on {args.device}, ZeRO-{args.zero_stage}, {args.model} Llama, "
        f"data {'SNI ' + args.data if args.data else 'built-in'}, seq_len {args.seq_len}, "
        f"micro-batch {args.micro_batch_size} x grad_accum {args.grad_accum}, {args.steps} steps per method "
        f"({args.warmup_steps} warm-up), {args.rounds} rounds",
        flush=True,
    )
    started = time.perf_counter()
    code = subprocess.call(cmd, cwd=REPO, env=env)
    print(f"total wall time {time.perf_counter() - started:.0f}s", flush=True)
    return code


# --------------------------------------------------------------------------- workers


def hf_labels(labels):
    """ift's labels are shifted inside each example (labels[t] predicts token t+1); HF models shift
    internally, so hand them labels aligned with input_ids: hf[t+1] = ift[t]."""
    import torch

    return torch.cat([torch.full_like(labels[:, :1], -100), labels[:, :-1]], dim=1)


def log0(rank, *msg):
    if rank == 0:
        print("train_bench:", *msg, flush=True)


def run_ift(cfg_path, *overrides) -> dict:
    from ift.config import load_config
    from ift.logs import setup_logging
    from ift.train import train

    setup_logging()
    started = time.perf_counter()
    train(load_config(cfg_path, list(overrides)))
    return {"wall": time.perf_counter() - started}


def ift_result(run_dir: str, steps: list, warmup: int, world: int) -> dict:
    """(tokens, seconds) of every logged window after the warm-up steps: a window's tokens_per_s
    is its tokens over the summed time of its steps, and its tokens are known (the same batches)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    samples, prev, flops, tokens = [], 0, 0.0, 0
    for r in rows:
        window_tokens = sum(s["tokens"] for s in steps[prev : r["step"]])
        if prev >= warmup:
            seconds = window_tokens / r["tokens_per_s"]
            samples.append((window_tokens, seconds))
            # ift's model FLOPs of the window (ift.flops: attention by document, head on targets only)
            flops += r["tflops_per_device"] * 1e12 * world * seconds
            tokens += window_tokens
        prev = r["step"]
    return {
        "samples": samples,
        "loss": sum(r["loss"] for r in rows[-warmup:]) / len(rows[-warmup:]),
        "peak_gib": max(r["peak_mem_gb"] for r in rows),
        "flops_per_token": flops / max(tokens, 1),
    }


def same_batches(cfg, rank, local_rank, world):
    """Every rank's micro-batches for every step, exactly as ift's PackedLoader makes them."""
    from ift.data.loader import PackedLoader
    from ift.data.prepare import prepare_data

    _, tokenizer, tokenized, rates = prepare_data(cfg)
    t = cfg.train
    loaders = [
        PackedLoader(
            tokenized,
            rates,
            seed=cfg.run.seed,
            seq_len=cfg.data.max_seq_len,
            window=cfg.data.pack_window,
            packing=cfg.data.packing,
            micro_batch_size=t.micro_batch_size,
            grad_accum=t.grad_accum,
            train_on_prompt=cfg.data.train_on_prompt,
            pad_id=tokenizer.pad_token_id,
            world_size=world,
            rank=r,
        )
        for r in range(world)
    ]
    steps = []
    for _ in range(t.max_steps):
        per_rank = [loader.next_step() for loader in loaders]
        assert len({s.tokens for s in per_rank}) == 1
        steps.append(
            {
                "tokens": per_rank[0].tokens,
                "micro": [
                    [
                        {
                            "input_ids": m["input_ids"],
                            "position_ids": m["position_ids"],
                            "labels": hf_labels(m["labels"]),
                        }
                        for m in s.micro_batches
                    ]
                    for s in per_rank
                ],
            }
        )
    return tokenizer, steps


def same_ds_config(cfg, tokenizer, world) -> dict:
    """The DeepSpeed config ift's trainer builds for this model (its comm buckets from the width)."""
    from ift.engine import deepspeed_config
    from ift.model import model_config

    width = getattr(model_config(cfg.model, tokenizer).get_text_config(), "hidden_size", None)
    return deepspeed_config(cfg, world, width)


def run_bare(cfg, tokenizer, steps, rank, world, warmup) -> dict:
    import deepspeed
    import torch

    from ift.engine import lr_lambda, to_device
    from ift.model import build_model

    ds = same_ds_config(cfg, tokenizer, world)
    model = build_model(cfg.model, tokenizer, ds, cfg.run.seed)
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds)
    engine.train()
    times, losses = [], []
    reset_peak_memory()
    for step in steps:
        began = time.perf_counter()
        for micro in step["micro"][rank]:
            micro = to_device(micro, engine.device)
            out = engine(
                input_ids=micro["input_ids"],
                position_ids=micro["position_ids"],
                labels=micro["labels"],
                use_cache=False,
            )
            engine.backward(out.loss)
            engine.step()
            losses.append(out.loss.detach())
        synchronize()
        times.append(time.perf_counter() - began)
    losses = [x.item() for x in losses]
    # rank 0's step times, as ift's metrics are (every step ends in collectives, so ranks agree)
    last = torch.tensor(sum(losses[-t.grad_accum * warmup :]) / (t.grad_accum * warmup), device=engine.device)
    torch.distributed.all_reduce(last)
    result = {
        "samples": [(s["tokens"], dt) for s, dt in zip(steps[warmup:], times[warmup:])],
        "loss": last.item() / world,
        "peak_gib": peak_memory_gib(),
    }
    release(engine)
    return result


def run_trainer(cfg, tokenizer, steps, rank, world, warmup, out_dir) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from ift.distributed import accelerator_available
    from ift.model import build_model

    t = cfg.train

    class Rows(torch.utils.data.Dataset):
        """Rows ordered so that Trainer's sequential, batch-sharded loading gives rank r exactly
        ift's rows of rank r: per step, per micro-batch j, the micro-batch of every rank in turn."""

        def __init__(self):
            self.rows = []
            for step in steps:
                for j in range(t.grad_accum):
                    for r in range(world):
                        m = step["micro"][r][j]
                        self.rows += [{k: v[i] for k, v in m.items()} for i in range(len(m["input_ids"]))]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    def collate(rows):
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}

    class SameOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    ds = same_ds_config(cfg, tokenizer, world)
    model = build_model(cfg.model, tokenizer, ds, cfg.run.seed)
    model.config.use_cache = False
    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_steps=t.max_steps,
        learning_rate=t.lr,
        adam_beta1=t.betas[0],
        adam_beta2=t.betas[1],
        weight_decay=t.weight_decay,
        max_grad_norm=t.grad_clip,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_steps,
        optim="adamw_torch",
        deepspeed=ds,
        logging_steps=warmup,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=cfg.run.seed,
        use_cpu=not accelerator_available(),
        ddp_backend="nccl" if accelerator_available() else "gloo",
        bf16=cfg.model.dtype == "bf16",
    )
    clock = Clock()
    trainer = SameOrder(model=model, args=args, train_dataset=Rows(), data_collator=collate, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # keep its log dicts out of the output (log_history keeps them)
    reset_peak_memory()
    trainer.train()
    ends = clock.ends  # rank 0's clock: a step's time runs from the previous step's end to its own
    assert len(ends) == len(steps), (len(ends), len(steps))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {
        "samples": [(steps[i]["tokens"], ends[i] - ends[i - 1]) for i in range(warmup, len(steps))],
        "loss": losses[-1] if losses else float("nan"),
        "peak_gib": peak_memory_gib(),
    }
    release(trainer.model_wrapped, trainer)
    return result


def synchronize() -> None:
    import torch

    from ift.distributed import accelerator_available

    if accelerator_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    from ift.distributed import accelerator_available

    if accelerator_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float:
    """Peak GPU memory allocated since reset_peak_memory (CUDA); the process's peak RSS on CPU."""
    import resource

    import torch

    from ift.distributed import accelerator_available

    if accelerator_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def release(*objects) -> None:
    """Free one method's engine before the next method builds its own (GPU memory)."""
    import gc

    import torch

    for obj in objects:
        destroy = getattr(obj, "destroy", None)
        if callable(destroy):
            destroy()
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker(args) -> None:
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from ift.config import load_config
    from ift.distributed import init_distributed, setup_environment

    cfg_path = os.path.join(args.out, "bench.yaml")
    cfg = load_config(cfg_path)
    setup_environment()
    rank, world, local_rank = init_distributed()
    for name in ("DeepSpeed", "deepspeed", "transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)

    # Rounds alternate the order (a b c, c b a, ...) so that drifting load from other processes
    # falls on every method alike; the table shows every round and the mean.
    methods = [m for m in ("ift", "bare", "trainer") if m in args.methods.split(",")]
    results = {m: [] for m in methods}
    tokenizer = steps = None
    for r in range(args.rounds):
        order = methods if r % 2 == 0 else methods[::-1]
        for method in order:
            if method == "ift":
                name = f"ift-r{r + 1}"
                log0(rank, f"round {r + 1}: (a) ift train ...")
                reset_peak_memory()
                with quiet_bar(rank):
                    run_ift(cfg_path, f"run.name={name}")
                logging.getLogger().setLevel(logging.WARNING)  # ift's CLI set INFO; keep the rest quiet
                if steps is None:
                    tokenizer, steps = same_batches(
                        load_config(cfg_path, [f"run.name={name}"]), rank, local_rank, world
                    )
                if rank == 0:
                    results["ift"].append(
                        ift_result(os.path.join(cfg.run.output_dir, name), steps, args.warmup_steps, world)
                    )
            elif method == "bare":
                log0(rank, f"round {r + 1}: (b) bare deepspeed.initialize loop ...")
                results["bare"].append(run_bare(cfg, tokenizer, steps, rank, world, args.warmup_steps))
            else:
                if steps is None:  # only when a round starts with Trainer before any ift run
                    tokenizer, steps = same_batches(cfg, rank, local_rank, world)
                log0(rank, f"round {r + 1}: (c) transformers.Trainer ...")
                results["trainer"].append(
                    run_trainer(
                        cfg,
                        tokenizer,
                        steps,
                        rank,
                        world,
                        args.warmup_steps,
                        os.path.join(args.out, f"trainer-r{r + 1}"),
                    )
                )
    if rank == 0:
        from ift.model import count_parameters

        report(args, results, n_params_of(cfg, tokenizer, count_parameters))
    torch.distributed.barrier()


def n_params_of(cfg, tokenizer, count_parameters) -> int:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from ift.model import model_config

    unset_hf_deepspeed_config()  # a ZeRO-3 method's config would wrap this build in zero.Init
    with torch.device("meta"):  # shapes only
        return count_parameters(AutoModelForCausalLM.from_config(model_config(cfg.model, tokenizer)))


class quiet_bar:
    """ift's tqdm bar redraws every step; keep it out of the benchmark's output (stderr to a file)."""

    def __init__(self, rank):
        self.rank = rank

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.log = open(os.path.join(os.environ.get("IFT_BENCH_OUT", "/tmp"), f"ift_stderr_rank{self.rank}.log"), "a")
        os.dup2(self.log.fileno(), 2)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.log.close()


def rates(samples) -> tuple[float, float]:
    """(median of per-step tokens/s, total tokens / total time)."""
    per_step = sorted(tok / dt for tok, dt in samples)
    n = len(per_step)
    median = per_step[n // 2] if n % 2 else (per_step[n // 2 - 1] + per_step[n // 2]) / 2
    return median, sum(tok for tok, _ in samples) / sum(dt for _, dt in samples)


def report(args, results, n_params: int) -> None:
    rounds = len(next(iter(results.values())))
    pooled = {k: rates([x for r in v for x in r["samples"]]) for k, v in results.items()}
    print()
    print(
        f"tokens/s (global non-padding tokens / s), steps {args.warmup_steps + 1}-{args.steps} of every run; "
        f"{args.nproc} processes on {args.device}, ZeRO-{args.zero_stage}, {args.model} "
        f"({n_params / 1e6:.0f}M parameters), {rounds} rounds in alternating order"
    )
    head = "".join(f"{'round ' + str(i + 1):>9}" for i in range(rounds))
    print(
        "rounds: median of the run's per-step tokens/s; median, mean: all rounds' steps pooled "
        "(mean = total tokens / total time)"
    )
    print(f"{'method':<31}{head}{'median':>9}{'mean':>9}{'tok/s/dev':>10}{'MFU':>7}{'peak GiB':>9}{'loss':>8}")
    labels = {"ift": "(a) ift train", "bare": "(b) bare deepspeed.initialize", "trainer": "(c) transformers.Trainer"}
    for key, label in labels.items():
        if key not in results:
            continue
        cells = "".join(f"{rates(r['samples'])[0]:>9.0f}" for r in results[key])
        per_device = pooled[key][1] / args.nproc
        # MFU: model FLOPs per token as ift counts them (ift.flops; every method trains the same
        # batches, so the same FLOPs per token) x tokens/s over the device's peak
        flops_per_token = results["ift"][0]["flops_per_token"] if "ift" in results else 6 * n_params
        mfu = f"{flops_per_token * per_device / (args.peak_tflops * 1e12):>7.1%}" if args.peak_tflops else f"{'-':>7}"
        peak = max(r["peak_gib"] for r in results[key])
        print(
            f"{label:<31}{cells}{pooled[key][0]:>9.0f}{pooled[key][1]:>9.0f}{per_device:>10.0f}{mfu}"
            f"{peak:>9.2f}{results[key][-1]['loss']:>8.3f}"
        )
    if "ift" in results:
        print(
            f"(MFU: {results['ift'][0]['flops_per_token'] / 1e9:.3f} GFLOP per token as ift counts them, ift.flops: "
            "6 x non-embedding parameters + attention within each document + the output projection on "
            "targets only)"
        )
    print()
    print(f"{'ratio':<16}{'median':>8}{'mean':>8}{'target':>9}  result (on the median)")
    for name, other, target in (("ift / bare", "bare", 0.97), ("ift / Trainer", "trainer", 1.0)):
        if "ift" not in results or other not in results:
            continue
        med, mean = pooled["ift"][0] / pooled[other][0], pooled["ift"][1] / pooled[other][1]
        print(f"{name:<16}{med:>8.3f}{mean:>8.3f}{'>= ' + str(target):>9}  {'PASS' if med >= target else 'FAIL'}")
    print(
        "(loss, indicative: ift = token mean over its last steps; bare = mean of micro-batch means; "
        "Trainer = its own last logged loss)"
    )


if __name__ == "__main__":
    if "RANK" in os.environ:
        worker(parse_args(json.loads(os.environ["IFT_BENCH_ARGV"])))
    else:
        sys.path.insert(0, REPO)
        sys.exit(launch(parse_args()))
