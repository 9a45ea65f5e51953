"""Inside a Slurm job: the torch world from SLURM_*, and checkpoint + requeue on a time limit or
preemption. Two ways onto a cluster share this runtime (see slurm/README.md):

* `ift submit CONFIG ...` pickles a `SlurmTrainJob` with submitit (ift.launch.submit): one Slurm task
  per GPU, each exports the torch environment (`export_dist_env`) and runs `ift.train.train`, the
  same entry as `ift train`.
* `sbatch slurm/train.sbatch CONFIG ...` runs `launch/slurm_entry.py` in every task: `start_task`,
  then `run_task` — same environment, same `train`.

Stopping early. Slurm sends USR2 `slurm.signal_delay_s` before the time limit (and submitit's
preemption simulation does too). A ZeRO checkpoint is collective, but submitit calls its
checkpoint callback on global rank 0 only, inside the signal handler, and requeues the job as soon
as the callback returns. So training runs in a worker thread of every task while the main thread
only waits (Python runs signal handlers in the main thread): the callback requests a stop
(ift.stop), the flag is all-reduced at the next step boundary, every rank saves, `train()` returns,
and only then does the callback return the `DelayedSubmission` that submitit requeues. The requeued
job resumes from that checkpoint (`train.resume: auto`) and continues the same W&B run;
`<run dir>/requeues.jsonl` and the job log say why each restart happened.

Crashes (a rank fails: not a stop) are requeued by the batch script after srun (ift.launch.requeue).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from typing import Any

from ift import faults, stop
from ift.config import Config
from ift.launch.requeue import job_id, read_requeues, record_stop, restart_count
from ift.logs import setup_logging

log = logging.getLogger(__name__)

EXIT_REQUEUE = 3  # run_task: stopped early with a checkpoint saved; the batch script requeues
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Below Linux's ephemeral ports (32768-60999 by default): submitit's own choice (20000-60000) can land
# on the local port of some long-lived connection on the first node, and then every attempt of the
# job fails to listen with EADDRINUSE (seen in CI: job 6, port 45548, twice in a row).
MASTER_PORTS = (20000, 32767)


def master_port() -> int:
    """The job's rendezvous port, the same in every task: derived from the job id and the restart
    count, so a requeued job tries another port instead of the one that may have failed it."""
    key = f"{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return random.Random(key).randint(*MASTER_PORTS)


def export_dist_env() -> dict:
    """Export MASTER_ADDR (first node of the job), MASTER_PORT (`master_port`),
    RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE from SLURM_* with submitit's
    TorchDistributedEnvironment, for torch's env:// rendezvous (ift.distributed.init_distributed).
    CUDA_VISIBLE_DEVICES is left alone: every task sees the node's GPUs and picks LOCAL_RANK."""
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # sbatch path: read SLURM_* like submitit does
    if not os.environ.get("MASTER_PORT"):  # a port the user set wins
        os.environ["MASTER_PORT"] = str(master_port())
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ.get("SLURM_CPUS_PER_TASK", "1")
    return {
        "rank": env.rank,
        "world_size": env.world_size,
        "local_rank": env.local_rank,
        "local_world_size": env.local_world_size,
        "master_addr": env.master_addr,
        "master_port": env.master_port,
    }


def _setup_logging() -> None:
    setup_logging(force=False)
    logging.getLogger("submitit").propagate = False  # it has its own handlers


def log_start(dist: dict, run_dir: str) -> int:
    """Log where this task runs and, after a requeue, why the previous run stopped."""
    count = restart_count()
    log.info(
        "Slurm job %s rank %d/%d (local %d) on %s, master %s:%s, SLURM_RESTART_COUNT=%d",
        job_id(),
        dist["rank"],
        dist["world_size"],
        dist["local_rank"],
        os.environ.get("SLURMD_NODENAME", "?"),
        dist["master_addr"],
        dist["master_port"],
        count,
    )
    if count and dist["rank"] == 0:
        previous = read_requeues(run_dir)
        last = previous[-1] if previous else None
        if last and last.get("restart_count") == count - 1 and last.get("kind") == "crash":
            log.info(
                "restart %d (SLURM_RESTART_COUNT=%d): the previous run failed after step %s: %s; resuming "
                "from the newest valid checkpoint (crash %d of at most %d)",
                count,
                count,
                last.get("step"),
                last.get("reason"),
                last.get("failures"),
                last.get("max_failures"),
            )
        elif last and last.get("restart_count") == count - 1:
            log.info(
                "restart %d (SLURM_RESTART_COUNT=%d): the previous run stopped at step %s: %s; "
                "resuming from its checkpoint",
                count,
                count,
                last.get("step"),
                last.get("reason"),
            )
        else:
            log.info(
                "restart %d (SLURM_RESTART_COUNT=%d): requeued by Slurm itself (preemption with "
                "requeue, node failure or scontrol requeue); resuming from the newest checkpoint",
                count,
                count,
            )
    return count


def _for_restart(cfg: Config, count: int) -> Config:
    if count and cfg.train.resume != "auto":
        log.info(
            "requeued run: train.resume=%s -> auto (continue from this run's newest checkpoint)", cfg.train.resume
        )
        cfg.train.resume = "auto"
    return cfg


# --------------------------------------------------------------------------- slurm/train.sbatch


def join_srun_world() -> None:
    """Inside `srun` with several tasks and no launcher's torch world: one rank per task."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        export_dist_env()


def start_task() -> dict:
    """The first thing a task of slurm/train.sbatch does, before anything slow (a signal during
    start-up must request a stop, not kill the task): logging, signal handlers, the torch world."""
    _setup_logging()
    stop.install_signal_handlers()
    return export_dist_env()


def run_task(dist: dict, cfg: Config) -> int:
    """Train; 0: finished, EXIT_REQUEUE: stopped early by a signal with a checkpoint saved (the
    batch script requeues). Errors propagate (the CLI turns them into exit 2 or 1)."""
    from ift.train import train

    _for_restart(cfg, log_start(dist, cfg.run_dir))
    result = train(cfg)
    if result["finished"]:
        return 0
    if dist["rank"] == 0:
        faults.maybe_stall("record_stop", 0)  # tests only
        record_stop(cfg.run_dir, stop.reason(), result)
    # Under srun --kill-on-bad-exit, the first rank to exit 3 gets the others killed: every rank
    # leaves only after rank 0 has recorded the stop (the CLI's ift.distributed.shutdown barrier
    # comes after this return, on every rank).
    return EXIT_REQUEUE


# --------------------------------------------------------------------------- ift submit (submitit)


class SlurmTrainJob:
    """The callable `ift submit` pickles: one instance runs in every task of the job. Like
    submitit.helpers.Checkpointable (submitit only looks for a `checkpoint` method; not subclassed
    so that importing this module, and so the `ift` CLI, does not import submitit)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stops: list[dict] = []  # why earlier runs of this job stopped (travels with requeues)
        self._reset()

    def _reset(self) -> None:
        self._thread: threading.Thread | None = None
        self._box: dict = {}
        self._started = time.time()
        self._sigterm = False
        self._reason_sent = False
        self._recorded = False

    def __getstate__(self) -> dict:  # threads and runtime state stay out of the requeue pickle
        return {"cfg": self.cfg, "stops": self.stops}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def __call__(self) -> dict:
        from submitit.core.utils import UncompletedJobError

        _setup_logging()
        self._reset()
        dist = export_dist_env()
        cfg = self.cfg
        _for_restart(cfg, log_start(dist, cfg.run_dir) or len(self.stops))
        # submitit handles USR2 (rank 0: self.checkpoint) and ignores TERM; TERM (preemption with
        # a grace time, scancel) asks every rank for a checkpoint instead.
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._thread = threading.Thread(target=self._train, name="ift-train", daemon=True)
        self._thread.start()
        log.info("training in thread %s; the main thread waits and handles signals", self._thread.name)
        try:
            while True:
                try:
                    while self._thread.is_alive():
                        self._thread.join(0.5)
                    break
                except UncompletedJobError:  # raised by submitit's handler after self.checkpoint
                    if self._box.get("result", {}).get("finished") or "error" in self._box:
                        break  # finished as the signal came (nothing to requeue), or failed (raised below)
                    raise  # requeued: rank 0 has recorded the stop
        finally:
            if not self._thread.is_alive():  # the groups end after the thread that used them
                from ift import distributed

                distributed.shutdown(success="error" not in self._box)
        if "error" in self._box:
            raise self._box["error"]
        result = self._box["result"]
        if not result["finished"] and dist["rank"] == 0:
            log.warning(
                "stopped at step %d before the end without a requeue (%s); `ift submit` the same "
                "command again to continue from the checkpoint",
                result["step"],
                stop.reason(),
            )
        return result

    def _train(self) -> None:
        from ift.train import train

        try:
            self._box["result"] = train(self.cfg)
        except BaseException as e:  # re-raised in the main thread
            self._box["error"] = e

    def _on_sigterm(self, signum, frame) -> None:
        if self._recorded:  # our own `scontrol requeue` is ending the job
            return
        self._sigterm = True
        stop.handler("preemption or cancel (SIGTERM)")(signum, frame)

    def _reason(self) -> str:
        s = self.cfg.slurm
        ran = time.time() - self._started
        if self._sigterm:
            return f"preempted (SIGTERM, then USR2) after {ran / 60:.1f} min"
        if ran >= s.time_min * 60 - s.signal_delay_s - 60:
            return f"time limit: USR2 {s.signal_delay_s}s before the {s.time_min} min limit (after {ran / 60:.1f} min)"
        return f"USR2 after {ran / 60:.1f} of {s.time_min} min: preemption or a manual signal"

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on global rank 0, in the main thread, inside the USR2 handler; submitit
        requeues as soon as this returns. So: request the collective stop, wait (bounded) until the
        training thread has saved on all ranks and returned, then hand back the same callable."""
        from submitit.helpers import DelayedSubmission

        if stop.requested() and self._reason_sent:  # a second signal while stopping: same wait
            reason = stop.reason()
        else:
            reason = self._reason()
            stop.request(reason)
            self._reason_sent = True
        wait_s = max(10.0, self.cfg.slurm.signal_delay_s - 20.0)
        log.warning(
            "%s: asking all ranks to checkpoint at the next step boundary (waiting up to %.0fs)", reason, wait_s
        )
        if self._thread is not None:
            self._thread.join(wait_s)
        result = self._box.get("result")
        if result is not None and result["finished"]:
            log.info("training finished before the checkpoint request took effect: not requeueing")
            return None  # submitit then raises UncompletedJobError, which __call__ turns into success
        if self._thread is not None and self._thread.is_alive():
            log.warning("no checkpoint within %.0fs; requeueing anyway: the job resumes from the previous one", wait_s)
        elif "error" in self._box:
            log.error("training failed while stopping: %r; not requeueing", self._box["error"])
            return None
        if not self._recorded:
            self._recorded = True
            self.stops.append(record_stop(self.cfg.run_dir, reason, result))
        rec = self.stops[-1]
        if rec["saved"]:
            log.info("checkpoint at step %s saved by all ranks; requeueing job %s", rec["step"], rec["job_id"])
        return DelayedSubmission(self, *args, **kwargs)
