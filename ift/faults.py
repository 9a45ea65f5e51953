"""Fault injection, for the tests only (tests/integration/test_faults.py, test_checkpoint.py, test_slurm.py).

One environment variable, IFT_FAULT="<point>@<step>[@rank<r>][@raise]", ends the process at one point of
the run; without it every call is a no-op. By default the process kills itself with SIGKILL (no cleanup,
as a lost node or the OOM killer would); with @raise it raises RuntimeError instead (a bug, a CUDA
error). Points:
- step:   after optimizer step <step> (and its logging)
- save:   inside the save of step <step>, after the shards are written, before the manifest and COMPLETE
- resume: right after the checkpoint of step <step> was loaded, before the first step
With @rank<r> only that rank fails (torchrun or srun then ends the others); without it every rank does.
Only a launch's first attempt fails: the processes `ift train --max-restarts` starts again
(IFT_RESTART_COUNT) and requeued Slurm jobs (SLURM_RESTART_COUNT) get past it.
"""

from __future__ import annotations

import os
import signal


def maybe_die(point: str, step: int, rank: int = 0) -> None:
    spec = os.environ.get("IFT_FAULT")
    if not spec or any(os.environ.get(v, "0") not in ("", "0") for v in ("IFT_RESTART_COUNT", "SLURM_RESTART_COUNT")):
        return
    parts = spec.split("@")
    if parts[0] != point or int(parts[1]) != step:
        return
    ranks = [p for p in parts[2:] if p.startswith("rank")]
    if ranks and ranks[0] != f"rank{rank}":
        return
    if "raise" in parts[2:]:
        raise RuntimeError(f"IFT_FAULT={spec}: injected failure on rank {rank}")
    os.kill(os.getpid(), signal.SIGKILL)


def maybe_stall(point: str, rank: int = 0) -> None:
    """IFT_STALL="<point>:<seconds>[@rank<r>],..." makes that rank slow at `point` (tests only), e.g.
    rank 0's tokenizer training beyond train.dist_timeout_min. Points: tokenizer, record_stop, exit
    (a Slurm task that has ended its process groups and is about to leave)."""
    import time

    for spec in filter(None, os.environ.get("IFT_STALL", "").split(",")):
        where, _, who = spec.partition("@")
        name, _, seconds = where.partition(":")
        if name == point and (not who or who == f"rank{rank}"):
            time.sleep(float(seconds))
