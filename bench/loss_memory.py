#!/usr/bin/env python
"""Peak memory of the loss: full logits (what a plain `model(...).logits` + cross-entropy does)
versus ift's loss (final hidden states at target positions only, projected and scored a chunk at
a time, each chunk recomputed in backward: ift.model.target_losses), side by side in one run.

Model: a 128,256-token vocabulary (Llama 3's) on a narrow, shallow Llama (hidden 64, 1 layer) so
that it runs on 2 CPU cores; fp32 weights (bf16 matmuls are slow on these CPUs);
micro-batch 2 x seq 4096 packed rows in which about 30%
of positions are targets (as in Super-NaturalInstructions: long instructions, short answers).

Each variant runs in a fresh subprocess: peak = the process's peak resident memory during one
forward + backward of the loss, minus its resident memory just before (model and batch built).
Also checks that both give the same loss (fp32) (and the same gradient of the output projection), and
sweeps train.loss_chunk to show the memory/time trade that picked the default.

Target: ift's peak >= 4x lower than full logits, identical loss values.

Run from the repo root:   python bench/loss_memory.py            (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VOCAB, HIDDEN, SEQ, BATCH, TARGET_FRAC = 128_256, 64, 4096, 2, 0.30


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(seed: int = 0):
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ift.data.packing import collate, prompt_mask

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).float().train()  # fp32: bf16 matmuls are slow on these CPUs
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(BATCH):  # examples of 200-600 tokens, 70% prompt, filling each row
        row, used = [], 0
        while True:
            n = int(rng.integers(200, 600))
            if used + n > SEQ:
                break
            row.append((rng.integers(3, VOCAB, size=n), prompt_mask(n, int(n * (1 - TARGET_FRAC))), 0))
            used += n
        rows.append(row)
    return model, collate(rows, SEQ, pad_id=0, train_on_prompt=False)


def measure(variant: str, chunk: int) -> dict:
    import torch
    import torch.nn.functional as F

    from ift.model import target_losses

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, batch = build()
    before = rss_mib()
    began = time.perf_counter()
    if variant == "full":
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        losses = (
            F.cross_entropy(
                logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="none"
            )
            .flatten()
            .index_select(0, batch["target_index"])
        )
    else:
        losses = target_losses(model, batch, chunk)
    losses.sum().backward()
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    grad = model.lm_head.weight.grad.float()
    return {
        "variant": variant,
        "chunk": chunk,
        "peak_mib": peak - before,
        "seconds": seconds,
        "targets": int(batch["target_index"].numel()),
        "positions": int(batch["labels"].numel()),
        "loss_sum": float(losses.detach().double().sum()),
        "grad_norm": float(grad.norm()),
        "losses": losses.detach().double().tolist(),
    }


def run_child(variant: str, chunk: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--chunk", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", choices=["full", "ift"])
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--chunks", default="256,1024,4096", help="loss_chunk values to sweep")
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.chunk)))
        return
    full = run_child("full", 0)
    print(
        f"model: vocab {VOCAB}, hidden {HIDDEN}, fp32; batch {BATCH} x {SEQ}; "
        f"{full['targets']} targets of {full['positions']} positions ({full['targets'] / full['positions']:.0%})"
    )
    print(f"{'loss':<18}{'peak MiB':>10}{'seconds':>9}{'max |dloss|':>13}{'grad rel diff':>15}{'peak ratio':>12}")
    print(f"{'full logits':<18}{full['peak_mib']:>10.0f}{full['seconds']:>9.2f}{'-':>13}{'-':>15}{'1.0x':>12}")
    rows = []
    for chunk in [int(c) for c in args.chunks.split(",")]:
        ours = run_child("ift", chunk)
        diff = max(abs(a - b) for a, b in zip(ours["losses"], full["losses"]))
        grad = abs(ours["grad_norm"] - full["grad_norm"]) / full["grad_norm"]
        ratio = full["peak_mib"] / ours["peak_mib"]
        rows.append((chunk, ratio, diff))
        print(
            f"{'ift chunk ' + str(chunk):<18}{ours['peak_mib']:>10.0f}{ours['seconds']:>9.2f}{diff:>13.2e}"
            f"{grad:>15.2e}{ratio:>11.1f}x"
        )
    from ift.config import TrainConfig

    default = next((r for r in rows if r[0] == TrainConfig().loss_chunk), rows[0])
    verdict = "PASS" if default[1] >= 4 and default[2] < 1e-5 else "FAIL"
    print(
        f"{verdict}: ift (loss_chunk={default[0]}) peak {default[1]:.1f}x lower than full logits "
        f"(target >= 4x), max loss difference {default[2]:.1e}"
    )


if __name__ == "__main__":
    main()
