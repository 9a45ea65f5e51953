"""bench/gpu_check.py, the prepared GPU proof, must not rot between GPU sessions: its --smoke mode
runs every step of it (speed at ZeRO-2 and ZeRO-3 against the bare loop and Trainer, kill and
resume, export, eval, ift's MFU) with a tiny model for a few steps on the CPU."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import REPO, train_env


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_check(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--smoke", "--out", str(tmp_path / "out")],
        cwd=str(REPO),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = done.stdout[done.stdout.rfind("gpu_check:") :]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    checks = {name: verdict for verdict, name in re.findall(r"^(PASS|FAIL) ([^:]+):", summary, re.M)}
    assert checks == {
        "speed ZeRO-2 x1": "PASS",
        "speed ZeRO-3 x1": "PASS",
        "resume": "PASS",
        "export": "PASS",
        "eval": "PASS",
        "mfu": "PASS",
        "long context": "PASS",
    }, summary
    assert re.search(r"^PASS mfu: [0-9.]+ TFLOP/s per device .* MFU [0-9.]+%", summary, re.M), summary
    assert "ift / bare" in done.stdout and "ift / Trainer" in done.stdout
