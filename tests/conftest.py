"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# DeepSpeed binds its log handler to sys.stdout at import. Imported first inside a test, that is the
# test's capture stream, closed afterwards: a later DeepSpeed warning then crashes the session.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402,F401

from ift.launch.job import TORCH_ENV  # noqa: E402


@pytest.fixture(autouse=True)
def _torch_world_restored():
    """A test that exports a torch world into os.environ (export_dist_env does, by design) must not
    leave it to the next: an in-process evaluate() would then rendezvous with that world's master."""
    before = {k: os.environ.get(k) for k in TORCH_ENV}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# --------------------------------------------------------------------------- Slurm

# start-slurm.sh / stop-slurm.sh of the shared folder beside the repository (CI: a fresh clone
# with shared/ beside it); IFT_SLURM_SCRIPTS points elsewhere.
SLURM_SCRIPTS = Path(os.environ.get("IFT_SLURM_SCRIPTS", REPO.parent / "shared" / "slurm"))
SLURM_NODES, SLURM_CPUS = 2, 4  # CPUS=4 > cores: two 2-task jobs can run at once instead of deadlocking
SLURM_LOCK = "/tmp/ift-slurm-cluster.lock"  # one pytest session at a time owns the cluster


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    nodes = [line.split() for line in out.stdout.splitlines() if line.strip()]
    return (
        out.returncode == 0
        and len(nodes) >= SLURM_NODES
        and all(s.rstrip("*") in ("idle", "mix", "alloc") for _, s in nodes)
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real Slurm cluster on this machine (Debian slurm-wlm + munge + accounting, fake nodes
    n1..n2 with 4 CPUs each), started with shared/slurm/start-slurm.sh and stopped at the end of
    the session. Packages are apt-installed only when Slurm is missing. A cluster that is already
    up is used and left running. If it cannot start, the tests are skipped with the reason, or
    fail when CI=true."""
    in_ci = os.environ.get("CI") == "true"

    def unavailable(reason: str):
        msg = f"local Slurm cluster unavailable: {reason}"
        if in_ci:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)

    logs = tmp_path_factory.mktemp("slurm-cluster")
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(open(SLURM_LOCK, "w"))
        deadline = time.time() + 900
        while True:  # another pytest session may be using the cluster: wait for it
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.time() > deadline:
                    unavailable(f"{SLURM_LOCK} held by another session for 15 min")
                time.sleep(2)
        if _cluster_up():
            yield {"nodes": SLURM_NODES, "started": False}
            return
        start, stop = SLURM_SCRIPTS / "start-slurm.sh", SLURM_SCRIPTS / "stop-slurm.sh"
        if not start.exists():
            unavailable(f"{start} not found (set IFT_SLURM_SCRIPTS)")
        if os.geteuid() != 0:
            unavailable("start-slurm.sh must run as root")
        env = dict(os.environ, NODES=str(SLURM_NODES), CPUS=str(SLURM_CPUS), INSTALL="1")
        began = time.time()
        if shutil.which("slurmctld") and shutil.which("slurmdbd") and shutil.which("munged"):
            env["INSTALL"] = "0"
        else:
            upd = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, timeout=600)
            if upd.returncode != 0:
                unavailable(f"apt-get update failed: {upd.stderr.strip()[-500:]}")
        log_path = logs / "start-slurm.log"
        with open(log_path, "w") as log:
            try:
                code = subprocess.run(
                    ["bash", str(start)], env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900
                ).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        if code != 0 or not _cluster_up():
            subprocess.run(["bash", str(stop)], capture_output=True, timeout=180)
            unavailable(f"start-slurm.sh exited {code}:\n{log_path.read_text()[-2000:]}")
        print(f"\n[slurm] cluster up in {time.time() - began:.0f}s (install={env['INSTALL']})")
        stack.callback(lambda: subprocess.run(["bash", str(stop)], capture_output=True, timeout=180))
        yield {"nodes": SLURM_NODES, "started": True}
