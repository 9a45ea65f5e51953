"""Slurm: `ift submit` (submitit), the distributed environment inside a job, and checkpoint +
requeue on time limits and preemption.

Two ways onto a cluster share one contract (see slurm/README.md):

* `ift submit CONFIG ...` pickles a `SlurmTrainJob` with submitit: one Slurm task per GPU
  (`--ntasks-per-node = slurm.gpus_per_node`), each task exports the torch environment from
  SLURM_* (`export_dist_env`) and runs `ift.train.train`, the same entry as `ift train`.
* `sbatch slurm/train.sbatch CONFIG ...` runs `launch/slurm_entry.py` (= `entry_main`) in every
  task: same environment, same `train`.

Stopping early. Slurm sends USR2 `slurm.signal_delay_s` before the time limit (and submitit's
preemption simulation does too). A ZeRO checkpoint is collective, but submitit calls its
checkpoint callback on global rank 0 only, inside the signal handler, and requeues the job as soon
as the callback returns. So training runs in a worker thread of every task while the main thread
only waits (Python runs signal handlers in the main thread): the callback calls
`ift.train.request_stop`, the flag is all-reduced at the next step boundary, every rank saves,
`train()` returns, and only then does the callback return the `DelayedSubmission` that submitit
requeues. The requeued job resumes from that checkpoint (`train.resume: auto`) and continues the
same W&B run; `<run dir>/requeues.jsonl` and the job log say why each restart happened.

Crashes (a rank fails: not a stop) are requeued by the batch script after srun, see ift.crash_requeue.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Optional

from ift.config import Config, UserError, load_config

log = logging.getLogger("ift.slurm")

EXIT_REQUEUE = 3  # entry_main: stopped early with a checkpoint saved; the batch script requeues
REQUEUES_FILE = "requeues.jsonl"  # in the run dir: one line per stop that led to a requeue
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# --------------------------------------------------------------------------- inside a job


def export_dist_env() -> dict:
    """Export MASTER_ADDR (first node of the job), MASTER_PORT (derived from the job id),
    RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE from SLURM_* with submitit's
    TorchDistributedEnvironment, for torch's env:// rendezvous (ift.engine.init_distributed).
    CUDA_VISIBLE_DEVICES is left alone: every task sees the node's GPUs and picks LOCAL_RANK."""
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # sbatch path: read SLURM_* like submitit does
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ.get("SLURM_CPUS_PER_TASK", "1")
    return {"rank": env.rank, "world_size": env.world_size, "local_rank": env.local_rank,
            "local_world_size": env.local_world_size, "master_addr": env.master_addr,
            "master_port": env.master_port}


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        from ift.cli import setup_logging

        setup_logging()
    logging.getLogger("submitit").propagate = False  # it has its own handlers


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def read_requeues(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, REQUEUES_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def record_requeue(run_dir: str, reason: str, result: Optional[dict]) -> dict:
    """Append why this job stopped early (and requeues) to <run dir>/requeues.jsonl."""
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "job_id": _job_id(),
           "restart_count": restart_count(), "kind": "stop", "reason": reason,
           "step": (result or {}).get("step"), "saved": bool(result) and not result.get("finished")}
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, REQUEUES_FILE), "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def _job_id() -> Optional[str]:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


def log_start(dist: dict, run_dir: str) -> int:
    """Log where this task runs and, after a requeue, why the previous run stopped."""
    count = restart_count()
    log.info("Slurm job %s rank %d/%d (local %d) on %s, master %s:%s, SLURM_RESTART_COUNT=%d",
             _job_id(), dist["rank"], dist["world_size"], dist["local_rank"],
             os.environ.get("SLURMD_NODENAME", "?"), dist["master_addr"], dist["master_port"], count)
    if count and dist["rank"] == 0:
        previous = read_requeues(run_dir)
        last = previous[-1] if previous else None
        if last and last.get("restart_count") == count - 1 and last.get("kind") == "crash":
            log.info("restart %d (SLURM_RESTART_COUNT=%d): the previous run failed after step %s: %s; resuming "
                     "from the newest valid checkpoint (crash %d of at most %d)", count, count, last.get("step"),
                     last.get("reason"), last.get("failures"), last.get("max_failures"))
        elif last and last.get("restart_count") == count - 1:
            log.info("restart %d (SLURM_RESTART_COUNT=%d): the previous run stopped at step %s: %s; "
                     "resuming from its checkpoint", count, count, last.get("step"), last.get("reason"))
        else:
            log.info("restart %d (SLURM_RESTART_COUNT=%d): requeued by Slurm itself (preemption with "
                     "requeue, node failure or scontrol requeue); resuming from the newest checkpoint",
                     count, count)
    return count


def _for_restart(cfg: Config, count: int) -> Config:
    if count and cfg.train.resume != "auto":
        log.info("requeued run: train.resume=%s -> auto (continue from this run's newest checkpoint)", cfg.train.resume)
        cfg.train.resume = "auto"
    return cfg


def _stop_handler(why: str):
    def handler(signum, frame):
        from ift.train import request_stop

        log.warning("caught %s: %s; all ranks checkpoint at the next step boundary", signal.Signals(signum).name, why)
        request_stop(why)
    return handler


def config_from_argv(argv: Optional[list[str]]) -> tuple[Config, Optional[str]]:
    """`CONFIG [overrides] [--only-task T]`, the arguments of slurm/train.sbatch: (config, only_task)."""
    p = argparse.ArgumentParser(prog="slurm_entry.py")
    p.add_argument("config")
    p.add_argument("--only-task")
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        raise UserError(f"unrecognized argument(s): {' '.join(bad)} (overrides look like key.sub=value)")
    cfg = load_config(args.config, overrides)
    if args.only_task:
        _only_task(cfg, args.only_task, overrides)
    return cfg, args.only_task


def entry_main(argv: Optional[list[str]] = None) -> int:
    """One task of `slurm/train.sbatch` (run by srun, one task per GPU): `CONFIG [overrides]
    [--only-task T]`. Exit 0: training finished; EXIT_REQUEUE: stopped early by a signal with a
    checkpoint saved (the batch script requeues); 2: a config mistake (never requeued); anything
    else: a crash (the batch script requeues up to slurm.max_failures times, ift.crash_requeue)."""
    _setup_logging()
    # Before anything slow: a signal during start-up must request a stop, not kill the task.
    for sig, why in ((signal.SIGUSR2, "time limit (SIGUSR2)"), (signal.SIGTERM, "preemption or cancel (SIGTERM)")):
        signal.signal(sig, _stop_handler(why))
    dist = export_dist_env()
    try:
        cfg, only_task = config_from_argv(argv)
        count = log_start(dist, cfg.run_dir)
        _for_restart(cfg, count)
        from ift.train import STOP, train

        result = train(cfg, only_task=only_task)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["finished"]:
        return 0
    if dist["rank"] == 0:
        record_requeue(cfg.run_dir, STOP["why"] or "stop requested", result)
    return EXIT_REQUEUE


def _only_task(cfg: Config, task: str, overrides) -> None:
    from ift.config import MixtureConfig

    cfg.data.mixture = MixtureConfig()  # as `ift train --only-task`
    if not any(o.startswith("run.name=") for o in overrides):
        cfg.run.name = f"{cfg.run.name}-ft-{task}"


class SlurmTrainJob:
    """The callable `ift submit` pickles: one instance runs in every task of the job. Like
    submitit.helpers.Checkpointable (submitit only looks for a `checkpoint` method; not subclassed
    so that importing this module, and so the `ift` CLI, does not import submitit)."""

    def __init__(self, cfg: Config, only_task: Optional[str] = None):
        self.cfg = cfg
        self.only_task = only_task
        self.stops: list[dict] = []  # why earlier runs of this job stopped (travels with requeues)
        self._reset()

    def _reset(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._box: dict = {}
        self._started = time.time()
        self._sigterm = False
        self._reason_sent = False
        self._recorded = False

    def __getstate__(self) -> dict:  # threads and runtime state stay out of the requeue pickle
        return {"cfg": self.cfg, "only_task": self.only_task, "stops": self.stops}

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
        while True:
            try:
                while self._thread.is_alive():
                    self._thread.join(0.5)
                break
            except UncompletedJobError:  # raised by submitit's handler after self.checkpoint
                if self._box.get("result", {}).get("finished") or "error" in self._box:
                    break  # finished as the signal came (nothing to requeue), or failed (raised below)
                raise
        if "error" in self._box:
            raise self._box["error"]
        result = self._box["result"]
        if not result["finished"] and dist["rank"] == 0:
            log.warning("stopped at step %d before the end without a requeue (%s); `ift submit` the same "
                        "command again to continue from the checkpoint", result["step"], self._why())
        return result

    def _train(self) -> None:
        from ift.train import train

        try:
            self._box["result"] = train(self.cfg, only_task=self.only_task)
        except BaseException as e:  # re-raised in the main thread
            self._box["error"] = e

    def _on_sigterm(self, signum, frame) -> None:
        if self._recorded:  # our own `scontrol requeue` is ending the job
            return
        self._sigterm = True
        _stop_handler("preemption or cancel (SIGTERM)")(signum, frame)

    def _why(self) -> str:
        from ift.train import STOP

        return STOP["why"] or "stop requested"

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

        from ift.train import STOP, request_stop

        if STOP["requested"] and self._reason_sent:  # a second signal while stopping: same wait
            reason = STOP["why"]
        else:
            reason = self._reason()
            request_stop(reason)
            self._reason_sent = True
        wait_s = max(10.0, self.cfg.slurm.signal_delay_s - 20.0)
        log.warning("%s: asking all ranks to checkpoint at the next step boundary (waiting up to %.0fs)", reason, wait_s)
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
            self.stops.append(record_requeue(self.cfg.run_dir, reason, result))
        rec = self.stops[-1]
        if rec["saved"]:
            log.info("checkpoint at step %s saved by all ranks; requeueing job %s", rec["step"], rec["job_id"])
        return DelayedSubmission(self, *args, **kwargs)


# --------------------------------------------------------------------------- submitting


def parse_sweeps(specs: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for spec in specs or []:
        key, sep, values = spec.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise UserError(f"--sweep {spec!r}: expected key.sub=v1,v2,...")
        out.append((key.strip(), vals))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def sweep_points(sweeps: list[tuple[str, list[str]]]) -> list[list[tuple[str, str]]]:
    """Every combination of the sweep values (one job each); [[]] without sweeps."""
    return [list(zip([k for k, _ in sweeps], combo)) for combo in itertools.product(*[v for _, v in sweeps])]


def sweep_suffix(point: list[tuple[str, str]]) -> str:
    """`train.lr=1e-5` -> `lr1e-5`: appended to run.name so every sweep job has its own run dir."""
    return "-".join(f"{k.split('.')[-1]}{_slug(v)}" for k, v in point)


def _parse_extra_sbatch(lines: list[str]) -> dict:
    """slurm.extra_sbatch entries ("--exclusive", "--mail-type=END", "#SBATCH --comment x") as
    submitit additional_parameters; they override the generated lines of the same name."""
    out: dict = {}
    for raw in lines:
        text = raw.strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        if not text.startswith("--") or len(text) < 3:
            raise UserError(f"slurm.extra_sbatch: {raw!r}: give a long option, e.g. --exclusive or --mail-type=END")
        key, _, value = text[2:].replace("=", " ", 1).partition(" ")
        out[key.strip().replace("-", "_")] = value.strip() or True
    return out


def sbatch_parameters(cfgs: list[Config], folder: str, job_name: Optional[str] = None) -> dict:
    """Keyword arguments of submitit's sbatch writer (SlurmExecutor.update_parameters) from the
    `slurm:` section: one task per GPU, GPUs as gres unless slurm.gres is false (CPU clusters);
    srun ends the step when a task fails, and the teardown requeues a crashed job
    (ift.crash_requeue, one run dir per array task)."""
    cfg = cfgs[0]
    s = cfg.slurm
    params: dict = {"job_name": job_name or cfg.run.name, "nodes": s.nodes, "ntasks_per_node": s.gpus_per_node,
                    "cpus_per_task": s.cpus_per_task, "time": s.time_min, "signal_delay_s": s.signal_delay_s}
    if s.gres:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        params["mem"] = f"{s.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    params["setup"] = [
        "# ift: the torch world comes from SLURM_* inside the job (ift.slurm.export_dist_env)",
        "unset " + " ".join(TORCH_ENV),
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        *s.setup,
    ]
    params["srun_args"] = ["--kill-on-bad-exit=1"]
    requeue = [_python(cfg), "-m", "ift.crash_requeue", "--exit-code", '"$ift_rc"',
               "--max-failures", str(s.max_failures),
               "--rank-log", shlex.quote(os.path.join(os.path.abspath(folder), "{job}_{rank}_log.err")),
               *(f"--run-dir {shlex.quote(c.run_dir)}" for c in cfgs)]
    params["teardown"] = [
        "ift_rc=$?  # srun's: on a crash (not a user error) requeue, up to slurm.max_failures times",
        " ".join(requeue),
        "exit $?",
    ]
    extra = _parse_extra_sbatch(s.extra_sbatch)
    if extra:
        params["additional_parameters"] = extra
    return params


def _check_writable(path: str, create: bool) -> None:
    """The run dir (and submitit folder) must be writable from here, and so, on a shared
    filesystem, from the nodes."""
    if create:
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".ift-write-test-"):
                pass
        except OSError as e:
            raise UserError(f"{path} is not writable: {e.strerror or e}") from None
        return
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{path} is not writable ({probe} does not allow creating it)")


def _flag_overrides(args) -> list[str]:
    out = []
    for flag, key in (("nodes", "nodes"), ("gpus_per_node", "gpus_per_node"), ("partition", "partition"),
                      ("time", "time_min"), ("account", "account"), ("qos", "qos")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"slurm.{key}={value}")
    if getattr(args, "cpu", False):
        out.append("slurm.gres=false")
    return out


def plan_jobs(config: str, overrides: list[str], args) -> tuple[str, list[tuple[Config, list[str]]]]:
    """The base run name and (validated Config, its sweep overrides) per job: several with
    --sweep. CLI flags override the slurm section."""
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        raise UserError(f"unrecognized argument(s): {' '.join(bad)} (overrides look like key.sub=value)")
    overrides = [*overrides, *_flag_overrides(args)]
    only_task = getattr(args, "only_task", None)
    base_name = None
    jobs = []
    for point in sweep_points(parse_sweeps(getattr(args, "sweep", None) or [])):
        cfg = load_config(config, [*overrides, *(f"{k}={v}" for k, v in point)])
        if only_task:
            _only_task(cfg, only_task, overrides)
        base_name = base_name or cfg.run.name
        if point:
            cfg.run.name = f"{cfg.run.name}-{sweep_suffix(point)}"
        cfg.run.output_dir = os.path.abspath(cfg.run.output_dir)
        s = cfg.slurm
        if not 0 <= s.signal_delay_s < s.time_min * 60:
            raise UserError(f"slurm.signal_delay_s: must be in [0, slurm.time_min * 60 = {s.time_min * 60}), "
                            f"got {s.signal_delay_s}")
        _parse_extra_sbatch(s.extra_sbatch)
        jobs.append((cfg, [f"{k}={v}" for k, v in point]))
    names = [c.run.name for c, _ in jobs]
    if len(set(names)) != len(names):
        raise UserError(f"--sweep: run names collide: {names}")
    return base_name, jobs


def submitit_folder(cfgs: list[Config], base_name: str) -> str:
    """slurm.folder, else <run dir>/slurm, else (a sweep) <output dir>/<run.name>.sweep/slurm."""
    first = cfgs[0]
    if first.slurm.folder:
        return os.path.abspath(first.slurm.folder)
    if len(cfgs) == 1:
        return os.path.join(first.run_dir, "slurm")
    return os.path.join(first.run.output_dir, f"{base_name}.sweep", "slurm")


def _python(cfg: Config) -> str:
    return cfg.slurm.python or shlex.quote(sys.executable)


def sbatch_script(cfgs: list[Config], folder: str, job_name: Optional[str] = None) -> str:
    """The sbatch file submitit writes for these jobs (an array for several), without submitting."""
    from submitit.slurm.slurm import _make_sbatch_string

    from pathlib import Path

    folder_path = Path(folder).expanduser().absolute()
    params = sbatch_parameters(cfgs, folder, job_name)
    command = " ".join([_python(cfgs[0]), "-u -m submitit.core._submit", shlex.quote(str(folder_path))])
    return _make_sbatch_string(command=command, folder=folder_path,
                               map_count=len(cfgs) if len(cfgs) > 1 else None, **params)


def submit(cfgs: list[Config], folder: str, only_task: Optional[str] = None, job_name: Optional[str] = None) -> list:
    """Submit the jobs (a job array for several) and return submitit Job objects."""
    import submitit

    first = cfgs[0]
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=first.slurm.max_requeues,
                                      python=_python(first))
    executor.update_parameters(**sbatch_parameters(cfgs, folder, job_name))
    if len(cfgs) == 1:
        return [executor.submit(SlurmTrainJob(first, only_task))]
    with executor.batch():
        jobs = [executor.submit(SlurmTrainJob(c, only_task)) for c in cfgs]
    return jobs


def add_submit_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of `ift submit CONFIG [overrides]`; each overrides the `slurm:` config section."""
    g = parser.add_argument_group("Slurm (override the slurm: config section)")
    g.add_argument("--nodes", type=int, help="nodes (slurm.nodes)")
    g.add_argument("--gpus-per-node", type=int,
                   help="GPUs per node = Slurm tasks (ranks) per node (slurm.gpus_per_node)")
    g.add_argument("--cpu", action="store_true",
                   help="CPU-only cluster: request no GPU gres; --gpus-per-node is then only the tasks "
                        "per node (slurm.gres=false)")
    g.add_argument("--partition", help="slurm.partition")
    g.add_argument("--time", type=int, metavar="MIN", help="time limit in minutes (slurm.time_min)")
    g.add_argument("--account", help="slurm.account")
    g.add_argument("--qos", help="slurm.qos")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="one job per value (a job array; repeat for a grid), each with its own "
                             "run.name suffix, e.g. --sweep train.lr=1e-5,2e-5")
    parser.add_argument("--only-task", help="single-task fine-tune baseline on this task, as `ift train`")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    return parser


def cmd_submit(args, extras: list[str]) -> None:
    base_name, planned = plan_jobs(args.config, list(extras), args)
    cfgs = [c for c, _ in planned]
    folder = submitit_folder(cfgs, base_name)
    for cfg in cfgs:
        _check_writable(cfg.run_dir, create=not args.dry_run)
    _check_writable(folder, create=not args.dry_run)
    s = cfgs[0].slurm
    ranks = s.nodes * s.gpus_per_node
    shape = f"{s.nodes} node(s) x {s.gpus_per_node} task(s) = {ranks} rank(s)" + ("" if s.gres else ", no GPU gres")
    from ift.data.prepare import submit_note

    if args.dry_run:
        print(sbatch_script(cfgs, folder, base_name).rstrip("\n"))
        if note := submit_note(cfgs[0]):
            print(f"# {note}")
        print(f"# dry run: nothing submitted; {len(cfgs)} job(s), {shape}; submitit folder {folder}")
        for i, (cfg, point) in enumerate(planned):
            what = f"array task {i}: {' '.join(point)}: " if len(planned) > 1 else ""
            print(f"# {what}run dir {cfg.run_dir}")
        return
    for cfg in cfgs:
        _note_existing(cfg)
    if note := submit_note(cfgs[0]):
        print(note)
    try:
        jobs = submit(cfgs, folder, getattr(args, "only_task", None), base_name)
    except Exception as e:  # sbatch refused (bad partition/account/...) or no Slurm here
        raise UserError(f"submission failed: {str(e).strip()}") from None
    for job, cfg in zip(jobs, cfgs):
        print(f"submitted job {job.job_id}: {cfg.run.name} ({shape})")
        print(f"  run dir: {cfg.run_dir}")
        print(f"  logs:    {job.paths.stdout} and {job.paths.stderr} (rank 0; rank r: _r_ in the name)")
    print(f"watch: squeue -j {str(jobs[0].job_id).split('_')[0]}; time limit {s.time_min} min, USR2 "
          f"{s.signal_delay_s}s before it -> checkpoint + requeue (up to {s.max_requeues} time-outs); a crash requeues up to "
          f"{s.max_failures} time(s)")


def _note_existing(cfg: Config) -> None:
    ckpt_dir = os.path.join(cfg.run_dir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return
    from ift.checkpoint import complete_checkpoints

    done = complete_checkpoints(ckpt_dir)
    if done and cfg.train.resume == "auto":
        print(f"note: {cfg.run_dir} has a checkpoint at step {done[-1][0]}: the job resumes from it (train.resume=auto)")
