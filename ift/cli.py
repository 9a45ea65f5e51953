"""`ift` command line: each verb is a thin function over the library."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ift.config import UserError, load_config

log = logging.getLogger("ift")


def _config_and_overrides(args, extras: list[str]):
    bad = [e for e in extras if "=" not in e or e.startswith("-")]
    if bad:
        raise UserError(f"unrecognized argument(s): {' '.join(bad)} (overrides look like key.sub=value)")
    return load_config(args.config, extras)


def cmd_mix(args, extras) -> None:
    from ift.data.mixture import mixture_table, plot_rates, task_rates
    from ift.data.sources import load_tasks

    cfg = _config_and_overrides(args, extras)
    tasks = load_tasks(cfg.data, cfg.run.seed)
    rates = task_rates(cfg.data.mixture, {t.name: len(t) for t in tasks})
    t = cfg.train
    planned = t.max_steps * t.micro_batch_size * t.grad_accum * args.world_size
    rows = mixture_table(tasks, rates, cfg.data.mixture, planned, args.samples, cfg.run.seed)
    width = max(12, *(len(r["task"]) for r in rows))
    realized = f"  {'realized':>8}" if args.samples else ""
    print(f"{'task':<{width}}  {'schema':<17} {'examples':>8} {'skipped':>7} {'cap':>6} {'rate':>7} {'epochs':>7}{realized}")
    for r in rows:
        cap = "-" if r["cap"] is None else str(r["cap"])
        real = f"  {r['realized']:>8.4f}" if args.samples else ""
        print(f"{r['task']:<{width}}  {r['schema']:<17} {r['examples']:>8} {r['skipped']:>7} {cap:>6} "
              f"{r['rate']:>7.4f} {r['epochs']:>7.2f}{real}")
    examples, skipped = sum(r["examples"] for r in rows), sum(r["skipped"] for r in rows)
    print(f"{len(rows)} tasks, {examples + skipped} records: {examples} examples, {skipped} bad records skipped")
    for t in tasks:
        for reason, n in t.skipped.items():
            print(f"  skipped in {t.name}: {n} x {reason}")
    print(f"epochs: over train.max_steps x global batch = {planned} sequences at world size {args.world_size} "
          "(one example per sequence; packing fits several)")
    if args.plot:
        if not args.samples:
            raise UserError("--plot needs --samples N to show realized rates")
        plot_rates(rows, args.plot)
        print(f"plot: {args.plot}")


def cmd_prepare(args, extras) -> None:
    from ift.data.prepare import prepare

    cfg = _config_and_overrides(args, extras)
    done = prepare(cfg)
    print(f"prepared {done['examples']:,} examples ({done['tokens']:,} tokens) of {done['tasks']} task(s) "
          f"in {done['seconds']:.1f} s")
    print(f"cache: {done['cache_dir']} ({done['cache_bytes'] / 2**20:,.1f} MiB); tokenizer: {cfg.run_dir}/tokenizer")
    print(f"`ift train {args.config}` (same data settings and data.cache_dir) now starts from this cache")


def cmd_train(args, extras) -> None:
    cfg = _config_and_overrides(args, extras)
    if args.only_task:
        from ift.config import MixtureConfig

        # Single-task baseline: same model, optimizer, steps and global batch (so the same token
        # budget with packing); only the mixture shrinks to one task.
        cfg.data.mixture = MixtureConfig()
        if not any(o.startswith("run.name=") for o in extras):
            cfg.run.name = f"{cfg.run.name}-ft-{args.only_task}"
    if (args.nproc_per_node > 1 or args.max_restarts) and "RANK" not in os.environ:
        from ift.engine import deepspeed_config

        deepspeed_config(cfg, args.nproc_per_node)  # a config-file conflict fails here once, not in every rank
        code = launch_torchrun(args.nproc_per_node, args.argv, args.max_restarts)
        if code:
            raise SystemExit(code)
        return
    from ift.train import train

    train(cfg, only_task=args.only_task)


def launch_torchrun(nproc: int, argv: list[str], max_restarts: int = 0) -> int:
    """Re-run this same command under torch.distributed.run with N local processes. When a worker
    dies, torchrun ends the others; then, up to max_restarts times, a fresh torchrun starts them
    all again and they resume from the newest valid checkpoint (train.resume: auto). (torchrun's
    own --max-restarts re-forms the group on the old rendezvous store, where DeepSpeed's new_group
    can read a dead rank's address: seen here as gloo "connectFullMesh ... Connection refused".)"""
    import subprocess

    from ift.engine import free_port

    code = 0
    for attempt in range(max_restarts + 1):
        if attempt:
            log.warning("restart %d of %d after exit code %d: resuming from the newest valid checkpoint",
                        attempt, max_restarts, code)
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               f"--master-port={free_port()}", "-m", "ift", *argv]
        code = subprocess.call(cmd, env={**os.environ, "IFT_RESTART_COUNT": str(attempt)})
        if code == 0:
            break
    return code


def cmd_export(args, extras) -> None:
    if extras:
        raise UserError(f"unrecognized argument(s): {' '.join(extras)}")
    from ift.export import export_checkpoint

    print(f"exported to {export_checkpoint(args.source, args.out_dir)}")


def _user_errors(fn):
    """The report raises ValueError for bad inputs; show those as user errors."""
    def run(args, extras):
        try:
            return fn(args, extras)
        except ValueError as e:
            raise UserError(str(e)) from None
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ift", description="Instruction fine-tuning (and single-task fine-tuning) on DeepSpeed ZeRO.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, help, fn, config=True):
        sp = sub.add_parser(name, help=help, description=help)
        if config:
            sp.add_argument("config", help="YAML run config; then key.sub=value overrides")
        sp.set_defaults(fn=fn)
        return sp

    tr = verb("train", "train a model (instruction or single-task fine-tuning)", cmd_train)
    tr.add_argument("--nproc-per-node", type=int, default=1, help="local processes (torchrun)")
    tr.add_argument("--only-task", help="single-task fine-tune baseline on this task, same budget")
    tr.add_argument("--max-restarts", type=int, default=0,
                    help="restart all local processes up to K times after a crash, from the last valid checkpoint")
    from ift.slurm import add_submit_args, cmd_submit
    add_submit_args(verb("submit", "submit a training job to Slurm", cmd_submit))
    verb("prepare", "load, render and tokenize the run's data into data.cache_dir ahead of training", cmd_prepare)
    m = verb("mix", "show the task mixture: examples, rates, epochs, realized sampling", cmd_mix)
    m.add_argument("--samples", type=int, default=0, help="draw N examples and show realized fractions")
    m.add_argument("--plot", help="write a PNG bar chart of target vs realized rates")
    m.add_argument("--world-size", type=int, default=1, help="data-parallel ranks for the epochs column")
    from ift.eval.evaluate import add_eval_args, cmd_eval
    from ift.eval.report import add_compare_args, cmd_compare
    add_eval_args(verb("eval", "evaluate a run or model on (held-out) tasks", cmd_eval, config=False))
    add_compare_args(verb("compare", "compare evaluation results of several runs", _user_errors(cmd_compare), config=False))
    ex = verb("export", "export a checkpoint to a Hugging Face folder", cmd_export, config=False)
    ex.add_argument("source", help="run directory or checkpoint folder")
    ex.add_argument("out_dir", help="output Hugging Face folder")
    return p


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not the one at set-up (so a
    caller that swaps sys.stderr, as tests do, never leaves it writing to a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[_CurrentStderr()], force=True)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args, extras = build_parser().parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.fn(args, extras)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
