"""Fault injection, for the tests only (tests/test_faults.py, tests/test_checkpoint.py).

One environment variable, IFT_FAULT="<point>@<step>[@rank<r>]", kills the process with SIGKILL (no
cleanup, as a lost node or the OOM killer would) at one point of the run; without it every call is
a no-op. Points:
- step:   after optimizer step <step> (and its logging)
- save:   inside the save of step <step>, after the shards are written, before the manifest and COMPLETE
- resume: right after the checkpoint of step <step> was loaded, before the first step
With @rank<r> only that rank dies (torchrun then ends the others); without it every rank does.
Only a launch's first attempt dies: the processes `ift train --max-restarts` starts again get past it.
"""
from __future__ import annotations

import os
import signal


def maybe_die(point: str, step: int, rank: int = 0) -> None:
    spec = os.environ.get("IFT_FAULT")
    if not spec or os.environ.get("IFT_RESTART_COUNT", "0") != "0":
        return
    parts = spec.split("@")
    if parts[0] != point or int(parts[1]) != step:
        return
    if len(parts) > 2 and parts[2] != f"rank{rank}":
        return
    os.kill(os.getpid(), signal.SIGKILL)
