"""Why a Slurm job restarted: `<run dir>/requeues.jsonl`, one line per stop (a time limit or
preemption: checkpoint, then requeue; kind "stop") or crash (kind "crash", see `after_srun`).

After a job step has failed, `after_srun` requeues the job or says why not, and records it. It runs
in the batch script once `srun` has returned (`python -m ift.crash_requeue`, the teardown of `ift
submit`'s sbatch script and the end of slurm/train.sbatch), on the job's first node, so it also runs
when a rank was SIGKILLed (OOM killer, a lost GPU) and could not say anything itself. srun runs with
--kill-on-bad-exit, so the first failing task ends the step at once (no rank waits in a collective
for its dead peer) and srun's own "srun: error: <node>: task <r>: <how>" line names it. The decision:

- the step succeeded, or a stop for a time limit / preemption already requeued it: nothing to do;
- the failed task exited 2, or its last exception is ift's UserError: a user error, never retried;
- `slurm.max_failures` crash requeues of this job already happened: the job ends FAILED;
- otherwise `scontrol requeue`: the job restarts (SLURM_RESTART_COUNT + 1) and resumes from its
  newest valid checkpoint (train.resume: auto).

Each decision is one line of requeues.jsonl (kind "crash") with the reason, the failed rank, its
node, and its last log lines.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time

from ift.errors import EXIT_USER_ERROR
from ift.rundir import RunDir

LAST_LINES = 30  # of the failed rank's log, kept in requeues.jsonl
# Searched, not matched: the line may follow a progress bar that never ended its line.
SRUN_TASK_ERROR = re.compile(r"srun: error: (?P<node>\S+): tasks? (?P<ranks>[\d,-]+): (?P<how>.+)$")
EXCEPTION_LINE = re.compile(
    r"^(?:\[rank\d+\]:\s*)?(?:[\w.]+\.)?(?P<name>[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(?P<msg>.*))?$"
)
PROGRESS_BAR = re.compile(r"^\S*: +\d+%\|")


# --------------------------------------------------------------------------- the record


def job_id() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def read_requeues(run_dir: str) -> list[dict]:
    path = RunDir(run_dir).requeues
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_requeue(run_dir: str, rec: dict) -> dict:
    os.makedirs(run_dir, exist_ok=True)
    with open(RunDir(run_dir).requeues, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def record_stop(run_dir: str, reason: str, result: dict | None) -> dict:
    """Append why this job stopped early (and requeues)."""
    return append_requeue(
        run_dir,
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "job_id": job_id(),
            "restart_count": restart_count(),
            "kind": "stop",
            "reason": reason,
            "step": (result or {}).get("step"),
            "saved": bool(result) and not (result or {}).get("finished"),
        },
    )


def stop_saved(run_dir: str) -> bool:
    """Whether rank 0 recorded, in this run of this job, a stop with every rank's checkpoint saved
    (it records only after all ranks saved, and every rank leaves after it recorded)."""
    job, count = job_id(), restart_count()
    return any(
        r.get("kind") == "stop" and r.get("job_id") == job and r.get("restart_count") == count and r.get("saved")
        for r in read_requeues(run_dir)
    )


# --------------------------------------------------------------------------- after a failed step


def batch_log_path() -> str | None:
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


def read_lines(path: str | None) -> list[str]:
    if not path or not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return f.read().splitlines()  # also splits progress bars' \r updates


def first_failed_task(batch_lines: list[str]) -> dict | None:
    """The first task srun reported as failed: {"rank", "node", "how"} (how: "Killed",
    "Exited with exit code 1", "Out Of Memory", ...)."""
    for line in batch_lines:
        m = SRUN_TASK_ERROR.search(line.strip())
        if m:
            first = re.split(r"[,-]", m.group("ranks"))[0]
            return {"rank": int(first), "node": m.group("node"), "how": m.group("how").strip()}
    return None


def rank_lines(rank: int, rank_log: str | None, batch_lines: list[str]) -> list[str]:
    """A rank's log, without progress bars: its own file (`ift submit`), or its `R: ` lines of the
    batch log (srun --label)."""
    if rank_log:
        lines = read_lines(rank_log.format(job=job_id(), rank=rank))
    else:
        prefix = re.compile(rf"^\s*{rank}: ")
        lines = [prefix.sub("", line, count=1) for line in batch_lines if prefix.match(line)]
    return [line for line in lines if line.strip() and not PROGRESS_BAR.match(line)]


def last_exception(lines: list[str]) -> str | None:
    for line in reversed(lines):
        m = EXCEPTION_LINE.match(line.strip())
        if m:
            return f"{m.group('name')}: {m.group('msg')}" if m.group("msg") else m.group("name")
    return None


def last_step(run_dir: str) -> int | None:
    """The last step in metrics.jsonl (read from the end: the file grows with the run)."""
    path = RunDir(run_dir).metrics
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


def after_srun(
    exit_code: int, run_dir: str, max_failures: int, rank_log: str | None = None, batch_lines: list[str] | None = None
) -> tuple[int, dict | None]:
    """Decide and record; returns (exit code for the batch script, the record written or None).
    Exit 0 after `scontrol requeue`; otherwise the step's exit code, so the job ends FAILED."""
    if exit_code == 0:
        return 0, None
    job, count = job_id(), restart_count()
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
    user_error = bool(failed and failed["how"] == f"Exited with exit code {EXIT_USER_ERROR}") or bool(
        exception and exception.startswith("UserError")
    )
    crashes = sum(1 for r in earlier if r.get("kind") == "crash" and r.get("requeued"))
    requeue = not user_error and crashes < max_failures
    rec = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "job_id": job,
        "restart_count": count,
        "kind": "crash",
        "reason": reason,
        "exit_code": exit_code,
        "failed_rank": rank if failed else None,
        "node": failed["node"] if failed else None,
        "step": last_step(run_dir),
        "checkpoint_step": RunDir(run_dir).newest_checkpoint(),
        "failures": crashes + 1,
        "max_failures": max_failures,
        "user_error": user_error,
        "requeued": requeue,
        "last_lines": own[-LAST_LINES:] if own else lines[-LAST_LINES:],
    }
    print(f"ift: job step failed: {reason}")
    if user_error:
        print("ift: a user error (exit 2, or ift's UserError): not requeueing; fix it and submit again")
        return exit_code, append_requeue(run_dir, rec)
    if not requeue:
        print(f"ift: not requeueing: {crashes} crash requeue(s) already (slurm.max_failures={max_failures})")
        return exit_code, append_requeue(run_dir, rec)
    resume = rec["checkpoint_step"]
    print(
        f"ift: requeueing job {job} (crash {crashes + 1} of at most {max_failures}); it resumes from "
        + (f"the checkpoint of step {resume} or an older valid one" if resume is not None else "the start")
    )
    if rank_log:  # submitit's error results of this attempt: the requeued job writes its own
        for stale in glob.glob(os.path.join(os.path.dirname(rank_log), f"{job}_*_result.pkl")):
            os.remove(stale)
    append_requeue(run_dir, rec)  # before the requeue: Slurm ends this script as it requeues the job
    done = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"ift: scontrol requeue {job} failed: {done.stderr.strip()}", file=sys.stderr)
        return exit_code, append_requeue(
            run_dir, {**rec, "requeued": False, "reason": f"{reason}; scontrol requeue failed: {done.stderr.strip()}"}
        )
    return 0, rec
