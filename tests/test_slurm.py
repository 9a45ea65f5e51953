"""`ift submit` (submitit) and slurm/train.sbatch against a real local Slurm cluster, plus the
parts that need no cluster (the sbatch script of --dry-run, sweeps, the SLURM_* -> torch env).

The cluster tests share one tiny 2-rank CPU config (gloo, ZeRO-2, a 2-layer 32-wide Llama):
an uninterrupted `ift submit` run is the reference; a submitted job signalled mid-run (USR2, as
Slurm before a time limit) and an sbatch job signalled the same way must checkpoint on all ranks,
requeue, resume and end with exactly the same fp32 loss.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, read_metrics, train_env, write_config

import ift.slurm as slurm

STEPS = 60  # long enough that a signal sent at step 3 lands mid-run
SIGNAL_AT = 3
START_TIMEOUT = 480  # one job start: imports + DeepSpeed init (+ a first JIT op build) on 2 busy cores
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
CPU_JOB = ["--nodes", "2", "--gpus-per-node", "1", "--cpu", "--time", "15", "slurm.cpus_per_task=1"]


def submit_cmd() -> list[str]:
    return [sys.executable, "-m", "ift", "submit"]


def submit_main(argv: list[str]) -> subprocess.CompletedProcess:
    """`ift submit ...` in a subprocess, as a user runs it."""
    return subprocess.run([*submit_cmd(), *argv], capture_output=True, text=True, env=train_env(), timeout=120)


# --------------------------------------------------------------------------- no cluster needed


def _dry_run(*argv) -> str:
    done = submit_main([*argv, "--dry-run"])
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dry_run_prints_the_sbatch_script(tmp_path, capsys):
    cfg = write_config(tmp_path, "big")
    out = _dry_run(str(cfg), "--nodes", "4", "--gpus-per-node", "8", "--partition", "gpu", "--time", "120",
                   "--account", "proj", "--qos", "high", "slurm.mem_gb=200", "slurm.constraint=a100",
                   "slurm.extra_sbatch=[--exclusive, --mail-type=END]", "slurm.setup=[module load cuda]")
    lines = set(out.splitlines())
    for want in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=8", "--partition=gpu",
                 "--time=120", "--account=proj", "--qos=high", "--mem=200GB", "--constraint=a100", "--exclusive",
                 "--mail-type=END", "--signal=USR2@120", "--job-name=big", "--open-mode=append"):
        assert f"#SBATCH {want}" in lines, f"missing #SBATCH {want} in:\n{out}"
    assert out.startswith("#!/bin/bash\n")
    assert "module load cuda" in lines and "export SUBMITIT_EXECUTOR=slurm" in lines
    assert f"{sys.executable} -u -m submitit.core._submit" in out  # the job runs this venv's python
    assert f"run dir {tmp_path / 'runs' / 'big'}" in out
    assert not (tmp_path / "runs").exists(), "a dry run must not create anything"


def test_dry_run_cpu_requests_no_gres(tmp_path, capsys):
    for flags in (["--gpus-per-node", "2", "--cpu"], ["slurm.gpus_per_node=2", "slurm.gres=false"]):
        out = _dry_run(str(write_config(tmp_path, "cpu")), *flags)
        sbatch = [x for x in out.splitlines() if x.startswith("#SBATCH")]
        assert "#SBATCH --ntasks-per-node=2" in sbatch, out
        assert not [x for x in sbatch if "gpu" in x or "gres" in x], out


def test_dry_run_sweep_is_one_array_with_a_run_per_value(tmp_path, capsys):
    out = _dry_run(str(write_config(tmp_path, "sw")), "--sweep", "train.lr=1e-5,2e-5")
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --job-name=sw" in out
    assert "%A_%a_0_log.out" in out
    runs = re.findall(r"array task (\d): (\S+): run dir (\S+)", out)
    assert runs == [("0", "train.lr=1e-5", str(tmp_path / "runs" / "sw-lr1e-5")),
                    ("1", "train.lr=2e-5", str(tmp_path / "runs" / "sw-lr2e-5"))]


def test_sweep_grid_configs(tmp_path):
    class Args:
        sweep = ["train.lr=1e-5,2e-5", "train.warmup_steps=0,5"]
        only_task = None
    base, jobs = slurm.plan_jobs(str(write_config(tmp_path, "g")), [], Args)
    assert base == "g" and len(jobs) == 4
    assert [(c.run.name, c.train.lr, c.train.warmup_steps) for c, _ in jobs] == [
        ("g-lr1e-5-warmup_steps0", 1e-5, 0), ("g-lr1e-5-warmup_steps5", 1e-5, 5),
        ("g-lr2e-5-warmup_steps0", 2e-5, 0), ("g-lr2e-5-warmup_steps5", 2e-5, 5)]


def test_submit_validates_before_submitting(tmp_path, capsys):
    cfg = str(write_config(tmp_path, "bad"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for argv, message in (
        ([cfg, "train.lr=-1"], "train.lr"),
        ([cfg, "--sweep", "train.nope=1,2"], "unknown config key 'train.nope'"),
        ([cfg, "--sweep", "train.lr"], "--sweep"),
        ([cfg, f"run.output_dir={blocker}"], "not writable"),
        ([cfg, "slurm.extra_sbatch=[-x]"], "slurm.extra_sbatch"),
        ([cfg, "slurm.signal_delay_s=4000"], "slurm.signal_delay_s"),
    ):
        done = submit_main(argv)
        assert done.returncode == 2, argv
        assert message in done.stderr, argv


def test_torch_env_from_slurm_vars(monkeypatch):
    for k in slurm.TORCH_ENV + ("OMP_NUM_THREADS",):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_PROCID", "9")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    dist = slurm.export_dist_env()
    env = {k: os.environ[k] for k in slurm.TORCH_ENV}
    assert env == {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8",
                   "MASTER_ADDR": "gpu07", "MASTER_PORT": str(dist["master_port"])}
    assert 20000 <= dist["master_port"] <= 60000 and os.environ["OMP_NUM_THREADS"] == "6"
    monkeypatch.delenv("MASTER_PORT")
    assert slurm.export_dist_env()["master_port"] == dist["master_port"]  # derived from the job id


def test_job_pickles_without_runtime_state(tmp_path):
    import threading

    import cloudpickle

    from ift.config import load_config

    job = slurm.SlurmTrainJob(load_config(str(write_config(tmp_path, "p"))))
    job._thread = threading.Thread(target=lambda: None)
    job._box["result"] = {"finished": False}
    job.stops.append({"reason": "time limit", "step": 3})
    copy = cloudpickle.loads(cloudpickle.dumps(job))
    assert type(copy).__module__ == "ift.slurm" and copy.stops == job.stops
    assert copy._thread is None and copy._box == {} and copy.cfg.run.name == "p"


# --------------------------------------------------------------------------- on the local cluster


def job_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], capture_output=True,
                         text=True, timeout=30).stdout.split("\n")
    states = [s.split()[0] for s in out if s.strip()]
    return states[-1] if states else "UNKNOWN"


def log_tails(patterns) -> str:
    parts = []
    for pattern in patterns:
        for path in sorted(glob.glob(str(pattern))):
            text = Path(path).read_text(errors="replace")
            lines = [x for x in text.splitlines() if not re.match(r"^\S+: +\d+%\|", x)]  # no tqdm bars
            parts.append(f"--- {path}\n" + "\n".join(lines[-40:]))
    return "\n".join(parts)


def wait_for(cond, timeout: float, what: str, job_id: str, logs) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    subprocess.run(["scancel", job_id], capture_output=True)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (job {job_id}, state "
                         f"{job_state(job_id)})\n{log_tails(logs)}")


def wait_done(job_id: str, timeout: float, logs) -> None:
    wait_for(lambda: job_state(job_id) in TERMINAL, timeout, "the job to end", job_id, logs)
    state = job_state(job_id)
    assert state == "COMPLETED", f"job {job_id} ended {state}\n{log_tails(logs)}"


def steps_logged(run: Path) -> int:
    try:
        return len(read_metrics(run))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A fresh folder per test run for configs, run dirs, submitit folders and the data cache."""
    root = tmp_path_factory.mktemp("slurm-runs")
    return {"root": root, "config": write_config(root, "tiny", train={"max_steps": STEPS})}


def ift_submit(workdir, name: str, *argv: str) -> tuple[str, Path, list]:
    cmd = [*submit_cmd(), str(workdir["config"]), f"run.name={name}", *CPU_JOB, *argv]
    proc = subprocess.run(cmd, cwd=str(REPO), env=train_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    m = re.search(r"submitted job (\d+)", proc.stdout)
    assert m, proc.stdout
    run = workdir["root"] / "runs" / name
    assert f"run dir: {run}" in proc.stdout and f"{run}/slurm/{m.group(1)}_0_log.out" in proc.stdout, proc.stdout
    return m.group(1), run, [run / "slurm" / "*_log.*"]


def complete_ckpt(run: Path, step: int) -> Path:
    path = run / "checkpoints" / f"step_{step:08d}"
    assert (path / "COMPLETE").exists(), f"no complete checkpoint {path}"
    for rank in (0, 1):  # ZeRO-2: every rank wrote its optimizer shard and RNG state
        assert (path / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").exists(), path
        assert (path / "rng" / f"rank_{rank}.pt").exists(), path
    return path


@pytest.fixture(scope="module")
def reference(slurm_cluster, workdir):
    """An uninterrupted `ift submit` run: 2 ranks on the 2 fake nodes."""
    began = time.time()
    job, run, logs = ift_submit(workdir, "ref")
    wait_done(job, START_TIMEOUT, logs)
    print(f"\n[slurm] uninterrupted job {job}: {time.time() - began:.0f}s")
    return {"job": job, "run": run, "logs": logs}


@pytest.mark.slurm
def test_submit_runs_two_ranks_and_checkpoints(reference):
    run = reference["run"]
    complete_ckpt(run, STEPS)
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    rank0 = (run / "slurm" / f"{reference['job']}_0_log.err").read_text()
    rank1 = (run / "slurm" / f"{reference['job']}_1_log.err").read_text()
    assert "rank 0/2 (local 0) on n1, master n1:" in rank0 and "rank 1/2 (local 0) on n2, master n1:" in rank1
    assert "SLURM_RESTART_COUNT=0" in rank0 and not (run / slurm.REQUEUES_FILE).exists()


@pytest.mark.slurm
def test_signalled_job_checkpoints_requeues_and_resumes_exactly(reference, workdir):
    began = time.time()
    job, run, logs = ift_submit(workdir, "preempted")
    wait_for(lambda: steps_logged(run) >= SIGNAL_AT, START_TIMEOUT, f"step {SIGNAL_AT}", job, logs)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what Slurm sends before the time limit
    wait_done(job, 2 * START_TIMEOUT, logs)
    print(f"\n[slurm] signalled + requeued job {job}: {time.time() - began:.0f}s")

    (stop,) = slurm.read_requeues(str(run))
    assert stop["job_id"] == job and stop["restart_count"] == 0 and stop["saved"], stop
    assert "USR2" in stop["reason"] and SIGNAL_AT <= stop["step"] < STEPS, f"not stopped mid-run: {stop}"
    complete_ckpt(run, stop["step"])  # the stop checkpoint: saved by every rank together
    complete_ckpt(run, STEPS)
    rank0 = (run / "slurm" / f"{job}_0_log.err").read_text()
    assert f"restart 1 (SLURM_RESTART_COUNT=1): the previous run stopped at step {stop['step']}: " in rank0
    assert f"resumed from {run}/checkpoints/step_{stop['step']:08d}" in rank0
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert metrics[-1]["loss"] == read_metrics(reference["run"])[-1]["loss"]  # fp32: bit-equal


@pytest.mark.slurm
def test_sbatch_template_trains_requeues_and_checkpoints(reference, workdir):
    began = time.time()
    root, name = workdir["root"], "sbatch"
    run, out = root / "runs" / name, root / "sbatch-%j.out"
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
           "--time=15", f"--output={out}", f"--export=ALL,IFT_PYTHON={sys.executable}",
           "slurm/train.sbatch", str(workdir["config"]), f"run.name={name}"]
    proc = subprocess.run(cmd, cwd=str(REPO), env=train_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    logs = [root / f"sbatch-{job}.out"]
    wait_for(lambda: steps_logged(run) >= SIGNAL_AT, START_TIMEOUT, f"step {SIGNAL_AT}", job, logs)
    # as `#SBATCH --signal=B:USR2@90` does: to the batch script, whose trap forwards it to the ranks
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)
    wait_done(job, 2 * START_TIMEOUT, logs)
    print(f"\n[slurm] sbatch job {job} (signalled + requeued): {time.time() - began:.0f}s")

    (stop,) = slurm.read_requeues(str(run))
    assert stop["reason"] == "time limit (SIGUSR2)" and SIGNAL_AT <= stop["step"] < STEPS, stop
    complete_ckpt(run, stop["step"])
    complete_ckpt(run, STEPS)
    log = logs[0].read_text()
    assert "ift: checkpoint saved; requeueing job" in log and "restart 1" in log
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert metrics[-1]["loss"] == read_metrics(reference["run"])[-1]["loss"]  # same env contract, same run
