"""ZeRO-3 from the command line, in fresh processes, exactly as a user types it:
`ift train CONFIG train.zero_stage=3 [--nproc-per-node 2]`, for an inline (random-init) model and
for a `from_pretrained` folder, on one and on two processes.

The model is built under deepspeed.zero.Init by transformers itself, after the model's module is
imported (an import inside zero.Init broke with a transformers release: see ift.model.build_model).
The from_pretrained folder's lm_head is all zeros, so a run that really loaded the partitioned
weights starts at loss ln(vocab) exactly."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO, TINY_MODEL, consolidated_state, pretrained_folder, read_metrics, train_env, write_config

IFT = str(Path(sys.executable).parent / "ift")  # the console script pip installed


@pytest.fixture(scope="module")
def zero3_cli_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zero3_cli")
    folder = tmp / "pretrained"
    vocab, _ = pretrained_folder(folder)
    train = {"max_steps": 4, "lr": 1e-2, "zero_stage": 2}  # the config says 2: the command line says 3
    configs = {
        "inline": write_config(tmp, "inline", train=train),
        "pretrained": write_config(
            tmp, "pretrained", model={"config": None, "name_or_path": str(folder)}, train=train
        ),
    }
    procs = {}
    for name, path in configs.items():
        for nproc in (1, 2):
            cmd = [IFT, "train", str(path), "train.zero_stage=3", f"run.name={name}-{nproc}"]
            if nproc > 1:
                cmd += ["--nproc-per-node", str(nproc)]
            err = tempfile.TemporaryFile("w+")
            procs[name, nproc] = (
                cmd,
                subprocess.Popen(
                    cmd, cwd=str(REPO), env=train_env(), stdout=subprocess.DEVNULL, stderr=err, text=True
                ),
                err,
                tmp / "runs" / f"{name}-{nproc}",
            )
    done = {}
    for key, (cmd, proc, err, run) in procs.items():
        proc.wait(timeout=900)
        err.seek(0)
        done[key] = (cmd, proc.returncode, err.read(), run)
    return done, vocab


@pytest.mark.slow
@pytest.mark.parametrize("model", ["inline", "pretrained"])
@pytest.mark.parametrize("nproc", [1, 2])
def test_zero3_from_the_command_line(zero3_cli_runs, model, nproc):
    done, vocab = zero3_cli_runs
    cmd, code, stderr, run = done[model, nproc]
    assert code == 0, f"{' '.join(cmd)} exited {code}\n{stderr[-6000:]}"
    assert "Signature mismatch" not in stderr and "Traceback" not in stderr
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    if model == "pretrained":
        assert metrics[0]["loss"] == pytest.approx(math.log(vocab), abs=1e-4)  # the saved weights were loaded
    # every rank held a shard: the consolidated weights have the full shapes and were trained
    state = consolidated_state(run)
    assert state["lm_head.weight"].shape[1] == TINY_MODEL["hidden_size"]
    assert state["lm_head.weight"].abs().max() > 0
    files = list((run / "checkpoints").glob("step_*/zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    assert len(files) == nproc, files
