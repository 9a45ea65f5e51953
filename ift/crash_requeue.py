"""After a Slurm job step has failed: requeue the job, or say why not, and record it.

Runs in the batch script once `srun` has returned (the teardown of `ift submit`'s sbatch script, the
end of slurm/train.sbatch), on the job's first node, so it also runs when a rank was SIGKILLed (OOM
killer, a lost GPU) and could not say anything itself. srun runs with --kill-on-bad-exit, so the
first failing task ends the step at once (no rank waits in a collective for its dead peer) and
srun's own "srun: error: <node>: task <r>: <how>" line names it. The decision:

- the step succeeded, or a stop for a time limit / preemption already requeued it: nothing to do;
- the failed task exited 2, or its last exception is ift's UserError: a user error, never retried;
- `slurm.max_failures` crash requeues of this job already happened: the job ends FAILED;
- otherwise `scontrol requeue`: the job restarts (SLURM_RESTART_COUNT + 1) and resumes from its
  newest valid checkpoint (train.resume: auto).

Each decision is one line of <run dir>/requeues.jsonl (kind "crash") with the reason, the failed
rank, its node, and its last log lines.

    python -m ift.crash_requeue --exit-code RC --run-dir DIR [--run-dir DIR2 ...] --max-failures N \
        --rank-log '{folder}/{job}_{rank}_log.err'            # ift submit: one log file per rank
    python -m ift.crash_requeue --exit-code RC --labelled CONFIG [overrides] [--only-task T]
                                                              # train.sbatch: srun --label, one log
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
from typing import Optional

from ift.slurm import REQUEUES_FILE, _job_id, read_requeues, restart_count

LAST_LINES = 30  # of the failed rank's log, kept in requeues.jsonl
# Searched, not matched: the line may follow a progress bar that never ended its line.
SRUN_TASK_ERROR = re.compile(r"srun: error: (?P<node>\S+): tasks? (?P<ranks>[\d,-]+): (?P<how>.+)$")
EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?(?:[\w.]+\.)?(?P<name>[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(?P<msg>.*))?$")
PROGRESS_BAR = re.compile(r"^\S*: +\d+%\|")


def batch_log_path() -> Optional[str]:
    """The batch script's stderr file (where srun writes its messages), as Slurm resolved it."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\bStdErr=(\S+)", out)
    return m.group(1) if m else None


def read_lines(path: Optional[str]) -> list[str]:
    if not path or not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return f.read().splitlines()  # also splits progress bars' \r updates


def first_failed_task(batch_lines: list[str]) -> Optional[dict]:
    """The first task srun reported as failed: {"rank", "node", "how"} (how: "Killed",
    "Exited with exit code 1", "Out Of Memory", ...)."""
    for line in batch_lines:
        m = SRUN_TASK_ERROR.search(line.strip())
        if m:
            first = re.split(r"[,-]", m.group("ranks"))[0]
            return {"rank": int(first), "node": m.group("node"), "how": m.group("how").strip()}
    return None


def rank_lines(rank: int, rank_log: Optional[str], batch_lines: list[str]) -> list[str]:
    """A rank's log, without progress bars: its own file (`ift submit`), or its `R: ` lines of the
    batch log (srun --label)."""
    if rank_log:
        lines = read_lines(rank_log.format(job=_job_id(), rank=rank))
    else:
        prefix = re.compile(rf"^\s*{rank}: ")
        lines = [prefix.sub("", line, count=1) for line in batch_lines if prefix.match(line)]
    return [line for line in lines if line.strip() and not PROGRESS_BAR.match(line)]


def last_exception(lines: list[str]) -> Optional[str]:
    for line in reversed(lines):
        m = EXCEPTION_LINE.match(line.strip())
        if m:
            return f"{m.group('name')}: {m.group('msg')}" if m.group("msg") else m.group("name")
    return None


def last_step(run_dir: str) -> Optional[int]:
    """The last step in metrics.jsonl (read from the end: the file grows with the run)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 65536))
        for line in reversed(f.read().decode(errors="replace").splitlines()):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                continue
    return None


def newest_checkpoint(run_dir: str) -> Optional[int]:
    """The newest checkpoint with its completion marker (the restart verifies it before loading)."""
    from ift.checkpoint import complete_checkpoints

    done = complete_checkpoints(os.path.join(run_dir, "checkpoints"))
    return done[-1][0] if done else None


def after_srun(exit_code: int, run_dir: str, max_failures: int, rank_log: Optional[str] = None,
               batch_lines: Optional[list[str]] = None) -> tuple[int, Optional[dict]]:
    """Decide and record; returns (exit code for the batch script, the record written or None).
    Exit 0 after `scontrol requeue`; otherwise the step's exit code, so the job ends FAILED."""
    if exit_code == 0:
        return 0, None
    job, count = _job_id(), restart_count()
    earlier = [r for r in read_requeues(run_dir) if r.get("job_id") == job]
    if any(r.get("restart_count") == count and r.get("kind", "stop") == "stop" for r in earlier):
        print(f"ift: job {job} already requeued after a stop in this run: no crash requeue")
        return exit_code, None
    lines = batch_lines if batch_lines is not None else read_lines(batch_log_path())
    failed = first_failed_task(lines)
    rank = failed["rank"] if failed else 0
    own = rank_lines(rank, rank_log, lines)
    exception = last_exception(own)
    where = f"rank {rank} on {failed['node']}: {failed['how']}" if failed else f"srun exited with {exit_code}"
    reason = f"{where}: {exception}" if exception else where
    user_error = bool(failed and failed["how"] == "Exited with exit code 2") or bool(
        exception and exception.startswith("UserError"))
    crashes = sum(1 for r in earlier if r.get("kind") == "crash" and r.get("requeued"))
    requeue = not user_error and crashes < max_failures
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "job_id": job, "restart_count": count,
           "kind": "crash", "reason": reason, "exit_code": exit_code,
           "failed_rank": rank if failed else None, "node": failed["node"] if failed else None,
           "step": last_step(run_dir), "checkpoint_step": newest_checkpoint(run_dir),
           "failures": crashes + 1, "max_failures": max_failures, "user_error": user_error, "requeued": requeue,
           "last_lines": own[-LAST_LINES:] if own else lines[-LAST_LINES:]}
    print(f"ift: job step failed: {reason}")
    if user_error:
        print("ift: a user error (exit 2, or ift's UserError): not requeueing; fix it and submit again")
        return exit_code, _record(run_dir, rec)
    if not requeue:
        print(f"ift: not requeueing: {crashes} crash requeue(s) already (slurm.max_failures={max_failures})")
        return exit_code, _record(run_dir, rec)
    resume = rec["checkpoint_step"]
    print(f"ift: requeueing job {job} (crash {crashes + 1} of at most {max_failures}); it resumes from "
          + (f"the checkpoint of step {resume} or an older valid one" if resume is not None else "the start"))
    if rank_log:  # submitit's error results of this attempt: the requeued job writes its own
        for stale in glob.glob(os.path.join(os.path.dirname(rank_log), f"{job}_*_result.pkl")):
            os.remove(stale)
    _record(run_dir, rec)  # before the requeue: Slurm ends this script as it requeues the job
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"ift: scontrol requeue {job} failed: {done.stderr.strip()}", file=sys.stderr)
        return exit_code, _record(run_dir, {**rec, "requeued": False,
                                            "reason": f"{reason}; scontrol requeue failed: {done.stderr.strip()}"})
    return 0, rec


def _record(run_dir: str, rec: dict) -> dict:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, REQUEUES_FILE), "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ift.crash_requeue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exit-code", type=int, required=True, help="srun's exit status")
    p.add_argument("--run-dir", action="append", default=[], help="run dir (one per array task, in order)")
    p.add_argument("--max-failures", type=int, default=2)
    p.add_argument("--rank-log", help="per-rank log file, with {job} and {rank}")
    p.add_argument("--labelled", action="store_true", help="ranks' lines are `R: ` lines of the batch log; "
                   "the run dir and slurm.max_failures come from the CONFIG arguments that follow")
    args, rest = p.parse_known_args(argv)
    run_dir, max_failures = None, args.max_failures
    if args.run_dir:
        run_dir = args.run_dir[int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)]
    else:
        from ift.config import UserError
        from ift.slurm import config_from_argv

        try:
            cfg, _ = config_from_argv(rest)
            run_dir, max_failures = cfg.run_dir, cfg.slurm.max_failures
        except UserError as e:  # the ranks failed on the same config
            print(f"ift: the config does not load ({e}): a user error, not requeueing")
            return args.exit_code
    code, _ = after_srun(args.exit_code, run_dir, max_failures, args.rank_log)
    return code


if __name__ == "__main__":
    sys.exit(main())
