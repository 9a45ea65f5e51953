#!/usr/bin/env python
"""Data-pipeline benchmark: `ift` (load -> template -> tokenize -> mix -> pack) versus TRL's SFT
dataset preparation, on the same data with the same tokenizer.

Prints, in one run:
  * fill (non-padding tokens / token slots) of ift packing (PackedLoader rows), TRL's
    `pack_dataset(strategy="bfd")` on the same tokenized examples, and no packing (pad every
    example to seq_len, or to the longest of a micro-batch of 8);
  * end-to-end throughput (example tokens / s) of the ift pipeline with a cold cache and a warm
    cache, and of TRL's `SFTTrainer._prepare_dataset` (packing=True, packing_strategy="bfd");
  * the ratios and the targets (fill >= 99.5%, fill >= TRL BFD's, throughput >= 2x TRL's).

Run from the repo root:  python bench/data_bench.py            (~80 CPU-seconds: ~1.5 min on 2 idle cores)
Options:                 python bench/data_bench.py --help
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "sni", "train"))
DEFAULT_TOKENIZER = os.path.join(HERE, "tokenizer_sni")

# Every `datasets` cache of this benchmark lives in one temporary folder, so "cold" really is cold
# (JSON parsing, normalization and tokenization all run) and the user's ~/.cache is never touched.
_TMP = tempfile.mkdtemp(prefix="ift_data_bench_")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_TMP, "hf_default")
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # silences deepspeed's accelerator probe (imported via trl)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402

from ift.config import DataConfig, TaskSource  # noqa: E402
from ift.data import templates  # noqa: E402
from ift.data.loader import PackedLoader  # noqa: E402
from ift.data.mixture import task_rates  # noqa: E402
from ift.data.sources import load_tasks  # noqa: E402
from ift.data.tokenize import tokenize_tasks  # noqa: E402
from ift.model import corpus_texts, train_bpe_tokenizer  # noqa: E402

TARGET_FILL = 0.995
TARGET_SPEEDUP = 2.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark ift's data pipeline (fill and throughput) against TRL's SFT data preparation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="folder/file/glob of instruction data (one task per file). If it does not exist, the "
        "built-in suite TaskSource(builtin='train', n=2000) is used; pass 'builtin' to force it.",
    )
    p.add_argument("--seq-len", type=int, default=2048, help="packed row length / max_length")
    p.add_argument(
        "--num-proc",
        type=int,
        default=1,
        help="processes for tokenization: ift data.num_proc and TRL dataset_num_proc",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder: loaded if present, else a byte-level BPE is trained on the data and "
        f"saved there (default: {os.path.relpath(DEFAULT_TOKENIZER, REPO)} for file data; "
        "trained in memory for the built-in suite)",
    )
    p.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size when training the tokenizer")
    p.add_argument("--micro-batch", type=int, default=8, help="rows per micro-batch (loader step, pad-to-longest)")
    p.add_argument("--window", type=int, default=DataConfig().pack_window, help="ift data.pack_window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="timed runs of each pipeline (interleaved, each cold run on fresh caches); the best is "
        "reported, which damps noise from other processes on shared cores",
    )
    p.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        default=0,
        metavar="N",
        help="also run the cold ift pipeline under cProfile and print the top N functions",
    )
    p.add_argument("--no-trl", action="store_true", help="skip the TRL side (fill and throughput)")
    return p.parse_args(argv)


@contextlib.contextmanager
def hf_cache(name: str):
    """Point `datasets`' cache at a named folder under the benchmark's temp dir."""
    old = datasets.config.HF_DATASETS_CACHE
    path = os.path.join(_TMP, name)
    os.makedirs(path, exist_ok=True)
    datasets.config.HF_DATASETS_CACHE = path
    try:
        yield path
    finally:
        datasets.config.HF_DATASETS_CACHE = old


def quiet():
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    for name in ("transformers", "trl", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


# --------------------------------------------------------------------------- tokenizer


def get_tokenizer(args, source: TaskSource, data_cfg: DataConfig):
    from transformers import AutoTokenizer

    folder = args.tokenizer
    if folder is None and source.builtin is None:
        folder = DEFAULT_TOKENIZER
    if folder and os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        tok = AutoTokenizer.from_pretrained(folder)
        how = f"loaded from {os.path.relpath(folder, os.getcwd())}"
    else:
        t0 = time.perf_counter()
        with hf_cache("hf_tokenizer_training"):
            tasks = load_tasks(data_cfg, args.seed)
        tok = train_bpe_tokenizer(corpus_texts(tasks), args.vocab_size)
        how = f"trained (byte-level BPE, vocab {args.vocab_size}) in {time.perf_counter() - t0:.1f}s"
        if folder:
            tok.save_pretrained(folder)
            size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
            how += f", saved to {os.path.relpath(folder, os.getcwd())} ({size / 1e6:.2f} MB)"
        else:
            how += ", in memory"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, how


# --------------------------------------------------------------------------- ift


class RecordingLoader(PackedLoader):
    """PackedLoader that also remembers the rows it hands out (to feed TRL the same examples)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.taken: list[list[tuple[int, int]]] = []

    def _take_rows(self, n):
        rows = super()._take_rows(n)
        self.taken.extend(rows)
        return rows


def make_loader(tt, tok, args, *, packing: bool, record: bool = False):
    rates = task_rates(DataConfig().mixture, {t.name: len(t) for t in tt})
    cls = RecordingLoader if record else PackedLoader
    return cls(
        tt,
        rates,
        seed=args.seed,
        seq_len=args.seq_len,
        window=args.window,
        packing=packing,
        micro_batch_size=args.micro_batch,
        grad_accum=1,
        train_on_prompt=False,
        pad_id=tok.pad_token_id,
    )


def one_pass(loader, n_examples: int) -> dict:
    """Step the loader until one pass worth of examples (the data set's size) has been consumed."""
    steps = tokens = slots = 0
    while loader.examples_drawn < n_examples:
        s = loader.next_step()
        steps += 1
        tokens += s.tokens
        slots += s.slots
    return {
        "steps": steps,
        "rows": steps * loader.rows_per_step,
        "tokens": tokens,
        "slots": slots,
        "examples": loader.examples_drawn,
    }


def cpu_time() -> float:
    """CPU seconds of this process and of its reaped children (datasets' num_proc workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_ift(args, source: TaskSource, tok, cache: str, hf: str, record: bool = False) -> dict:
    """The whole ift pipeline: load_tasks -> tokenize_tasks (cache `cache`) -> one loader pass."""
    data = DataConfig(
        tasks=[source], max_seq_len=args.seq_len, num_proc=args.num_proc, cache_dir=cache, on_bad_record="skip"
    )
    out = {}
    with hf_cache(hf):
        c0, t0 = cpu_time(), time.perf_counter()
        tasks = load_tasks(data, args.seed)
        t1 = time.perf_counter()
        tt = tokenize_tasks(tasks, tok, data, args.seed)
        t2 = time.perf_counter()
        loader = make_loader(tt, tok, args, packing=True, record=record)
        n_examples = sum(len(t) for t in tt)
        p = one_pass(loader, n_examples)
        t3, c3 = time.perf_counter(), cpu_time()
    out.update(
        p,
        tasks=tasks,
        cpu=c3 - c0,
        tt=tt,
        loader=loader,
        n_examples=n_examples,
        total_tokens=int(sum(int(t.lengths.sum()) for t in tt)),
        t_load=t1 - t0,
        t_tokenize=t2 - t1,
        t_pack=t3 - t2,
        t_total=t3 - t0,
        truncated=sum(t.counts["truncated"] for t in tt),
        dropped=sum(t.counts["dropped"] for t in tt),
    )
    return out


# --------------------------------------------------------------------------- TRL


def trl_bfd_fill(tt, rows, seq_len: int) -> dict:
    """trl.pack_dataset(strategy="bfd") on exactly the examples (and token ids) of ift's rows."""
    from trl import pack_dataset

    per_task = {}
    for t in {t for row in rows for t, _ in row}:
        per_task[t] = [tt[t].ids(e).tolist() for e in range(len(tt[t]))]
    ids = [per_task[t][int(e)] for row in rows for t, e in row]
    ds = datasets.Dataset.from_dict({"input_ids": ids})
    t0 = time.perf_counter()
    packed = pack_dataset(ds, seq_length=seq_len, strategy="bfd")
    dt = time.perf_counter() - t0
    tokens = int(sum(sum(x) for x in packed["seq_lengths"]))
    return {
        "examples": len(ids),
        "rows": len(packed),
        "tokens": tokens,
        "slots": len(packed) * seq_len,
        "fill": tokens / (len(packed) * seq_len),
        "t": dt,
    }


def prompt_completion_dataset(tasks) -> datasets.Dataset:
    """The same rendered zero-shot prompts/targets ift tokenizes, as a TRL prompt-completion dataset."""
    prompts, completions = [], []
    for task in tasks:
        d = task.dataset
        for ins, inp, out, rat in zip(d["instruction"], d["input"], d["output"], d["rationale"]):
            p, c = templates.render({"instruction": ins, "input": inp, "output": out, "rationale": rat}, "zero_shot")
            prompts.append(p)
            completions.append(c)
    return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})


def minimal_sft_trainer(tok, args, sample: datasets.Dataset):
    """A real SFTTrainer around a tiny random Llama (nothing downloaded), for its _prepare_dataset."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=args.seq_len,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    sft_args = SFTConfig(
        output_dir=os.path.join(_TMP, "trl_out"),
        packing=True,
        packing_strategy="bfd",
        max_length=args.seq_len,
        dataset_num_proc=args.num_proc if args.num_proc > 1 else None,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=args.micro_batch,
        seed=args.seed,
    )
    # completion_only_loss is left at its default (None -> True for a prompt-completion dataset).
    return SFTTrainer(model=model, args=sft_args, train_dataset=sample, processing_class=tok)


def run_trl_prepare(args, tok, tasks, run: int = 0) -> dict:
    t0 = time.perf_counter()
    ds = prompt_completion_dataset(tasks)
    t_build = time.perf_counter() - t0
    trainer = minimal_sft_trainer(tok, args, ds.select(range(min(8, len(ds)))))
    with hf_cache(f"hf_trl{run}"):
        c0, t0 = cpu_time(), time.perf_counter()
        packed = trainer._prepare_dataset(ds, tok, trainer.args, trainer.args.packing, None, "train")
        t_prep, cpu = time.perf_counter() - t0, cpu_time() - c0
    tokens = int(sum(sum(x) for x in packed["seq_lengths"]))
    return {
        "examples": len(ds),
        "rows": len(packed),
        "tokens": tokens,
        "t_build": t_build,
        "t": t_prep,
        "cpu": cpu,
        "completion_only_loss": trainer.completion_only_loss,
        "padding_free": trainer.padding_free,
        "fill": tokens / (len(packed) * args.seq_len),
    }


# --------------------------------------------------------------------------- no packing


def padding_fills(tt, tok, args, n_examples: int) -> dict:
    lengths = np.concatenate([t.lengths for t in tt])
    pad_max = lengths.sum() / (len(lengths) * args.seq_len)
    # The unpacked loader's own row stream, one micro-batch at a time, each padded to its longest row (the
    # slots PackedLoader.next_step counts for packing=False); rows are not collated, only measured.
    loader = make_loader(tt, tok, args, packing=False)
    tokens = slots = n_rows = 0
    while loader.examples_drawn < n_examples:
        rows = loader._take_rows(args.micro_batch)
        lens = [int(tt[t].lengths[e]) for row in rows for t, e in row]
        tokens, slots, n_rows = tokens + sum(lens), slots + len(rows) * max(lens), n_rows + len(rows)
    return {
        "pad_max": float(pad_max),
        "pad_longest": tokens / slots,
        "examples": loader.examples_drawn,
        "rows": n_rows,
        "max_len": int(lengths.max()),
        "mean_len": float(lengths.mean()),
    }


# --------------------------------------------------------------------------- output


def pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(r):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    print(fmt(header))
    print(line)
    for r in rows:
        print(fmt(r))


def profile_cold(args, source, tok, top: int):
    prof = cProfile.Profile()
    prof.enable()
    r = run_ift(args, source, tok, os.path.join(_TMP, "ift_cache_prof"), "hf_prof")
    prof.disable()
    print(
        f"\n== cProfile of a cold ift run ({r['t_total']:.1f}s under the profiler; "
        f"load {r['t_load']:.1f}s, tokenize {r['t_tokenize']:.1f}s, pack {r['t_pack']:.1f}s)"
    )
    for key in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).strip_dirs().sort_stats(key).print_stats(top)
        text = s.getvalue()
        start = text.find("   ncalls")
        print(f"-- top {top} by {key}")
        print(text[start:].rstrip())


def load_avg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv=None):
    args = parse_args(argv)
    quiet()
    if args.num_proc > 1:  # forked tokenizers disable their thread pool anyway; this just skips the warning
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    if args.data != "builtin" and (os.path.exists(args.data) or any(c in args.data for c in "*?[")):
        source = TaskSource(path=os.path.abspath(args.data))
        data_desc = os.path.relpath(os.path.abspath(args.data), REPO)
        warmup_source = TaskSource(path=_first_file(source.path))
    else:
        from ift.data import builtin

        source = TaskSource(builtin="train", n=2000)
        data_desc = "built-in suite TaskSource(builtin='train', n=2000)"
        if args.data != "builtin":
            data_desc += f" ({args.data} not found)"
        warmup_source = TaskSource(builtin=builtin.task_names("train")[0], n=50)
    data_cfg = DataConfig(tasks=[source], max_seq_len=args.seq_len, on_bad_record="skip")

    import transformers
    import trl

    print("== ift data benchmark")
    print(f"data       : {data_desc}")
    tok, how = get_tokenizer(args, source, data_cfg)
    print(f"tokenizer  : {how}; {len(tok)} tokens, eos={tok.eos_token!r} pad={tok.pad_token!r}")
    print(
        f"settings   : seq_len={args.seq_len} num_proc={args.num_proc} micro_batch={args.micro_batch} "
        f"pack_window={args.window} seed={args.seed} template=zero_shot truncation={data_cfg.truncation} "
        f"on_bad_record=skip repeat={args.repeat}"
    )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"machine    : {os.cpu_count()} cores (affinity {affinity}), load average {load_avg()}")
    print(
        f"versions   : python {sys.version.split()[0]}, datasets {datasets.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}"
    )

    # Warm-up on throwaway caches: first-call imports (json builder, arrow writers) are not cache effects.
    run_ift(args, warmup_source, tok, os.path.join(_TMP, "ift_cache_warmup"), "hf_warmup")

    colds, warms, trls = [], [], []
    for r in range(max(1, args.repeat)):
        cache = os.path.join(_TMP, f"ift_cache{r}")  # fresh: nothing tokenized or loaded yet
        colds.append(run_ift(args, source, tok, cache, f"hf_ift{r}", record=(r == 0)))
        warms.append(run_ift(args, source, tok, cache, f"hf_ift{r}"))  # same caches: warm
        if not args.no_trl:
            trls.append(run_trl_prepare(args, tok, colds[0]["tasks"], r))
        for x in colds[-1:] + warms[-1:]:  # keep only what the report needs
            if x is not colds[0]:
                x.pop("tasks"), x.pop("tt"), x.pop("loader")
    first = colds[0]
    cold = min(colds, key=lambda x: x["t_total"])
    warm = min(warms, key=lambda x: x["t_total"])
    trl_prep = min(trls, key=lambda x: x["t"]) if trls else None

    tt, n_ex = first["tt"], first["n_examples"]
    ift_fill = first["tokens"] / first["slots"]
    used_rows = first["loader"].taken
    assert len(used_rows) == first["rows"]
    pad = padding_fills(tt, tok, args, n_ex)
    trl_fill = None if args.no_trl else trl_bfd_fill(tt, used_rows, args.seq_len)

    # ------------------------------------------------------------------ report
    skipped = sum(sum(t.skipped.values()) for t in first["tasks"])
    print(
        f"\nexamples   : {n_ex} in {len(tt)} tasks; {first['total_tokens']} tokens (ift tokenizer); "
        f"length mean {pad['mean_len']:.0f}, max {pad['max_len']}; truncated {first['truncated']}, "
        f"dropped {first['dropped']}; bad records skipped {skipped}"
    )

    print(f"\n== Fill (non-padding tokens / token slots), seq_len {args.seq_len}")
    rows = [
        [
            "ift packing (PackedLoader, one pass)",
            first["examples"],
            first["rows"],
            first["tokens"],
            first["slots"],
            f"{100 * ift_fill:.2f}%",
        ]
    ]
    if trl_fill:
        rows.append(
            [
                "TRL pack_dataset bfd (same examples/ids)",
                trl_fill["examples"],
                trl_fill["rows"],
                trl_fill["tokens"],
                trl_fill["slots"],
                f"{100 * trl_fill['fill']:.2f}%",
            ]
        )
    rows.append(
        [
            "no packing, pad to seq_len",
            n_ex,
            n_ex,
            first["total_tokens"],
            n_ex * args.seq_len,
            f"{100 * pad['pad_max']:.2f}%",
        ]
    )
    rows.append(
        [
            f"no packing, pad to longest of {args.micro_batch}",
            pad["examples"],
            pad["rows"],
            "",
            "",
            f"{100 * pad['pad_longest']:.2f}%",
        ]
    )
    table(rows, ["pipeline", "examples", "rows", "tokens", "slots", "fill"])
    if trl_prep:
        print(
            f"(TRL _prepare_dataset's own BFD over all {trl_prep['examples']} examples: "
            f"{100 * trl_prep['fill']:.2f}% in {trl_prep['rows']} rows)"
        )

    best = f"best of {len(colds)}" if len(colds) > 1 else "one run"
    print(
        f"\n== End-to-end throughput ({best}; tokens = total example tokens processed; wall = perf_counter, "
        "cpu = CPU seconds incl. worker processes)"
    )
    rows = []
    for name, r in (("ift cold cache", cold), ("ift warm cache", warm)):
        rows.append(
            [
                name,
                f"{r['t_load']:.2f}",
                f"{r['t_tokenize']:.2f}",
                f"{r['t_pack']:.2f}",
                f"{r['t_total']:.2f}",
                f"{r['cpu']:.2f}",
                r["total_tokens"],
                f"{r['total_tokens'] / r['t_total']:,.0f}",
                f"{r['total_tokens'] / r['cpu']:,.0f}",
            ]
        )
    if trl_prep:
        rows.append(
            [
                "TRL SFTTrainer._prepare_dataset",
                "-",
                "-",
                "-",
                f"{trl_prep['t']:.2f}",
                f"{trl_prep['cpu']:.2f}",
                trl_prep["tokens"],
                f"{trl_prep['tokens'] / trl_prep['t']:,.0f}",
                f"{trl_prep['tokens'] / trl_prep['cpu']:,.0f}",
            ]
        )
    table(
        rows, ["pipeline", "load s", "tokenize s", "pack s", "wall s", "cpu s", "tokens", "tokens/s", "tokens/cpu-s"]
    )
    if len(colds) > 1:
        runs = lambda xs, k: ", ".join(f"{x[k]:.1f}" for x in xs)  # noqa: E731
        print(
            f"all runs, wall s: ift cold [{runs(colds, 't_total')}], ift warm [{runs(warms, 't_total')}]"
            + (f", TRL [{runs(trls, 't')}]" if trls else "")
        )
    print(
        "ift      = load_tasks (JSON -> canonical) + tokenize_tasks (render zero_shot + tokenize; fresh cache dir) "
        f"+ PackedLoader one pass ({first['steps']} steps x {args.micro_batch} rows, collated)"
    )
    if trl_prep:
        print(
            "TRL      = a real minimal SFTTrainer (tiny random Llama, built untimed), then timed "
            "trainer._prepare_dataset(dataset, tokenizer, args, packing=True, None, 'train'): add EOS -> tokenize "
            "-> labels -> pack_dataset(bfd)"
        )
        print(
            f"           SFTConfig(packing=True, packing_strategy='bfd', max_length={args.seq_len}, "
            f"completion_only_loss=default -> {trl_prep['completion_only_loss']}, padding_free -> "
            f"{trl_prep['padding_free']}, dataset_num_proc={args.num_proc if args.num_proc > 1 else None})"
        )
        print(
            f"           input: prompt/completion dataset of the same rendered zero-shot prompts/targets, built "
            f"untimed from the loaded tasks in {trl_prep['t_build']:.2f}s "
            "(ift's time includes loading and rendering)"
        )
        if trl_prep["tokens"] != first["total_tokens"]:
            print(
                f"           note: token totals differ (TRL {trl_prep['tokens']} vs ift {first['total_tokens']}): "
                "TRL's bfd truncates overlong examples at the end, ift truncates the prompt on the left"
            )

    print("\n== Ratios and targets")
    rows = [["ift fill >= 99.5%", f"{100 * ift_fill:.2f}%", "99.50%", pf(ift_fill >= TARGET_FILL)]]
    if trl_fill and trl_prep:
        trl_tps = trl_prep["tokens"] / trl_prep["t"]
        sp_cold = (cold["total_tokens"] / cold["t_total"]) / trl_tps
        sp_warm = (warm["total_tokens"] / warm["t_total"]) / trl_tps
        cpu_cold = (cold["total_tokens"] / cold["cpu"]) / (trl_prep["tokens"] / trl_prep["cpu"])
        rows += [
            [
                "ift fill / TRL BFD fill (>= 1)",
                f"{ift_fill / trl_fill['fill']:.4f}",
                "1.0000",
                pf(ift_fill >= trl_fill["fill"]),
            ],
            [
                "ift / TRL throughput, cold cache (>= 2x)",
                f"{sp_cold:.2f}x",
                f"{TARGET_SPEEDUP:.2f}x",
                pf(sp_cold >= TARGET_SPEEDUP),
            ],
            [
                "ift / TRL throughput, warm cache (>= 2x)",
                f"{sp_warm:.2f}x",
                f"{TARGET_SPEEDUP:.2f}x",
                pf(sp_warm >= TARGET_SPEEDUP),
            ],
            [
                "(cpu time) ift / TRL tokens per cpu-s, cold",
                f"{cpu_cold:.2f}x",
                f"{TARGET_SPEEDUP:.2f}x",
                pf(cpu_cold >= TARGET_SPEEDUP),
            ],
        ]
    table(rows, ["target", "value", "target", "result"])

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        peak = max(os.getloadavg()[:2])
    except OSError:
        peak = 0.0
    if peak > cores:
        print(
            f"note: load average {peak:.1f} > {cores} cores: other processes shared the CPUs, so wall-clock figures "
            "and their ratios are noisy; the cpu-time ratio is the steadier comparison."
        )

    if args.profile:
        profile_cold(args, source, tok, args.profile)
    print(f"\nload average at the end {load_avg()}; benchmark wall time {time.perf_counter() - t_start:.1f}s")


def _first_file(path: str) -> str:
    import glob

    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.jsonl")) + glob.glob(os.path.join(path, "*.json")))
    else:
        files = sorted(glob.glob(path))
    return files[0] if files else path


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
