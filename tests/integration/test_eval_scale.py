"""Evaluation at scale with the real engine on CPU: `ift eval --nproc-per-node 2` equals one process
(predictions and per-task scores), and the held-out generation during training (eval.generate_every,
2 processes at ZeRO-3, parameters sharded) logs the scores `ift eval` gives the same checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import REPO, read_metrics, run_train, train_env, write_config

EVAL = {"tasks": [{"builtin": "heldout"}], "limit": 5, "max_new_tokens": 6, "batch_size": 3, "generate_every": 3}


def _eval(run, *args, nproc=1):
    cmd = [sys.executable, "-m", "ift", "eval", str(run), "--no-wandb", *args]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    # its own session, so that a timeout ends torchrun's workers too, not torchrun alone
    proc = subprocess.Popen(
        cmd,
        cwd=str(REPO),
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out\n{err[-6000:]}") from None
    assert proc.returncode == 0, err[-6000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_sharded_eval_equals_one_process_and_generation_during_training(tmp_path):
    # a model that writes something other than EOS: wide initial weights, small steps
    config = write_config(
        tmp_path,
        "gen",
        model={"config": {"initializer_range": 0.3}},
        eval=EVAL,
        train={"max_steps": 6, "zero_stage": 3, "lr": 1e-5, "export_final": True},
    )
    run_train(config, nproc=2)
    run = tmp_path / "runs" / "gen"

    one = _eval(run, "--name", "one")
    assert "examples/s" in one.stdout and "generated tokens/s" in one.stdout
    two = _eval(run, "--name", "two", nproc=2)
    assert two.stdout.count("examples/s") == 1  # rank 0 alone reports
    a, b = (json.loads((run / "eval" / f"{n}.json").read_text()) for n in ("one", "two"))
    assert a["speed"]["processes"] == 1 and b["speed"]["processes"] == 2
    assert [(e["task"], e["index"], e["prediction"]) for e in b["examples"]] == [
        (e["task"], e["index"], e["prediction"]) for e in a["examples"]
    ]
    assert b["tasks"] == a["tasks"] and len(a["tasks"]) == 10
    assert len({e["prediction"] for e in a["examples"]}) > 3  # the model does read its prompts

    # generation during training: at steps 3 and 6 (the last), on both ranks, sharded
    logged = {m["step"]: m for m in read_metrics(run) if "eval/rougeL" in m}
    assert sorted(logged) == [3, 6]
    assert (run / "export" / "config.json").is_file()  # rank 0 exported while rank 1 waited
    final = logged[6]
    for task, scores in a["tasks"].items():  # the final weights, generated under ZeRO-3 = `ift eval` of them
        assert final[f"eval/rougeL/{task}"] == pytest.approx(scores["rougeL"], abs=1e-9)
        assert final[f"eval/exact_match/{task}"] == pytest.approx(scores["exact_match"], abs=1e-9)
    assert final["eval/rougeL"] == pytest.approx(a["mean"]["rougeL"], abs=1e-9)
