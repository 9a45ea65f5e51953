#!/usr/bin/env python
"""The GPU check: one command that proves ift's GPU path and measures it, sized to finish in under
8 minutes on one H100/H200-class GPU. It prints everything and ends with one PASS/FAIL line per check.

1. speed: `bench/train_bench.py` at ZeRO-2 and at ZeRO-3, bf16, a Llama-3.2-1B-shaped model built
   from config (random init, vocabulary 128,256: nothing is downloaded), packed rows of 4096 tokens
   from Super-NaturalInstructions (--data) or the built-in suite: `ift train` against a bare
   `deepspeed.initialize` loop and `transformers.Trainer` with the same DeepSpeed config on the same
   batches; tokens/s/GPU, MFU, peak GPU memory and the ratios. On one GPU, and on all visible GPUs
   when there are several.
2. resume: a run killed (SIGKILL) after step 9 and resumed from its step-6 checkpoint continues with
   the losses of an uninterrupted run (bf16 tolerance: GPU kernels are not bitwise deterministic).
3. export: the checkpoint to a Hugging Face folder, loaded back with from_pretrained on the GPU.
4. eval: `ift eval` on two tasks, generating on the GPU; with vLLM installed, the same with
   `--backend vllm` (examples/s beside hf's, predictions compared).
5. long context: `bench/long_context.py` at one length, 32k tokens of the 1B shape in one row at
   sequence parallelism 1 (tiled MLP, gradient checkpointing, ZeRO-3), and at 2 over two GPUs.

On a machine with PyTorch (CUDA), transformers, accelerate and pyarrow but none of ift's other
dependencies and no network, carry the wheels (bench/README.md, "The GPU check") and run:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 bench/gpu_check.py --data sni      # sni: a copy of shared/data/sni
`--smoke` runs the same steps with a tiny model for 3 steps on the CPU (CI runs it so it cannot rot).
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
SMOKE_PEAK_TFLOPS = 1.0  # a nominal CPU "peak" so that --smoke prints an MFU figure (meaningless on CPU)
# The resume/export/eval model: the 1B shape is measured in (1); these checks need a real GPU run, not size.
CHECK_MODEL = {
    "model_type": "llama",
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 128256,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}
SMOKE_MODEL = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 256,
}
results: list[tuple[str, bool, str]] = []


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, 3 steps, CPU: checks that the script runs")
    p.add_argument(
        "--data",
        help="Super-NaturalInstructions folder with train/ (default: ../shared/data/sni "
        "when present, else the built-in suite)",
    )
    p.add_argument("--peak-tflops", type=float, help="per-GPU peak bf16 TFLOP/s (default: from the device name)")
    p.add_argument("--steps", type=int, default=30, help="steps per method in the speed check (default 30)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--out", default="/tmp/ift_gpu_check", help="work folder (wiped first)")
    return p.parse_args()


def env(smoke: bool) -> dict:
    e = dict(
        os.environ,
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="disabled",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    if smoke:
        e["DS_ACCELERATOR"] = "cpu"
    return e


def run(cmd: list[str], smoke: bool, check: bool = True, extra_env: dict | None = None, quiet=False):
    print("$", " ".join(cmd), flush=True)
    began = time.perf_counter()
    done = subprocess.run(
        cmd,
        cwd=REPO,
        env={**env(smoke), **(extra_env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = done.stdout.splitlines()
    shown = [ln for ln in lines if "%|" not in ln]  # progress bars
    print("\n".join(shown[-25:] if quiet else shown), flush=True)
    print(f"  ({time.perf_counter() - began:.0f}s, exit {done.returncode})", flush=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{cmd[2] if len(cmd) > 2 else cmd[0]} exited {done.returncode}")
    return done


def record(name: str, ok: bool, detail: str) -> None:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def environment(args) -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    for mod in ("transformers", "deepspeed", "accelerate", "datasets", "flash_attn"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # report, do not fail: a missing module fails the step that needs it
            info[mod] = f"missing ({type(e).__name__})"
    if info["gpus"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported()
    print(json.dumps(info, indent=1), flush=True)
    return info


def peak_tflops(args, info) -> float:
    from ift.flops import peak_tflops as peak_of

    if args.peak_tflops:
        return args.peak_tflops
    if args.smoke:
        return SMOKE_PEAK_TFLOPS
    return peak_of(info.get("device", "")) or 0.0


def write_config(path, args, data, peak: float = 0.0, **train) -> str:
    import yaml

    model = SMOKE_MODEL if args.smoke else CHECK_MODEL
    tasks = (
        [{"path": os.path.join(data, "train", "*.jsonl"), "schema": "sni", "n": 40}]
        if data
        else [{"builtin": "train", "n": 40}]
    )
    cfg = {
        "run": {
            "name": os.path.basename(path).removesuffix(".yaml"),
            "output_dir": os.path.join(args.out, "runs"),
            "seed": 0,
        },
        "model": {"config": model, "tokenizer": os.path.join(args.out, "tokenizer")},
        "data": {
            "tasks": tasks,
            "template": "zero_shot",
            "max_seq_len": 128 if args.smoke else 2048,
            "cache_dir": os.path.join(args.out, "cache"),
            "on_bad_record": "skip",
        },
        "train": {
            "max_steps": 12,
            "micro_batch_size": 2,
            "lr": 3e-4,
            "warmup_steps": 2,
            "zero_stage": 3,
            "log_every": 1,
            "save_every": 6,
            "keep_last": 3,
            "peak_tflops": peak,
            **train,
        },
        "eval": {"max_new_tokens": 8, "limit": 8},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def make_tokenizer(args, data) -> str:
    """One BPE for every run (trained once on the data, at most the model's vocabulary)."""
    from ift.config import load_config
    from ift.data.sources import load_tasks
    from ift.model import corpus_texts, train_bpe_tokenizer

    out = os.path.join(args.out, "tokenizer")
    cfg_path = write_config(os.path.join(args.out, "tok.yaml"), args, data)
    cfg = load_config(cfg_path, ["model.tokenizer=null"])
    began = time.perf_counter()
    tok = train_bpe_tokenizer(
        corpus_texts(load_tasks(cfg.data, 0), limit_per_task=200), 8192 if not args.smoke else 400
    )
    tok.save_pretrained(out)
    print(f"tokenizer: {len(tok)} tokens in {time.perf_counter() - began:.0f}s -> {out}", flush=True)
    return out


def speed(args, data, gpus: int, tflops: float) -> None:
    for nproc in sorted({1, gpus}) if gpus else [1]:
        for stage in (2, 3):
            cmd = [
                sys.executable,
                os.path.join(HERE, "train_bench.py"),
                "--nproc",
                str(nproc),
                "--zero-stage",
                str(stage),
                "--rounds",
                "1",
                "--tokenizer",
                os.path.join(args.out, "tokenizer"),
                "--cache-dir",
                os.path.join(args.out, "cache"),
                "--out",
                os.path.join(args.out, f"speed_z{stage}"),
            ]
            if args.smoke:
                cmd += [
                    "--model",
                    "demo",
                    "--device",
                    "cpu",
                    "--steps",
                    "3",
                    "--warmup-steps",
                    "1",
                    "--seq-len",
                    "128",
                    "--examples-per-task",
                    "8",
                    "--micro-batch-size",
                    "2",
                ]
            else:
                cmd += [
                    "--model",
                    "llama-1b",
                    "--device",
                    "cuda",
                    "--steps",
                    str(args.steps),
                    "--warmup-steps",
                    "10",
                    "--seq-len",
                    "4096",
                    "--examples-per-task",
                    "200",
                    "--micro-batch-size",
                    str(args.micro_batch_size),
                    "--peak-tflops",
                    str(tflops),
                    "--threads",
                    "4",
                ]
            if data:
                cmd += ["--data", data]
            try:
                done = run(cmd, args.smoke, quiet=True)
                ratios = [ln for ln in done.stdout.splitlines() if ln.startswith(("ift / bare", "ift / Trainer"))]
                record(
                    f"speed ZeRO-{stage} x{nproc}", len(ratios) == 2, "; ".join(" ".join(r.split()) for r in ratios)
                )
            except RuntimeError as e:
                record(f"speed ZeRO-{stage} x{nproc}", False, str(e))


def long_context(args, gpus: int) -> None:
    """bench/long_context.py at one length: one 32k-token document per row of the Llama-3.2-1B shape
    at SP=1 on one GPU (tiled MLP, gradient checkpointing, the chunked loss, ZeRO-3), and at SP=2
    over two GPUs when there are two."""
    cmd = [
        sys.executable,
        os.path.join(HERE, "long_context.py"),
        "--out",
        os.path.join(args.out, "long"),
        "--steps",
        "3",
        "--sp",
        "1,2" if args.smoke or gpus > 1 else "1",
    ]
    if args.smoke:
        cmd += ["--model", "demo", "--device", "cpu", "--start-len", "256", "--max-len", "256"]
    else:
        cmd += [
            "--model",
            "llama-1b",
            "--device",
            "cuda",
            "--start-len",
            "32768",
            "--max-len",
            "32768",
            "--tiled-mlp",
            "--gradient-checkpointing",
            "--zero-stage",
            "3",
        ]
    try:
        done = run(cmd, args.smoke, quiet=True)
        rows = [ln.strip() for ln in done.stdout.splitlines() if ln.startswith("  SP=")]
        record("long context", bool(rows) and all("tok/s/device" in r for r in rows), "; ".join(rows))
    except RuntimeError as e:
        record("long context", False, str(e))


def losses(run_dir: str) -> dict[int, float]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def resume_export_eval(args, data, tflops: float) -> None:
    ift = [sys.executable, "-m", "ift"]
    runs = os.path.join(args.out, "runs")
    ref = write_config(os.path.join(args.out, "reference.yaml"), args, data, tflops)
    killed = write_config(os.path.join(args.out, "killed.yaml"), args, data, tflops)
    try:
        run(ift + ["train", ref], args.smoke, quiet=True)
        report_mfu(os.path.join(runs, "reference"), tflops, args.smoke)
        died = run(ift + ["train", killed], args.smoke, check=False, quiet=True, extra_env={"IFT_FAULT": "step@9"})
        assert died.returncode != 0, "the killed run did not die"
        run(ift + ["train", killed], args.smoke, quiet=True)
        a, b = losses(os.path.join(runs, "reference")), losses(os.path.join(runs, "killed"))
        tol = 1e-5 if args.smoke else 2e-2  # bf16 on GPU: kernels are not bitwise deterministic
        worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in range(7, 13))
        record(
            "resume",
            sorted(b) == list(range(1, 13)) and worst <= tol,
            f"steps 7-12 after a kill at step 9: max relative loss difference {worst:.2e} (tolerance {tol:g}); "
            f"reference {[round(a[s], 4) for s in range(7, 13)]}, resumed {[round(b[s], 4) for s in range(7, 13)]}",
        )
    except (RuntimeError, AssertionError, KeyError) as e:
        record("resume", False, str(e))
        return
    try:
        out = os.path.join(args.out, "export")
        run(ift + ["export", os.path.join(runs, "killed"), out], args.smoke)
        check_export(out, args.smoke)
    except (RuntimeError, AssertionError) as e:
        record("export", False, str(e))
    tasks, scores = _two_sni_tasks(data) if data else "builtin:reverse_word,builtin:uppercase_word", {}
    try:
        run(
            ift
            + [
                "eval",
                os.path.join(runs, "killed"),
                "--tasks",
                tasks,
                "--limit",
                "8",
                "--no-wandb",
                "--out",
                os.path.join(args.out, "eval"),
            ],
            args.smoke,
            quiet=True,
        )
        found = [f for f in os.listdir(os.path.join(args.out, "eval")) if f.endswith(".json")]
        scores = json.load(open(os.path.join(args.out, "eval", found[0]))) if found else {}
        record("eval", bool(found), f"{found} {json.dumps(scores)[:400]}")
    except (RuntimeError, AssertionError) as e:
        record("eval", False, str(e))
    eval_vllm(args, ift, os.path.join(runs, "killed"), tasks, scores)


def eval_vllm(args, ift: list[str], run_dir: str, tasks: str, hf: dict) -> None:
    """eval.backend vllm on the same prompts, when vLLM is importable (never on the CPU smoke run)."""
    import importlib.util

    if args.smoke or importlib.util.find_spec("vllm") is None:
        print("vllm: not installed here; the eval.backend vllm check is skipped", flush=True)
        return
    out = os.path.join(args.out, "eval_vllm")
    try:
        run(
            ift
            + [
                "eval",
                run_dir,
                "--tasks",
                tasks,
                "--limit",
                "8",
                "--no-wandb",
                "--backend",
                "vllm",
                "--out",
                out,
                "--name",
                "vllm",
            ],
            args.smoke,
            quiet=True,
        )
        with open(os.path.join(out, "vllm.json")) as f:
            v = json.load(f)
        same = sum(a["prediction"] == b["prediction"] for a, b in zip(v["examples"], hf.get("examples", [])))
        record(
            "eval_vllm",
            True,
            f"{v['speed']['examples_per_s']:.1f} examples/s (hf: "
            f"{hf.get('speed', {}).get('examples_per_s', float('nan')):.1f}); {same}/{len(v['examples'])} "
            f"predictions equal to hf's (bf16 kernels differ); mean {json.dumps(v['mean'])}",
        )
    except (RuntimeError, AssertionError, OSError) as e:
        record("eval_vllm", False, str(e))


def report_mfu(run_dir: str, tflops: float, smoke: bool) -> None:
    """ift's own MFU (metrics.jsonl: ift.flops' model FLOPs over the peak) of the check model's steps 3-12."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if r["step"] > 2]
    achieved = sum(r["tflops_per_device"] for r in rows) / len(rows)
    mfus = [r["mfu"] for r in rows if "mfu" in r]
    mfu = sum(mfus) / len(mfus) if mfus else None
    peak = f"{tflops:g} TFLOP/s" + (" (nominal, smoke)" if smoke else "")
    record(
        "mfu",
        mfu is not None and mfu > 0,
        f"{achieved:.3f} TFLOP/s per device over steps 3-12 of the check model, MFU "
        f"{'-' if mfu is None else f'{mfu:.2%}'} of {peak}",
    )


def _two_sni_tasks(data: str) -> str:
    names = sorted(t for t in os.listdir(os.path.join(data, "eval")) if t.endswith(".jsonl"))[:2]
    return ",".join(os.path.join(data, "eval", t) for t in names)


def check_export(folder: str, smoke: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cpu" if smoke else "cuda"
    config = json.load(open(os.path.join(folder, "config.json")))
    saved = config.get("dtype") or config.get("torch_dtype")  # the training dtype by default
    want = "float32" if smoke else "bfloat16"
    if saved != want:
        raise AssertionError(f"exported in {saved}, trained in {want}")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto").to(device)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("Reverse the word: hello\nOutput:", return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**ids).logits
        generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    ok = bool(torch.isfinite(logits).all()) and generated.shape[1] > ids["input_ids"].shape[1]
    record(
        "export",
        ok,
        f"from_pretrained on {logits.device}, {saved}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, finite logits, "
        f"generated {generated.shape[1] - ids['input_ids'].shape[1]} tokens",
    )


def main() -> int:
    args = parse_args()
    began = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    if args.smoke:
        os.environ["DS_ACCELERATOR"] = "cpu"
    sys.path.insert(0, REPO)
    info = environment(args)
    if not args.smoke and not info["gpus"]:
        print("error: no CUDA device visible (use --smoke on a CPU machine)", file=sys.stderr)
        return 2
    shared = os.path.join(REPO, "..", "shared", "data", "sni")
    data = os.path.abspath(args.data) if args.data else (os.path.abspath(shared) if os.path.isdir(shared) else None)
    print(f"data: {data or 'built-in suite'}", flush=True)
    make_tokenizer(args, data)
    tflops = peak_tflops(args, info)
    if not args.smoke and not tflops:
        print("note: unknown device peak; pass --peak-tflops for MFU", flush=True)
    speed(args, data, info["gpus"], tflops)
    resume_export_eval(args, data, tflops)
    long_context(args, info["gpus"])
    print(f"\ngpu_check: {time.perf_counter() - began:.0f}s in all")
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
