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
from helpers import REPO, dry_run, read_metrics, save_tiny_llama, submit_cmd, submit_main, train_env, write_config

from ift.launch import job as slurm_job
from ift.launch import requeue as cq
from ift.launch import submit

STEPS = 60  # long enough that a signal sent at step 3 lands mid-run
SIGNAL_AT = 3
START_TIMEOUT = 480  # one job start: imports + DeepSpeed init (+ a first JIT op build) on 2 busy cores
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
CPU_JOB = ["--nodes", "2", "--gpus-per-node", "1", "--cpu", "--time", "15", "slurm.cpus_per_task=1"]


# --------------------------------------------------------------------------- no cluster needed


def test_dry_run_prints_the_sbatch_script(tmp_path, capsys):
    cfg = write_config(tmp_path, "big")
    out = dry_run(
        str(cfg),
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
        "--partition",
        "gpu",
        "--time",
        "120",
        "--account",
        "proj",
        "--qos",
        "high",
        "slurm.mem_gb=200",
        "slurm.constraint=a100",
        "slurm.extra_sbatch=[--exclusive, --mail-type=END]",
        "slurm.setup=[module load cuda]",
    )
    lines = set(out.splitlines())
    for want in (
        "--nodes=4",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--time=120",
        "--account=proj",
        "--qos=high",
        "--mem=200GB",
        "--constraint=a100",
        "--exclusive",
        "--mail-type=END",
        "--signal=USR2@180",
        "--job-name=big",
        "--open-mode=append",
    ):
        assert f"#SBATCH {want}" in lines, f"missing #SBATCH {want} in:\n{out}"
    # srun gets the CPUs per task itself (Slurm 22.05-23.02 do not pass them on) and the GPU binding
    (srun,) = [x for x in out.splitlines() if x.startswith("srun ")]
    assert "--cpus-per-task=8" in srun.split() and "--gpu-bind=none" in srun.split(), srun
    assert out.startswith("#!/bin/bash\n")
    assert "module load cuda" in lines and "export SUBMITIT_EXECUTOR=slurm" in lines
    assert f"{sys.executable} -u -m submitit.core._submit" in out  # the job runs this venv's python
    assert f"run dir {tmp_path / 'runs' / 'big'}" in out
    assert not (tmp_path / "runs").exists(), "a dry run must not create anything"


def test_dry_run_cpu_requests_no_gres(tmp_path, capsys):
    for flags in (["--gpus-per-node", "2", "--cpu"], ["slurm.gpus_per_node=2", "slurm.gres=false"]):
        out = dry_run(str(write_config(tmp_path, "cpu")), *flags)
        sbatch = [x for x in out.splitlines() if x.startswith("#SBATCH")]
        assert "#SBATCH --ntasks-per-node=2" in sbatch, out
        assert not [x for x in sbatch if "gpu" in x or "gres" in x], out
        (srun,) = [x for x in out.splitlines() if x.startswith("srun ")]
        assert "--cpus-per-task=8" in srun.split() and "gpu-bind" not in srun, srun


def test_dry_run_sweep_is_one_array_with_a_run_per_value(tmp_path, capsys):
    out = dry_run(str(write_config(tmp_path, "sw")), "--sweep", "train.lr=1e-5,2e-5")
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --job-name=sw" in out
    assert "%A_%a_0_log.out" in out
    runs = re.findall(r"array task (\d): (\S+): run dir (\S+)", out)
    assert runs == [
        ("0", "train.lr=1e-5", str(tmp_path / "runs" / "sw-lr1e-5")),
        ("1", "train.lr=2e-5", str(tmp_path / "runs" / "sw-lr2e-5")),
    ]


def test_sweep_grid_configs(tmp_path):
    sweeps = ["train.lr=1e-5,2e-5", "train.warmup_steps=0,5"]
    base, jobs = submit.plan_jobs(str(write_config(tmp_path, "g")), [], sweeps)
    assert base == "g" and len(jobs) == 4
    assert [(c.run.name, c.train.lr, c.train.warmup_steps) for c, _ in jobs] == [
        ("g-lr1e-5-warmup_steps0", 1e-5, 0),
        ("g-lr1e-5-warmup_steps5", 1e-5, 5),
        ("g-lr2e-5-warmup_steps0", 2e-5, 0),
        ("g-lr2e-5-warmup_steps5", 2e-5, 5),
    ]


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
        (
            # max_seq_len divisible by 3: the config's own rule (checked at load, first) holds
            [cfg, "train.sequence_parallel=3", "data.max_seq_len=96", "--nodes", "2", "--gpus-per-node", "4"],
            "train.sequence_parallel=3: the world size 8 is not divisible by it",
        ),
    ):
        done = submit_main(argv)
        assert done.returncode == 2, argv
        assert message in done.stderr, argv


def test_torch_env_from_slurm_vars(monkeypatch):
    for k in slurm_job.TORCH_ENV + ("OMP_NUM_THREADS",):
        monkeypatch.delenv(k, raising=False)  # what export_dist_env writes, conftest removes afterwards
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_PROCID", "9")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    dist = slurm_job.export_dist_env()
    env = {k: os.environ[k] for k in slurm_job.TORCH_ENV}
    assert env == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(dist["master_port"]),
    }
    # below the ephemeral ports, where no connection's local port can be holding it
    assert 20000 <= dist["master_port"] < 32768 and os.environ["OMP_NUM_THREADS"] == "6"
    monkeypatch.delenv("MASTER_PORT")
    assert slurm_job.export_dist_env()["master_port"] == dist["master_port"]  # derived from the job id
    monkeypatch.delenv("MASTER_PORT")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job tries another port
    restarted = slurm_job.export_dist_env()["master_port"]
    assert 20000 <= restarted < 32768 and restarted != dist["master_port"]
    monkeypatch.setenv("MASTER_PORT", "29500")  # the user's port wins
    assert slurm_job.export_dist_env()["master_port"] == 29500


def test_job_pickles_without_runtime_state(tmp_path):
    import threading

    import cloudpickle

    from ift.config import load_config

    job = slurm_job.SlurmTrainJob(load_config(str(write_config(tmp_path, "p"))))
    job._thread = threading.Thread(target=lambda: None)
    job._box["result"] = {"finished": False}
    job.stops.append({"reason": "time limit", "step": 3})
    copy = cloudpickle.loads(cloudpickle.dumps(job))
    assert type(copy).__module__ == "ift.launch.job" and copy.stops == job.stops
    assert copy._thread is None and copy._box == {} and copy.cfg.run.name == "p"


def test_dry_run_requeues_crashes_in_the_teardown(tmp_path):
    out = dry_run(str(write_config(tmp_path, "cr")), "slurm.max_failures=5", "--sweep", "train.lr=1e-5,2e-5")
    lines = out.splitlines()
    srun = next(x for x in lines if x.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun.split()  # the first failed task ends the step
    teardown = lines[lines.index("# teardown") + 1 :]
    assert teardown[0].startswith("ift_rc=$?") and teardown[2] == "exit $?", out
    cmd = teardown[1]
    assert '-m ift.crash_requeue --exit-code "$ift_rc" --max-failures 5' in cmd
    assert f"--run-dir {tmp_path / 'runs' / 'cr-lr1e-5'} --run-dir {tmp_path / 'runs' / 'cr-lr2e-5'}" in cmd
    assert f"'{tmp_path / 'runs' / 'cr.sweep' / 'slurm'}/{{job}}_{{rank}}_log.err'" in cmd


# What srun writes when tasks fail (Slurm 22-24), as the batch log holds it.
SRUN_KILLED = [
    "0: 12:00:01 ift.train: step 6",
    "killed:  12%|█▏   | 7/60 [00:00<00:02]srun: error: n2: task 1: Killed",
    "srun: launch/slurm: _step_signal: Terminating StepId=7.0",
    "0: slurmstepd-n1: error: *** STEP 7.0 ON n1 CANCELLED AT 2026-12-03T12:28:46 ***",
    "srun: error: n1: task 0: Terminated",
    "srun: Force Terminated StepId=7.0",
]


def test_crash_requeue_reads_the_first_failed_task_and_its_exception():
    assert cq.first_failed_task(SRUN_KILLED) == {"rank": 1, "node": "n2", "how": "Killed"}
    assert cq.first_failed_task(["srun: error: gpu07: tasks 4-7: Exited with exit code 1"]) == {
        "rank": 4,
        "node": "gpu07",
        "how": "Exited with exit code 1",
    }
    assert cq.first_failed_task(["srun: error: Unable to create step"]) is None
    assert cq.rank_lines(0, None, SRUN_KILLED) == [
        "12:00:01 ift.train: step 6",
        "slurmstepd-n1: error: *** STEP 7.0 ON n1 CANCELLED AT 2026-12-03T12:28:46 ***",
    ]
    tb = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "12:00:02 submitit: done",
    ]
    assert cq.last_exception(tb) == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert cq.last_exception(["ift.config.UserError: train.resume: /x is not a complete checkpoint"]) == (
        "UserError: train.resume: /x is not a complete checkpoint"
    )
    assert cq.last_exception(["[rank0]: RuntimeError: boom", "slurmstepd-n1: error: *** STEP 13.0 CANCELLED"]) == (
        "RuntimeError: boom"
    )  # torch prefixes an uncaught exception's lines with the rank
    assert cq.last_exception(["all good"]) is None


def test_crash_requeue_never_retries_user_errors_and_stops_at_max_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    run = tmp_path / "run"
    user = ["0: error: data.tasks[0].path: no such file", "srun: error: n1: task 0: Exited with exit code 2"]
    assert cq.after_srun(2, str(run), 2, batch_lines=user)[0] == 2
    (rec,) = cq.read_requeues(str(run))
    assert rec["user_error"] and not rec["requeued"] and rec["failed_rank"] == 0 and rec["node"] == "n1"
    assert rec["last_lines"] == ["error: data.tasks[0].path: no such file"]
    assert rec["reason"] == "rank 0 on n1: Exited with exit code 2"

    (run / "requeues.jsonl").write_text(json.dumps({"job_id": "77", "kind": "crash", "requeued": True}) + "\n")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    code, rec = cq.after_srun(137, str(run), 1, batch_lines=SRUN_KILLED)
    assert code == 137 and not rec["requeued"] and not rec["user_error"]  # 1 crash requeue already: FAILED
    assert rec["reason"] == "rank 1 on n2: Killed" and rec["failures"] == 2 and rec["restart_count"] == 1
    assert cq.after_srun(0, str(run), 1, batch_lines=[]) == (0, None)

    stopped = tmp_path / "stopped"  # the step ended because a time-limit stop already requeued the job
    stopped.mkdir()
    (stopped / "requeues.jsonl").write_text(json.dumps({"job_id": "77", "restart_count": 1, "saved": True}) + "\n")
    assert cq.after_srun(143, str(stopped), 2, batch_lines=SRUN_KILLED) == (143, None)


# --------------------------------------------------------------------------- on the local cluster


def job_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], capture_output=True, text=True, timeout=30
    ).stdout.split("\n")
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
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what} (job {job_id}, state "
        f"{job_state(job_id)})\n{log_tails(logs)}"
    )


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
    assert "SLURM_RESTART_COUNT=0" in rank0 and not (run / "requeues.jsonl").exists()


@pytest.mark.slurm
def test_submitted_job_trains_with_sequence_parallelism(reference, workdir):
    """The 2 ranks of the 2 nodes as one sequence-parallel group (on GPUs a group stays inside a
    node; here each node has one task): ift submit's world and rank layout carry SP."""
    job, run, logs = ift_submit(workdir, "sp2", "train.sequence_parallel=2")
    wait_done(job, START_TIMEOUT, logs)
    complete_ckpt(run, STEPS)
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert metrics[-1]["loss"] < metrics[0]["loss"]


@pytest.mark.slurm
def test_signalled_job_checkpoints_requeues_and_resumes_exactly(reference, workdir):
    began = time.time()
    job, run, logs = ift_submit(workdir, "preempted")
    wait_for(lambda: steps_logged(run) >= SIGNAL_AT, START_TIMEOUT, f"step {SIGNAL_AT}", job, logs)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what Slurm sends before the time limit
    wait_done(job, 2 * START_TIMEOUT, logs)
    print(f"\n[slurm] signalled + requeued job {job}: {time.time() - began:.0f}s")

    (stop,) = cq.read_requeues(str(run))
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


def sbatch_job(workdir, name: str, *overrides: str) -> tuple[str, Path, Path]:
    """`sbatch slurm/train.sbatch CONFIG run.name=NAME ...`: 2 tasks on one node, CPU only."""
    root = workdir["root"]
    out = root / f"sbatch-{name}-%j.out"
    cmd = [
        "sbatch",
        "--parsable",
        "--nodes=1",
        "--ntasks-per-node=2",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        "--time=15",
        f"--output={out}",
        f"--export=ALL,IFT_PYTHON={sys.executable}",
        "slurm/train.sbatch",
        str(workdir["config"]),
        f"run.name={name}",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=str(REPO), env=train_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    return job, root / "runs" / name, root / f"sbatch-{name}-{job}.out"


@pytest.mark.slurm
def test_sbatch_template_trains_requeues_and_checkpoints(reference, workdir, monkeypatch):
    began = time.time()
    # rank 0 is slow to record the stop: under srun --kill-on-bad-exit a rank that left with exit 3
    # first would get it killed before requeues.jsonl is written; every rank leaves after it. Then
    # rank 1 is slow to leave: srun ends it once rank 0 left with 3 (143), still a stop.
    monkeypatch.setenv("IFT_STALL", "record_stop:5@rank0,exit:20@rank1")
    job, run, log = sbatch_job(workdir, "sbatch")
    logs = [log]
    wait_for(lambda: steps_logged(run) >= SIGNAL_AT, START_TIMEOUT, f"step {SIGNAL_AT}", job, logs)
    # as `#SBATCH --signal=B:USR2@90` does: to the batch script, whose trap forwards it to the ranks
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)
    wait_done(job, 2 * START_TIMEOUT, logs)
    print(f"\n[slurm] sbatch job {job} (signalled + requeued): {time.time() - began:.0f}s")

    (stop,) = cq.read_requeues(str(run))
    assert stop["reason"] == "time limit (SIGUSR2)" and SIGNAL_AT <= stop["step"] < STEPS, stop
    complete_ckpt(run, stop["step"])
    complete_ckpt(run, STEPS)
    text = log.read_text(errors="replace")  # srun --label may split a UTF-8 progress bar
    assert "ift: checkpoint saved; requeueing job" in text and "restart 1" in text
    # srun ended rank 1 while it was leaving (SIGTERM, then SIGKILL: 143 or 137); still a stop
    assert re.search(r"rank 0 recorded the stop: a stop \(srun's (137|143) ", text), text[-3000:]
    assert re.search(r"^1: .*rank 1/2 \(local 1\)", text, re.M), "srun --label: task lines carry their rank"
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert metrics[-1]["loss"] == read_metrics(reference["run"])[-1]["loss"]  # same env contract, same run


# --------------------------------------------------------------------------- crashes on the local cluster

CRASH_SAVE_EVERY = 5  # the crashed job resumes from step 5, so steps 6..CRASH_AT run twice


def losses(run: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(run)}  # a redone step's line replaces the first


def crash_record(run: Path) -> dict:
    (rec,) = cq.read_requeues(str(run))
    assert rec["kind"] == "crash" and rec["restart_count"] == 0 and rec["failures"] == 1, rec
    return rec


@pytest.mark.slurm
def test_submitted_job_with_a_killed_rank_is_requeued_and_resumes_exactly(reference, workdir, monkeypatch):
    began = time.time()
    monkeypatch.setenv("IFT_FAULT", "step@7@rank1")  # SIGKILL: as the OOM killer or a lost GPU would
    job, run, logs = ift_submit(workdir, "killed", f"train.save_every={CRASH_SAVE_EVERY}")
    wait_done(job, 2 * START_TIMEOUT, logs)
    print(f"\n[slurm] crashed + requeued job {job}: {time.time() - began:.0f}s")

    rec = crash_record(run)
    assert rec["requeued"] and not rec["user_error"] and rec["max_failures"] == 2
    assert rec["failed_rank"] == 1 and rec["node"] == "n2" and rec["reason"] == "rank 1 on n2: Killed", rec
    assert rec["checkpoint_step"] == CRASH_SAVE_EVERY and rec["step"] >= CRASH_SAVE_EVERY, rec
    rank1 = (run / "slurm" / f"{job}_1_log.err").read_text().splitlines()
    tail = rec["last_lines"]  # rank 1's own log (no progress bars), up to its death
    assert tail and set(tail) <= set(rank1), tail
    batch_out = (run / "slurm" / f"{job}_0_log.out").read_text()  # the teardown's decision
    assert "ift: requeueing job" in batch_out and "(crash 1 of at most 2)" in batch_out
    rank0 = (run / "slurm" / f"{job}_0_log.err").read_text()
    assert "restart 1 (SLURM_RESTART_COUNT=1): the previous run failed after step" in rank0
    assert f"resumed from {run}/checkpoints/step_{CRASH_SAVE_EVERY:08d}" in rank0
    assert losses(run) == losses(reference["run"])  # every step, fp32: bit-equal


@pytest.mark.slurm
def test_sbatch_job_with_a_failing_rank_is_requeued_and_resumes_exactly(reference, workdir, monkeypatch):
    began = time.time()
    monkeypatch.setenv("IFT_FAULT", "step@7@rank0@raise")  # an exception: a bug, a CUDA error
    job, run, log = sbatch_job(workdir, "raised", f"train.save_every={CRASH_SAVE_EVERY}")
    wait_done(job, 2 * START_TIMEOUT, [log])
    print(f"\n[slurm] sbatch job {job} (crashed + requeued): {time.time() - began:.0f}s")

    rec = crash_record(run)
    assert rec["requeued"] and rec["failed_rank"] == 0 and rec["node"] == "n1", rec
    assert rec["reason"] == (
        "rank 0 on n1: Exited with exit code 1: RuntimeError: IFT_FAULT=step@7@rank0@raise: injected failure on rank 0"
    ), rec
    assert rec["checkpoint_step"] == CRASH_SAVE_EVERY
    text = log.read_text(errors="replace")  # srun --label may split a UTF-8 progress bar
    assert "ift: requeueing job" in text and "restart 1" in text
    assert losses(run) == losses(reference["run"])


@pytest.mark.slurm
def test_user_errors_and_spent_failures_are_not_requeued(slurm_cluster, workdir, monkeypatch):
    """Two jobs at once: a user error found inside the job (exit 1 through submitit, its exception
    is ift's UserError) and a crash with slurm.max_failures=0. Both end FAILED, never requeued."""
    user_job, user_run, user_logs = ift_submit(workdir, "usererr", "train.resume=/nonexistent/step_00000001")
    monkeypatch.setenv("IFT_FAULT", "step@2@rank1")
    crash_job, crash_run, crash_log = sbatch_job(workdir, "spent", "slurm.max_failures=0")
    for job, logs in ((user_job, user_logs), (crash_job, [crash_log])):
        wait_for(lambda job=job: job_state(job) in TERMINAL, START_TIMEOUT, "the job to end", job, logs)
        assert job_state(job) == "FAILED", log_tails(logs)

    rec = crash_record(user_run)
    assert rec["user_error"] and not rec["requeued"], rec
    assert "UserError: train.resume: /nonexistent/step_00000001" in rec["reason"], rec
    rec = crash_record(crash_run)
    assert not rec["user_error"] and not rec["requeued"] and rec["reason"] == "rank 1 on n1: Killed", rec
    assert "ift: not requeueing: 0 crash requeue(s) already (slurm.max_failures=0)" in crash_log.read_text(
        errors="replace"
    )


@pytest.mark.slurm
def test_eval_inside_a_slurm_job_shards_over_its_tasks(slurm_cluster, tmp_path):
    """`srun ift eval` with 2 tasks: one rank per task (SLURM_* -> the torch world), the same
    predictions as one process."""

    from ift.eval.evaluate import evaluate

    model = save_tiny_llama(
        tmp_path / "model", ["Tell me the animal. Input: bat peach cocoa Output: bat"] * 5, initializer_range=0.3
    )
    args = [
        "--tasks",
        "builtin:heldout",
        "--limit",
        "3",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
        "--out",
        str(tmp_path / "eval"),
        "--no-wandb",
    ]
    out = tmp_path / "eval-%j.out"
    wrap = " ".join([f"srun {sys.executable} -m ift eval {model}", *args, "--name two"])
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            "--time=10",
            f"--output={out}",
            "--wrap",
            wrap,
        ],
        cwd=str(REPO),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    wait_for(lambda: job_state(job_id) in TERMINAL, 300, "the eval job to end", job_id, [tmp_path / "eval-*.out"])
    assert job_state(job_id) == "COMPLETED", log_tails([tmp_path / "eval-*.out"])
    two = json.loads((tmp_path / "eval" / "two.json").read_text())
    one = evaluate(
        str(model),
        tasks="builtin:heldout",
        limit=3,
        max_new_tokens=4,
        batch_size=2,
        out=str(tmp_path / "eval"),
        name="one",
        wandb=False,
    )
    assert two["speed"]["processes"] == 2 and one["speed"]["processes"] == 1
    assert [e["prediction"] for e in two["examples"]] == [e["prediction"] for e in one["examples"]]
    assert two["tasks"] == one["tasks"]
