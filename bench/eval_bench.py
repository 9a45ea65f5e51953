#!/usr/bin/env python
"""Evaluation benchmark: `ift eval` throughput at 1 and 2 processes, and what length buckets save.

The demo's model shape (random weights: every row decodes all --max-new-tokens, the worst case for
the wasted-step count) and a byte-level BPE tokenizer of the built-in suite, saved as a Hugging Face
folder; the built-in held-out tasks (10 tasks x --limit examples, 0 and 2 shots mixed by running both).
Measured in this run, each as `ift eval` on the command line:
  1 process, prompts in task order (no buckets)  - the baseline
  1 process, bucketed by prompt length
  2 processes (--nproc-per-node 2), bucketed
Printed: examples/s, generated tokens/s, prompt padding fraction, and the ratios to the baseline;
the predictions of every variant are checked to be identical.

Run from the repo root:  python bench/eval_bench.py              (~2 min on 2 cores)
                         python bench/eval_bench.py --limit 8    (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


def make_model(folder: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ift.config import DataConfig, TaskSource
    from ift.data.sources import load_tasks
    from ift.model import train_bpe_tokenizer

    tasks = load_tasks(DataConfig(), 0, sources=[TaskSource(builtin="train"), TaskSource(builtin="heldout")])
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for t in tasks for r in t.dataset.select(range(50))]
    tok = train_bpe_tokenizer(texts, vocab_size=1024)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=len(tok),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def ift_eval(model: str, out: str, name: str, args, nproc: int = 1, bucket: bool = True) -> dict:
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": str(args.threads // nproc),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if not bucket:  # the baseline: the library call with bucket=False (no CLI flag turns buckets off)
        code = (
            "import sys; from ift.eval.evaluate import evaluate; "
            f"evaluate({model!r}, tasks='builtin:heldout', shots={args.shots}, "
            f"max_new_tokens={args.max_new_tokens},"
            f" limit={args.limit}, batch_size={args.batch_size}, out={out!r}, name={name!r}, bucket=False)"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [
            sys.executable,
            "-m",
            "ift",
            "eval",
            model,
            "--tasks",
            "builtin:heldout",
            "--shots",
            str(args.shots),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--limit",
            str(args.limit),
            "--batch-size",
            str(args.batch_size),
            "--out",
            out,
            "--name",
            name,
            "--nproc-per-node",
            str(nproc),
        ]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, f"{name}.json")) as f:
        return json.load(f)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=40, help="examples per held-out task")
    p.add_argument("--shots", type=int, default=2, help="exemplars per prompt (2: prompt lengths vary more)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all, split over the processes")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, out = os.path.join(tmp, "model"), os.path.join(tmp, "eval")
        make_model(model)
        runs = {
            "1 process, task order": ift_eval(model, out, "plain", args, bucket=False),
            "1 process, bucketed": ift_eval(model, out, "bucketed", args),
            "2 processes, bucketed": ift_eval(model, out, "two", args, nproc=2),
        }
    preds = {k: [(e["task"], e["index"], e["prediction"]) for e in r["examples"]] for k, r in runs.items()}
    same = len({json.dumps(v) for v in preds.values()}) == 1
    base = runs["1 process, task order"]["speed"]
    n = runs["1 process, bucketed"]["mean"]["n"]
    print(
        f"ift eval on builtin:heldout: {n} examples, {args.shots}-shot, batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens, {args.threads} CPU threads in all"
    )
    print(f"{'variant':<24} {'examples/s':>10} {'tokens/s':>9} {'padding':>8} {'vs baseline':>11}")
    for k, r in runs.items():
        s = r["speed"]
        print(
            f"{k:<24} {s['examples_per_s']:>10.2f} {s['tokens_per_s']:>9.1f} {100 * s['padding_frac']:>7.1f}% "
            f"{s['examples_per_s'] / base['examples_per_s']:>10.2f}x"
        )
    print(f"predictions identical across the three: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
