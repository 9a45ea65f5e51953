"""`ift` command line: every verb's argument parser, and each verb a thin function over the
library. Also the entry of a task of slurm/train.sbatch (`slurm_task_main`, launch/slurm_entry.py);
the batch scripts' other command, `python -m ift.crash_requeue`, parses its own arguments."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ift import console
from ift.config import load_config
from ift.errors import EXIT_RUN_ERROR, EXIT_USER_ERROR, RunError, UserError
from ift.logs import setup_logging

log = logging.getLogger(__name__)


def check_overrides(overrides: list[str]) -> None:
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        raise UserError(f"unrecognized argument(s): {' '.join(bad)} (overrides look like key.sub=value)")


def only_task_override(task: str | None) -> list[str]:
    """`--only-task T` is the override data.only_task=T (JSON-quoted: YAML keeps it a string)."""
    return [f"data.only_task={json.dumps(task)}"] if task else []


def _config_and_overrides(args, extras: list[str]):
    check_overrides(extras)
    return load_config(args.config, [*extras, *only_task_override(getattr(args, "only_task", None))])


def cmd_mix(args, extras) -> None:
    from ift.data.mixture import mixture_table, plot_rates, task_rates
    from ift.data.sources import load_tasks

    cfg = _config_and_overrides(args, extras)
    tasks = load_tasks(cfg.data, cfg.run.seed)
    rates = task_rates(cfg.data.mixture, {t.name: len(t) for t in tasks})
    t = cfg.train
    planned = t.max_steps * t.micro_batch_size * t.grad_accum * args.world_size
    rows = mixture_table(tasks, rates, cfg.data.mixture, planned, args.samples, cfg.run.seed)
    console.print_mixture(rows, tasks, planned, args.world_size, realized=bool(args.samples))
    if args.plot:
        if not args.samples:
            raise UserError("--plot needs --samples N to show realized rates")
        plot_rates(rows, args.plot)
        print(f"plot: {args.plot}")


def cmd_prepare(args, extras) -> None:
    from ift.data.prepare import prepare
    from ift.rundir import RunDir

    cfg = _config_and_overrides(args, extras)
    console.print_prepared(prepare(cfg), RunDir(cfg.run_dir).tokenizer, args.config)


def cmd_train(args, extras) -> None:
    cfg = _config_and_overrides(args, extras)
    if (args.nproc_per_node > 1 or args.max_restarts) and "RANK" not in os.environ:
        from ift import sequence_parallel
        from ift.launch.local import launch_torchrun

        sequence_parallel.check(cfg, args.nproc_per_node)  # fails here once, not in every rank
        code = launch_torchrun(args.nproc_per_node, args.argv, args.max_restarts)
        if code:
            raise SystemExit(code)
        return
    from ift.train import train

    train(cfg)


def cmd_export(args, extras) -> None:
    if extras:
        raise UserError(f"unrecognized argument(s): {' '.join(extras)}")
    from ift.export import export_checkpoint

    print(f"exported to {export_checkpoint(args.source, args.out_dir, args.dtype)}")


def add_submit_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of `ift submit CONFIG [overrides]`; each overrides the `slurm:` config section."""
    g = parser.add_argument_group("Slurm (override the slurm: config section)")
    g.add_argument("--nodes", type=int, help="nodes (slurm.nodes)")
    g.add_argument("--gpus-per-node", type=int, help="GPUs = Slurm tasks (ranks) per node (slurm.gpus_per_node)")
    g.add_argument(
        "--cpu",
        action="store_true",
        help="CPU-only cluster: request no GPU gres; --gpus-per-node is then only the tasks "
        "per node (slurm.gres=false)",
    )
    g.add_argument("--partition", help="slurm.partition")
    g.add_argument("--time", type=int, metavar="MIN", help="time limit in minutes (slurm.time_min)")
    g.add_argument("--account", help="slurm.account")
    g.add_argument("--qos", help="slurm.qos")
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="one job per value (a job array; repeat for a grid), each with its own "
        "run.name suffix, e.g. --sweep train.lr=1e-5,2e-5",
    )
    parser.add_argument("--only-task", help="single-task fine-tune baseline on this task, as `ift train`")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    return parser


def cmd_submit(args, extras: list[str]) -> None:
    from ift.data.prepare import submit_note
    from ift.launch import submit

    check_overrides(extras)
    flags = [*submit.flag_overrides(vars(args)), *only_task_override(args.only_task)]
    base_name, planned = submit.plan_jobs(args.config, [*extras, *flags], args.sweep)
    cfgs = [c for c, _ in planned]
    folder = submit.submitit_folder(cfgs, base_name)
    for cfg in cfgs:
        submit.check_writable(cfg.run_dir, create=not args.dry_run)
    submit.check_writable(folder, create=not args.dry_run)
    if args.dry_run:
        console.print_dry_run(submit.sbatch_script(cfgs, folder, base_name), submit_note(cfgs[0]), planned, folder)
        return
    for cfg in cfgs:
        if note := submit.existing_checkpoint_note(cfg):
            print(note)
    if note := submit_note(cfgs[0]):
        print(note)
    try:
        jobs = submit.submit(cfgs, folder, base_name)
    except Exception as e:  # sbatch refused (bad partition/account/...) or no Slurm here
        raise UserError(f"submission failed: {str(e).strip()}") from None
    console.print_submitted(jobs, cfgs)


def add_eval_args(sp) -> None:
    sp.add_argument(
        "source",
        metavar="RUN_DIR_OR_MODEL",
        help="run directory (newest complete checkpoint), checkpoint folder, or local HF model folder",
    )
    sp.add_argument(
        "--tasks",
        help="task files (path, directory or glob; one task per file), builtin:heldout | "
        "builtin:train | builtin:<task>, or a YAML config whose eval.tasks to use; comma-separated for "
        "several (default: the run config's eval.tasks)",
    )
    sp.add_argument(
        "--shots",
        help="positive examples in the prompt (e.g. 0 or 2; default: the run's eval.shots); "
        "comma-separated for several evaluations in one process, e.g. 0,2",
    )
    sp.add_argument("--max-new-tokens", type=int, help="tokens to generate per example (default: eval.max_new_tokens)")
    sp.add_argument("--limit", type=int, help="first N examples of each task (default: eval.limit, all)")
    sp.add_argument("--batch-size", type=int, help="prompts per generate call (default: eval.batch_size)")
    sp.add_argument("--out", help="folder for <name>.json, .md (default: <run dir>/eval; required for a model folder)")
    sp.add_argument("--name", help="result name (default: from --tasks and --shots, e.g. eval_0shot)")
    sp.add_argument("--no-wandb", action="store_true", help="do not log the scores to the run's W&B run")
    sp.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="local processes (torchrun), each generating its share of the examples on its own device",
    )
    sp.add_argument("--backend", choices=["hf", "vllm"], help="generation backend (default: eval.backend, hf)")
    sp.add_argument(
        "--harness",
        metavar="TASKS",
        help="run lm-evaluation-harness tasks instead (e.g. mmlu,arc_easy,gsm8k) on the model; "
        "results in <run dir>/eval/harness.json (the harness extra: pip install 'ift[harness]')",
    )
    sp.add_argument("--harness-include", metavar="DIR", help="folder of extra lm-eval task YAMLs (local tasks)")


def _shots_list(value: str | None) -> list[int | None]:
    if value is None:
        return [None]
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise UserError(f"--shots: expected a number or a comma-separated list like 0,2, got {value!r}") from None


def cmd_eval(args, extras=None) -> dict:
    if extras:
        raise UserError(f"unrecognized argument(s): {' '.join(extras)}")
    shots_list = _shots_list(args.shots)
    if len(shots_list) > 1 and args.name:
        raise UserError("--name names one evaluation: leave it out with several --shots values")
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    if args.harness and args.nproc_per_node > 1:
        raise UserError("--harness runs in one process: leave out --nproc-per-node")
    if args.nproc_per_node > 1 and "RANK" not in os.environ:
        from ift.launch.local import launch_torchrun

        if code := launch_torchrun(args.nproc_per_node, args.argv):
            raise SystemExit(code)
        return {}
    from ift.launch.job import join_srun_world

    join_srun_world()  # `srun ift eval ...` with several tasks: one rank per task
    if args.harness:
        from ift.eval.harness import run_harness

        where = {"include": args.harness_include, "out": args.out, "wandb": not args.no_wandb}
        result = run_harness(
            args.source, args.harness, shots=shots_list[0], limit=args.limit, batch_size=args.batch_size, **where
        )
        console.print_harness(result)
        return result
    from ift.eval.evaluate import evaluate

    settings = {k: getattr(args, k) for k in ("max_new_tokens", "limit", "batch_size", "backend")}  # None: eval.*
    for shots in shots_list:
        where = {"tasks": args.tasks, "out": args.out, "name": args.name, "wandb": not args.no_wandb}
        result = evaluate(args.source, shots=shots, **settings, **where)
        if result["files"]:  # rank 0
            console.print_eval(result)
    return result


def add_compare_args(sp) -> None:
    sp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories with eval/<name>.json results")
    sp.add_argument("--out", help="output folder (default: comparison/ next to the first run dir)")
    sp.add_argument(
        "--eval",
        dest="eval_name",
        action="append",
        help="evaluation name to use in each run (default: the newest); repeat for several, e.g. "
        "--eval eval_0shot --eval eval_2shot (the first is the main one)",
    )


def cmd_compare(args, extras=None) -> dict:
    from ift.eval.report import write_comparison

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.run_dirs[0])), "comparison")
    result = write_comparison(args.run_dirs, out, args.eval_name)
    console.print_comparison(result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ift", description="Instruction fine-tuning (and single-task fine-tuning) on DeepSpeed ZeRO."
    )
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
    tr.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart all local processes up to K times after a crash, from the last valid checkpoint",
    )
    add_submit_args(verb("submit", "submit a training job to Slurm", cmd_submit))
    verb("prepare", "load, render and tokenize the run's data into data.cache_dir ahead of training", cmd_prepare)
    m = verb("mix", "show the task mixture: examples, rates, epochs, realized sampling", cmd_mix)
    m.add_argument("--samples", type=int, default=0, help="draw N examples and show realized fractions")
    m.add_argument("--plot", help="write a PNG bar chart of target vs realized rates")
    m.add_argument("--world-size", type=int, default=1, help="data-parallel ranks for the epochs column")
    add_eval_args(verb("eval", "evaluate a run or model on (held-out) tasks", cmd_eval, config=False))
    add_compare_args(verb("compare", "compare evaluation results of several runs", cmd_compare, config=False))
    ex = verb("export", "export a checkpoint to a Hugging Face folder", cmd_export, config=False)
    ex.add_argument("source", help="run directory or checkpoint folder")
    ex.add_argument("out_dir", help="output Hugging Face folder")
    ex.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="weights' precision (default auto: the run's training dtype, e.g. bf16)",
    )
    return p


def _run(fn, *args) -> int:
    """Run a verb: a user error is one `error:` line (exit 2); a failure of the run is logged with
    its traceback and named on one `failed:` line (exit 1)."""
    success = False
    try:
        code = fn(*args)
        success = True
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RunError as e:
        log.error("the run failed (not a problem with its input):", exc_info=True)
        print(f"failed: {e}", file=sys.stderr)
        return EXIT_RUN_ERROR
    finally:
        end_process_groups(success)
    return code if isinstance(code, int) else 0


def end_process_groups(success: bool) -> None:
    """Every verb ends its process groups before the interpreter does (ift.distributed.shutdown).
    Only a verb that started them has imported ift.distributed: `ift compare` never imports torch."""
    if "ift.distributed" in sys.modules:
        sys.modules["ift.distributed"].shutdown(success)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args, extras = build_parser().parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return _run(args.fn, args, extras)


def slurm_task_main(argv: list[str] | None = None) -> int:
    """One task of slurm/train.sbatch (srun starts one per GPU): `CONFIG [overrides] [--only-task T]`.
    Exit 0: training finished; 3: stopped early by a signal with a checkpoint saved (the batch
    script requeues); 2: a user error (never requeued); anything else: a crash (the batch script
    requeues up to slurm.max_failures times, ift.launch.requeue)."""
    from ift import faults
    from ift.launch import job

    dist = job.start_task()  # signal handlers first: a signal during start-up requests a stop
    code = _run(lambda: job.run_task(dist, slurm_task_config(argv)))
    faults.maybe_stall("exit", dist["rank"])  # tests only: a rank slow to leave
    return code


def slurm_task_config(argv: list[str] | None):
    """The config of slurm/train.sbatch's arguments: `CONFIG [overrides] [--only-task T]`."""
    p = argparse.ArgumentParser(prog="slurm_entry.py")
    p.add_argument("config")
    p.add_argument("--only-task")
    args, overrides = p.parse_known_args(argv)
    return _config_and_overrides(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
