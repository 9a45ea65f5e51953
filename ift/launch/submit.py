"""`ift submit`: plan Slurm jobs from a config (sweeps, sbatch parameters from the `slurm:` section)
and submit them with submitit. What runs inside the job is ift.launch.job."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence

from ift.config import Config, load_config
from ift.errors import UserError
from ift.launch.job import TORCH_ENV, SlurmTrainJob
from ift.rundir import RunDir


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


def sbatch_parameters(cfgs: list[Config], folder: str, job_name: str | None = None) -> dict:
    """Keyword arguments of submitit's sbatch writer (SlurmExecutor.update_parameters) from the
    `slurm:` section: one task per GPU, GPUs as gres unless slurm.gres is false (CPU clusters);
    srun ends the step when a task fails, and the teardown requeues a crashed job
    (ift.crash_requeue, one run dir per array task)."""
    cfg = cfgs[0]
    s = cfg.slurm
    params: dict = {
        "job_name": job_name or cfg.run.name,
        "nodes": s.nodes,
        "ntasks_per_node": s.gpus_per_node,
        "cpus_per_task": s.cpus_per_task,
        "time": s.time_min,
        "signal_delay_s": s.signal_delay_s,
    }
    if s.gres:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        params["mem"] = f"{s.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    params["setup"] = [
        "# ift: the torch world comes from SLURM_* inside the job (ift.launch.job.export_dist_env)",
        "unset " + " ".join(TORCH_ENV),
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        *s.setup,
    ]
    # srun gets the CPUs per task itself: Slurm 22.05-23.02 do not pass SLURM_CPUS_PER_TASK from
    # sbatch to srun. --gpu-bind=none: every task sees the node's GPUs and takes LOCAL_RANK (NCCL
    # then sees its peers for NVLink/P2P); a site's --gpus-per-task=1 works too (ift.distributed).
    params["srun_args"] = [
        "--kill-on-bad-exit=1",
        f"--cpus-per-task={s.cpus_per_task}",
        *(["--gpu-bind=none"] if s.gres else []),
    ]
    requeue = [
        _python(cfg),
        "-m",
        "ift.crash_requeue",
        "--exit-code",
        '"$ift_rc"',
        "--max-failures",
        str(s.max_failures),
        "--rank-log",
        shlex.quote(os.path.join(os.path.abspath(folder), "{job}_{rank}_log.err")),
        *(f"--run-dir {shlex.quote(c.run_dir)}" for c in cfgs),
    ]
    params["teardown"] = [
        "ift_rc=$?  # srun's: on a crash (not a user error) requeue, up to slurm.max_failures times",
        " ".join(requeue),
        "exit $?",
    ]
    extra = s.sbatch_options()
    if extra:
        params["additional_parameters"] = extra
    return params


def check_writable(path: str, create: bool) -> None:
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


def flag_overrides(flags: dict) -> list[str]:
    """`ift submit`'s Slurm flags ({flag: value}, None when not given) as slurm.* overrides."""
    out = []
    for flag, key in (
        ("nodes", "nodes"),
        ("gpus_per_node", "gpus_per_node"),
        ("partition", "partition"),
        ("time", "time_min"),
        ("account", "account"),
        ("qos", "qos"),
    ):
        if flags.get(flag) is not None:
            out.append(f"slurm.{key}={flags[flag]}")
    if flags.get("cpu"):
        out.append("slurm.gres=false")
    return out


def plan_jobs(
    config: str, overrides: list[str], sweeps: Sequence[str] = ()
) -> tuple[str, list[tuple[Config, list[str]]]]:
    """The base run name and (validated Config, its sweep overrides) per job: one per combination
    of the --sweep values (`key=v1,v2`)."""
    base_name = ""
    jobs = []
    for point in sweep_points(parse_sweeps(list(sweeps))):
        cfg = load_config(config, [*overrides, *(f"{k}={v}" for k, v in point)])
        base_name = base_name or cfg.run.name
        if point:
            cfg.run.name = f"{cfg.run.name}-{sweep_suffix(point)}"
        cfg.run.output_dir = os.path.abspath(cfg.run.output_dir)
        s = cfg.slurm
        from ift import sequence_parallel

        sequence_parallel.check(cfg, s.nodes * s.gpus_per_node)  # one Slurm task (rank) per GPU
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
        return RunDir(first.run_dir).slurm
    return os.path.join(first.run.output_dir, f"{base_name}.sweep", "slurm")


def _python(cfg: Config) -> str:
    return cfg.slurm.python or shlex.quote(sys.executable)


def sbatch_script(cfgs: list[Config], folder: str, job_name: str | None = None) -> str:
    """The sbatch file submitit writes for these jobs (an array for several), without submitting."""
    from pathlib import Path

    from submitit.slurm.slurm import _make_sbatch_string

    folder_path = Path(folder).expanduser().absolute()
    params = sbatch_parameters(cfgs, folder, job_name)
    command = " ".join([_python(cfgs[0]), "-u -m submitit.core._submit", shlex.quote(str(folder_path))])
    return _make_sbatch_string(
        command=command, folder=folder_path, map_count=len(cfgs) if len(cfgs) > 1 else None, **params
    )


def submit(cfgs: list[Config], folder: str, job_name: str | None = None) -> list:
    """Submit the jobs (a job array for several) and return submitit Job objects."""
    import submitit

    first = cfgs[0]
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=first.slurm.max_requeues, python=_python(first))
    executor.update_parameters(**sbatch_parameters(cfgs, folder, job_name))
    if len(cfgs) == 1:
        return [executor.submit(SlurmTrainJob(first))]
    with executor.batch():
        jobs = [executor.submit(SlurmTrainJob(c)) for c in cfgs]
    return jobs


def existing_checkpoint_note(cfg: Config) -> str | None:
    """What a submission resumes from, if the run directory already has a checkpoint."""
    step = RunDir(cfg.run_dir).newest_checkpoint()
    if step is not None and cfg.train.resume == "auto":
        return f"note: {cfg.run_dir} has a checkpoint at step {step}: the job resumes from it (train.resume=auto)"
    return None
