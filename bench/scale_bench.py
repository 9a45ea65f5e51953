#!/usr/bin/env python
"""Scale benchmark: thousands of task files. Writes N synthetic alpaca task files (200 records
each, 10-60-word instructions) and times, with the peak RSS of each command:
  * `ift mix CONFIG` on a cold cache (every file read) and again (the source cache warm);
  * `ift train CONFIG` of a tiny inline model for 5 steps on a cold cache (files read, tokenizer
    trained, every example tokenized) and again in the same run directory (warm: the run's saved
    tokenizer, the source and tokenization caches hit);
for N = 100, 1,000 and 3,000 by default, then checks the targets of issue #12:
  mix at N=1,000 <= 10 s; warm start at N=1,000 <= 20 s; time per example at N=3,000 within 1.5x
  of N=100 (cold mix and cold train); peak RSS at N=3,000 <= 2 GiB.

Run from the repo root:  python bench/scale_bench.py             (~15 min on 2 idle cores)
                         python bench/scale_bench.py --sizes 100 300   (a quick look)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES_PER_TASK = 200
WORDS = (
    "time person year way day thing man world life hand part child eye woman place work week case point "
    "government company number group problem fact be have do say get make go know take see come think look "
    "want give use find tell ask seem feel try leave call good new first last long great little own other old "
    "right big high different small large next early young important few public bad same able to of in for "
    "on with at by from up about into over after"
).split()
# Runs one command and prints its wall time and the peak RSS of its largest process (ru_maxrss of
# the children it waited for), so each measurement has its own peak.
MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], 'w')); "
    "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def write_tasks(folder: str, n: int, seed: int = 0) -> None:
    os.makedirs(folder, exist_ok=True)
    for t in range(n):
        rng = random.Random(f"{seed}:{t}")
        instruction = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))).capitalize() + "."
        with open(os.path.join(folder, f"task{t:05d}.jsonl"), "w") as f:
            for _ in range(EXAMPLES_PER_TASK):
                record = {
                    "instruction": instruction,
                    "input": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))),
                    "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10))),
                }
                f.write(json.dumps(record) + "\n")


def write_config(path: str, data: str, cache: str, runs: str) -> None:
    config = {
        "run": {"name": "scale", "output_dir": runs, "seed": 0},
        "model": {
            "config": {
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "vocab_size": 512,
                "max_position_embeddings": 256,
            }
        },
        "data": {"tasks": [{"path": data}], "max_seq_len": 256, "cache_dir": cache},
        "train": {"max_steps": 5, "micro_batch_size": 4, "log_every": 5, "zero_stage": 0, "resume": "never"},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    with open(path, "w") as f:
        json.dump(config, f)  # JSON is YAML


def measure(label: str, cmd: list[str], scratch: str) -> dict:
    err = os.path.join(scratch, f"{label}.err")
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, err, *cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "DS_ACCELERATOR": "cpu"},
    ).stdout.split()
    rc, seconds, rss_kb = int(out[0]), float(out[1]), int(out[2])
    if rc != 0:
        with open(err) as f:
            sys.exit(f"{label}: {' '.join(cmd)} exited {rc}\n{f.read()[-3000:]}")
    return {"s": seconds, "rss_mb": rss_kb / 1024}


def run_size(n: int, scratch: str) -> dict:
    data, cache, runs = (os.path.join(scratch, f"n{n}", x) for x in ("data", "cache", "runs"))
    write_tasks(data, n)
    config = os.path.join(scratch, f"n{n}", "config.yaml")
    write_config(config, data, cache, runs)
    ift = [sys.executable, "-m", "ift"]
    row = {"n": n, "examples": n * EXAMPLES_PER_TASK}
    row["mix_cold"] = measure(f"mix_cold_{n}", [*ift, "mix", config], scratch)
    row["mix_warm"] = measure(f"mix_warm_{n}", [*ift, "mix", config], scratch)
    shutil.rmtree(cache)  # the train's cold start reads the files again too
    row["train_cold"] = measure(f"train_cold_{n}", [*ift, "train", config], scratch)
    row["train_warm"] = measure(f"train_warm_{n}", [*ift, "train", config], scratch)
    shutil.rmtree(os.path.join(scratch, f"n{n}"))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000], help="task counts N")
    p.add_argument("--scratch", help="folder for the task files and caches (default: a temporary one)")
    args = p.parse_args(argv)
    scratch = args.scratch or tempfile.mkdtemp(prefix="ift_scale_bench_")
    print(
        f"{'N':>6} {'examples':>9} | {'mix cold':>9} {'mix warm':>9} | {'train cold':>10} {'train warm':>10} | "
        f"{'us/example (mix, train cold)':>28} | {'peak RSS MB (mix, train)':>24}"
    )
    rows = []
    for n in args.sizes:
        r = run_size(n, scratch)
        rows.append(r)
        per = (1e6 * r["mix_cold"]["s"] / r["examples"], 1e6 * r["train_cold"]["s"] / r["examples"])
        rss = (
            max(r["mix_cold"]["rss_mb"], r["mix_warm"]["rss_mb"]),
            max(r["train_cold"]["rss_mb"], r["train_warm"]["rss_mb"]),
        )
        print(
            f"{n:>6} {r['examples']:>9} | {r['mix_cold']['s']:>8.1f}s {r['mix_warm']['s']:>8.1f}s | "
            f"{r['train_cold']['s']:>9.1f}s {r['train_warm']['s']:>9.1f}s | {per[0]:>13.1f} {per[1]:>14.1f} | "
            f"{rss[0]:>11.0f} {rss[1]:>12.0f}",
            flush=True,
        )
    by_n = {r["n"]: r for r in rows}
    print()
    checks = []
    if 1000 in by_n:
        checks.append(("ift mix at N=1,000 (cold) <= 10 s", by_n[1000]["mix_cold"]["s"], 10))
        checks.append(("warm ift train start at N=1,000 <= 20 s", by_n[1000]["train_warm"]["s"], 20))
    if 100 in by_n and 3000 in by_n:
        for key, what in (("mix_cold", "mix"), ("train_cold", "cold train")):
            ratio = (by_n[3000][key]["s"] / by_n[3000]["examples"]) / (by_n[100][key]["s"] / by_n[100]["examples"])
            checks.append((f"{what}: time per example at N=3,000 / N=100 <= 1.5", ratio, 1.5))
    if 3000 in by_n:
        peak = max(m["rss_mb"] for k, m in by_n[3000].items() if isinstance(m, dict))
        checks.append(("peak RSS at N=3,000 <= 2,048 MB", peak, 2048))
    for what, value, limit in checks:
        print(f"{'PASS' if value <= limit else 'FAIL'}  {what}: {value:.2f}")
    print(f"(task files, caches and logs under {scratch})" if args.scratch else "")
    return 0 if all(v <= lim for _, v, lim in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
