"""`ift train --nproc-per-node N [--max-restarts K]`: N local processes under torchrun."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from ift.distributed import free_port

log = logging.getLogger(__name__)


def launch_torchrun(nproc: int, argv: list[str], max_restarts: int = 0) -> int:
    """Re-run this same command under torch.distributed.run with N local processes. When a worker
    dies, torchrun ends the others; then, up to max_restarts times, a fresh torchrun starts them
    all again and they resume from the newest valid checkpoint (train.resume: auto). (torchrun's
    own --max-restarts re-forms the group on the old rendezvous store, where DeepSpeed's new_group
    can read a dead rank's address: seen here as gloo "connectFullMesh ... Connection refused".)"""
    code = 0
    for attempt in range(max_restarts + 1):
        if attempt:
            log.warning(
                "restart %d of %d after exit code %d: resuming from the newest valid checkpoint",
                attempt,
                max_restarts,
                code,
            )
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={nproc}",
            f"--master-port={free_port()}",
            "-m",
            "ift",
            *argv,
        ]
        code = subprocess.call(cmd, env={**os.environ, "IFT_RESTART_COUNT": str(attempt)})
        if code == 0:
            break
    return code
