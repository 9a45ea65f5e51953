"""Logging set-up for every entry point (the `ift` CLI, a Slurm task, submitit's job)."""

from __future__ import annotations

import logging
import sys


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not the one at set-up (so a
    caller that swaps sys.stderr, as tests do, never leaves it writing to a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(force: bool = True) -> None:
    """INFO to stderr with a time stamp. force=False keeps handlers that are already there."""
    if not force and logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[_CurrentStderr()],
        force=True,
    )
