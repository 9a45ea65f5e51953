"""Faults survived, on real 2-process and 1-process training runs (DeepSpeed, gloo):

- a chain of 10 random kills (seeded, printed): SIGKILL of every rank or of one rank, after a
  step, inside a save (shards written, no manifest or COMPLETE yet) or right after a resume; each
  followed by a relaunch. After every kill the newest complete checkpoint is the expected one and
  passes full verification; the run ends with exactly the losses of the uninterrupted run (fp32);
- a truncated shard, a missing shard and a flipped byte in the newest checkpoint: the relaunch
  reports the damaged file, sets the checkpoint aside and resumes from the previous one, ending
  with the uninterrupted run's losses.

The kills come from ift/faults.py (IFT_FAULT), the only place fault hooks live."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from helpers import TrainJob, write_config

TASKS = [{"builtin": "reverse_word", "n": 48}, {"builtin": "add_numbers", "n": 48}]


def _losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.jsonl") as f:
        return {m["step"]: m["loss"] for m in map(json.loads, f)}


def _config(tmp, name, **train):
    return write_config(
        tmp,
        name,
        data={"tasks": TASKS, "pack_window": 8},
        train={"max_steps": 16, "micro_batch_size": 2, "zero_stage": 2, "save_every": 2, "keep_last": 2, **train},
    )


def kill_plan(seed: int, n: int, max_steps: int, save_every: int) -> list[tuple[str, int, str]]:
    """n kills (point, step, ranks) that each land after the checkpoint the previous one left."""
    rng = random.Random(seed)
    plan, ckpt = [], 0
    while len(plan) < n:
        point = rng.choice(["step", "save", "resume"] if ckpt else ["step", "save"])
        ranks = rng.choice(["", "@rank0", "@rank1"])
        if point == "resume":
            plan.append((point, ckpt, ranks))
            continue
        if point == "save":
            step = rng.choice([s for s in range(ckpt + save_every, min(ckpt + 3 * save_every, max_steps), save_every)])
            plan.append((point, step, ranks))
            ckpt = step - save_every  # the save never completed: the previous one stays newest
        else:
            step = rng.randint(ckpt + 1, min(ckpt + 3, max_steps - 1))
            plan.append((point, step, ranks))
            ckpt = step // save_every * save_every
    return plan


def expected_checkpoint(point: str, step: int, before: int, save_every: int) -> int:
    if point == "resume":
        return before
    if point == "save":
        return step - save_every
    return step // save_every * save_every


@pytest.mark.slow
def test_ten_random_kills_end_with_the_uninterrupted_losses(tmp_path, monkeypatch):
    from ift.checkpoint import complete_checkpoints, verify_checkpoint

    straight = TrainJob(_config(tmp_path, "straight"), nproc=2)
    cfg = _config(tmp_path, "chain")
    plan = kill_plan(seed=20261203, n=10, max_steps=16, save_every=2)
    print("kill plan:", plan)
    ckpt = 0
    for point, step, ranks in plan:
        monkeypatch.setenv("IFT_FAULT", f"{point}@{step}{ranks}")
        job = TrainJob(cfg, nproc=2)
        result = job.wait(check=False)
        assert result.returncode != 0, f"{point}@{step}{ranks} should have killed the run\n{result.stderr[-3000:]}"
        ckpt = expected_checkpoint(point, step, ckpt, 2)
        done = complete_checkpoints(str(job.run_dir / "checkpoints"))
        assert (done[-1][0] if done else 0) == ckpt, (point, step, ranks, [s for s, _ in done])
        assert all(verify_checkpoint(p, "full") == [] for _, p in done)
    monkeypatch.delenv("IFT_FAULT")
    TrainJob(cfg, nproc=2).wait()
    straight.wait()
    want, got = _losses(straight.run_dir), _losses(tmp_path / "runs" / "chain")
    assert sorted(got) == list(range(1, 17))
    assert got == want  # exact: fp32 on CPU, every resume continues the same data and optimizer state


def _truncate(ckpt: Path) -> str:
    f = next(ckpt.glob("*optim_states.pt"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return f.name


def _remove(ckpt: Path) -> str:
    f = next(ckpt.glob("*optim_states.pt"))
    f.unlink()
    return f.name


def _flip(ckpt: Path) -> str:
    f = next(ckpt.glob("*model_states.pt"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    return f.name


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    straight = TrainJob(_config(tmp_path, "straight", max_steps=6))
    first = TrainJob(_config(tmp_path, "base", max_steps=4))
    first.wait()
    jobs = {}
    for damage in (_truncate, _remove, _flip):
        name = damage.__name__.strip("_")
        run = tmp_path / name / "runs" / "base"
        shutil.copytree(first.run_dir, run)
        broken = damage(run / "checkpoints" / "step_00000004")
        cfg = write_config(
            tmp_path / name,
            "base",
            data={"tasks": TASKS, "pack_window": 8},
            train={"max_steps": 6, "micro_batch_size": 2, "zero_stage": 2, "save_every": 2, "keep_last": 2},
        )
        jobs[name] = (TrainJob(cfg), run, broken)
    straight.wait()
    want = _losses(straight.run_dir)
    for name, (job, run, broken) in jobs.items():
        result = job.wait()
        assert "step_00000004 is damaged" in result.stderr and broken in result.stderr, (name, result.stderr[-3000:])
        assert "resumed from" in result.stderr and "step_00000002 at step 2" in result.stderr, name
        assert (run / "checkpoints" / "step_00000004.invalid-1" / broken).exists() or name == "remove", name
        assert (run / "checkpoints" / "step_00000004.invalid-1").is_dir(), name  # set aside, not deleted
        assert _losses(run) == want, name


@pytest.mark.slow
def test_a_crashed_rank_is_restarted_by_max_restarts(tmp_path, monkeypatch):
    """`ift train --nproc-per-node 2 --max-restarts 1`: rank 1 dies after step 5; torchrun ends
    rank 0 and starts both again, which resume from step 4 and finish with the uninterrupted losses."""
    monkeypatch.setenv("IFT_FAULT", "step@5@rank1")
    cfg = _config(tmp_path, "crash", max_steps=8)
    job = TrainJob(cfg, "--max-restarts", "1", nproc=2)  # alone: a restart re-forms the gloo mesh
    result = job.wait()
    monkeypatch.delenv("IFT_FAULT")
    straight = TrainJob(_config(tmp_path, "straight", max_steps=8), nproc=2)
    straight.wait()
    assert "resumed from" in result.stderr and "step_00000004 at step 4" in result.stderr, result.stderr[-3000:]
    assert _losses(job.run_dir) == _losses(straight.run_dir)


@pytest.mark.slow
def test_rank_0_slower_than_the_collective_timeout_does_not_fail_the_run(tmp_path, monkeypatch):
    """Rank 0 alone builds what the others then read (here the tokenizer, stalled for 2.5x
    train.dist_timeout_min); the others wait for it on the host group, whose timeout is
    train.host_timeout_min, not inside a collective of the default group, which would give up."""
    monkeypatch.setenv("IFT_STALL", "tokenizer:15@rank0")
    cfg = _config(tmp_path, "slow", max_steps=4, save_every=0, dist_timeout_min=0.1)  # 6 s
    done = TrainJob(cfg, nproc=2).wait()
    assert done.returncode == 0
    assert [m["step"] for m in map(json.loads, (tmp_path / "runs" / "slow" / "metrics.jsonl").open())] == [1, 2, 3, 4]
