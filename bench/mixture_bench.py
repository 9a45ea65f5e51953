#!/usr/bin/env python
"""Mixture benchmark: fixed rates against the adaptive mixture (ift.data.adapt) on a skewed suite.

The built-in grid's 15 training cells, skewed on purpose: the three `name_*` cells (the easiest
operation: copy one item) with 1,500 examples each, the other twelve with 30 each (50x apart). The
demo's model, batch and schedule; the same steps and seed for every strategy:
  proportional (examples-proportional, no cap), temperature (T = 2), excess_loss and
  learning_progress (both adapting from the proportional rates).
Every run saves every --every steps; each checkpoint is scored on the 10 held-out cells (greedy,
ROUGE-L / exact match x100), the last one also on the 15 own cells. Printed per run and as the mean
over seeds: held-out mean and worst task (ROUGE-L, exact match), own-task mean, and the first
evaluated step whose held-out mean reaches 90% of the best final held-out mean of that seed.

Run from the repo root:  python bench/mixture_bench.py          (2 seeds x 4 strategies; ~15 min on 2 cores)
                         python bench/mixture_bench.py --steps 40 --every 20 --seeds 0   (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

LARGE, SMALL = 1500, 30
STRATEGIES = {
    "proportional": {"strategy": "proportional"},
    "temperature": {"strategy": "temperature", "temperature": 2.0},
    "excess_loss": {
        "strategy": "proportional",
        "adapt": {"rule": "excess_loss", "every": 25, "eta": 1.0, "smoothing": 0.1},
    },
    "learning_progress": {
        "strategy": "proportional",
        "adapt": {"rule": "learning_progress", "every": 25, "eta": 3.0, "smoothing": 0.1, "epsilon": 0.05},
    },
}


def skewed_tasks() -> list[dict]:
    from ift.data.builtin import task_names

    return [{"builtin": t, "n": LARGE if t.startswith("name_") else SMALL} for t in task_names("train")]


def config(out: str, strategy: str, seed: int, steps: int, every: int) -> str:
    with open(os.path.join(REPO, "configs", "demo.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["run"] = {"name": f"{strategy}_s{seed}", "output_dir": out, "seed": seed}
    cfg["data"].update(tasks=skewed_tasks(), mixture=STRATEGIES[strategy], cache_dir=os.path.join(out, "cache"))
    cfg["train"].update(
        max_steps=steps, save_every=every, keep_last=steps // every + 1, warmup_steps=min(50, steps // 6)
    )
    cfg["eval"].update(every=0)
    cfg["tracking"] = {"wandb": {"mode": "disabled"}}
    path = os.path.join(out, f"{strategy}_s{seed}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def train_all(paths: list[str], parallel: int) -> None:
    """`ift train` for every config, `parallel` at a time with one thread each (tiny models are
    overhead-bound: two one-thread runs beat one two-thread run on 2 cores)."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DS_ACCELERATOR="cpu",
        TOKENIZERS_PARALLELISM="false",
        WANDB_SILENT="true",
        HF_HUB_OFFLINE="1",
    )
    pending, running = list(paths), []
    while pending or running:
        while pending and len(running) < parallel:
            p = pending.pop(0)
            log = open(p[:-5] + ".log", "w")
            running.append(
                (
                    p,
                    subprocess.Popen(
                        [sys.executable, "-m", "ift", "train", p],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
            )
        time.sleep(1)
        for item in list(running):
            p, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode:
                    sys.exit(f"ift train {p} exited {proc.returncode}; see {p[:-5]}.log")


def score(ckpt: str, tasks: str, limit: int, out: str, name: str) -> dict:
    from ift.eval.evaluate import evaluate

    r = evaluate(ckpt, tasks=tasks, shots=0, limit=limit, out=out, name=name, wandb=False)
    rl = {t: s["rougeL"] for t, s in r["tasks"].items()}
    em = {t: s["exact_match"] for t, s in r["tasks"].items()}
    return {
        "rougeL": statistics.mean(rl.values()),
        "exact_match": statistics.mean(em.values()),
        "worst_rougeL": min(rl.values()),
        "worst_exact_match": min(em.values()),
        "worst_task": min(rl, key=rl.get),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--every", type=int, default=75, help="evaluate a checkpoint every N steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    ap.add_argument("--limit", type=int, default=30, help="examples per task in each evaluation")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="ift_mixture_bench_"))
    os.makedirs(out, exist_ok=True)
    began = time.time()
    runs = [(s, seed) for seed in args.seeds for s in args.strategies]
    train_all([config(out, s, seed, args.steps, args.every) for s, seed in runs], args.parallel)
    trained = time.time()

    results = {}
    for s, seed in runs:
        run = os.path.join(out, f"{s}_s{seed}")
        curve = {}
        for step in range(args.every, args.steps + 1, args.every):
            ckpt = os.path.join(run, "checkpoints", f"step_{step:08d}")
            curve[step] = score(ckpt, "builtin:heldout", args.limit, os.path.join(run, "bench"), f"heldout_{step}")
        own = score(
            os.path.join(run, "checkpoints", f"step_{args.steps:08d}"),
            "builtin:train",
            args.limit,
            os.path.join(run, "bench"),
            "own",
        )
        results[(s, seed)] = {"curve": curve, "final": curve[args.steps], "own": own}
        print(f"{s} seed {seed}: held-out {curve[args.steps]['rougeL']:.1f}, own {own['rougeL']:.1f}", flush=True)

    for seed in args.seeds:
        best = max(results[(s, seed)]["final"]["rougeL"] for s in args.strategies)
        for s in args.strategies:
            r = results[(s, seed)]
            reached = [st for st, c in r["curve"].items() if c["rougeL"] >= 0.9 * best]
            r["steps_to_90"] = reached[0] if reached else None

    rows = [
        "| strategy | seed | held-out mean RL / EM | worst held-out RL / EM (task) | own mean RL / EM "
        "| steps to 90% of best held-out |",
        "|---|---|---|---|---|---|",
    ]
    for s, seed in runs:
        r = results[(s, seed)]
        f, o = r["final"], r["own"]
        rows.append(
            f"| {s} | {seed} | {f['rougeL']:.1f} / {f['exact_match']:.1f} | {f['worst_rougeL']:.1f} / "
            f"{f['worst_exact_match']:.1f} ({f['worst_task']}) | {o['rougeL']:.1f} / {o['exact_match']:.1f} | "
            f"{r['steps_to_90'] or 'not reached'} |"
        )
    rows += [
        "",
        "| strategy | held-out mean RL | worst held-out RL | own mean RL | mean over seeds |",
        "|---|---|---|---|---|",
    ]
    means = {}
    for s in args.strategies:
        rs = [results[(s, seed)] for seed in args.seeds]
        means[s] = {k: statistics.mean(r["final"][k] for r in rs) for k in ("rougeL", "worst_rougeL")}
        means[s]["own"] = statistics.mean(r["own"]["rougeL"] for r in rs)
        rows.append(
            f"| {s} | {means[s]['rougeL']:.1f} | {means[s]['worst_rougeL']:.1f} | {means[s]['own']:.1f} "
            f"| {len(rs)} seed(s) |"
        )
    fixed = [s for s in ("proportional", "temperature") if s in means]
    adaptive = [s for s in ("excess_loss", "learning_progress") if s in means]
    print(
        f"\n{args.steps} steps, seeds {args.seeds}, {LARGE} examples in each name_* cell and {SMALL} in the "
        f"others; trained in {trained - began:.0f} s, evaluated in {time.time() - trained:.0f} s; runs in {out}\n"
    )
    print("\n".join(rows))
    if fixed and adaptive:
        best_fixed = max(fixed, key=lambda s: means[s]["rougeL"])
        print(
            f"\ngoal: an adaptive rule matches the best fixed strategy's held-out mean ({best_fixed}: "
            f"{means[best_fixed]['rougeL']:.1f}) and beats its worst task ({means[best_fixed]['worst_rougeL']:.1f}) "
            "by >= 10 ROUGE-L"
        )
        for s in adaptive:
            d_mean = means[s]["rougeL"] - means[best_fixed]["rougeL"]
            d_worst = means[s]["worst_rougeL"] - means[best_fixed]["worst_rougeL"]
            ok = d_mean >= -1.0 and d_worst >= 10
            print(f"  {s}: held-out mean {d_mean:+.1f}, worst task {d_worst:+.1f} -> {'MET' if ok else 'NOT MET'}")
    with open(os.path.join(out, "mixture_bench.json"), "w") as f:
        json.dump({f"{s}_s{seed}": r for (s, seed), r in results.items()}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
