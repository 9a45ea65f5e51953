"""The stop request: set by a signal (Slurm's USR2 before the time limit, TERM on preemption or
scancel) on whichever rank receives it; the training loop agrees on it over all ranks at the next
step boundary (ift.distributed.any_rank), then every rank saves and `train()` returns."""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger(__name__)

_request: dict[str, Any] = {"requested": False, "why": ""}

SIGNALS = ((signal.SIGUSR2, "time limit (SIGUSR2)"), (signal.SIGTERM, "preemption or cancel (SIGTERM)"))


def request(why: str) -> None:
    _request.update(requested=True, why=why)


def requested() -> bool:
    return _request["requested"]


def reason() -> str:
    return _request["why"] or "stop requested"


def handler(why: str):
    """A signal handler that requests the stop (and says so in the log)."""

    def on_signal(signum, frame):
        log.warning("caught %s: %s; all ranks checkpoint at the next step boundary", signal.Signals(signum).name, why)
        request(why)

    return on_signal


def install_signal_handlers(keep_existing: bool = False) -> None:
    """USR2 and TERM request a stop. keep_existing: leave a handler someone else installed (submitit's
    USR2 handler in a Slurm job, the launcher's) in place."""
    for sig, why in SIGNALS:
        if keep_existing and signal.getsignal(sig) not in (signal.SIG_DFL, None):
            continue
        signal.signal(sig, handler(why))
