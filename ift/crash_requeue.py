"""`python -m ift.crash_requeue`: the command Slurm batch scripts run after srun (see
ift.launch.requeue for what it decides); its arguments are below."""

from __future__ import annotations

import argparse
import os
import sys

from ift.errors import UserError


def crash_requeue_main(argv: list[str] | None = None) -> int:
    """`python -m ift.crash_requeue`: after srun returned in a batch script (ift.launch.requeue).

    python -m ift.crash_requeue --exit-code RC --run-dir DIR [--run-dir DIR2 ...] --max-failures N \\
        --rank-log '{folder}/{job}_{rank}_log.err'            # ift submit: one log file per rank
    python -m ift.crash_requeue --exit-code RC --labelled CONFIG [overrides] [--only-task T]
                                                              # train.sbatch: srun --label, one log
    python -m ift.crash_requeue --stopped --labelled CONFIG [overrides]
        # exit 0 when rank 0 recorded a stop with a checkpoint in this run of the job, else 1
    """
    from ift.cli import slurm_task_config
    from ift.launch.requeue import after_srun, stop_saved

    p = argparse.ArgumentParser(
        prog="python -m ift.crash_requeue",
        description=crash_requeue_main.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--exit-code", type=int, help="srun's exit status")
    p.add_argument("--stopped", action="store_true", help="only say whether this run stopped with a checkpoint")
    p.add_argument("--run-dir", action="append", default=[], help="run dir (one per array task, in order)")
    p.add_argument("--max-failures", type=int, default=2)
    p.add_argument("--rank-log", help="per-rank log file, with {job} and {rank}")
    p.add_argument(
        "--labelled",
        action="store_true",
        help="ranks' lines are `R: ` lines of the batch log; "
        "the run dir and slurm.max_failures come from the CONFIG arguments that follow",
    )
    args, rest = p.parse_known_args(argv)
    run_dir, max_failures = None, args.max_failures
    if args.run_dir:
        run_dir = args.run_dir[int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)]
    else:
        try:
            cfg = slurm_task_config(rest)
            run_dir, max_failures = cfg.run_dir, cfg.slurm.max_failures
        except UserError as e:  # the ranks failed on the same config
            print(f"ift: the config does not load ({e}): a user error, not requeueing")
            return 1 if args.stopped else args.exit_code
    if args.stopped:
        return 0 if stop_saved(run_dir) else 1
    if args.exit_code is None:
        p.error("--exit-code is required")
    code, _ = after_srun(args.exit_code, run_dir, max_failures, args.rank_log)
    return code


if __name__ == "__main__":
    sys.exit(crash_requeue_main())
