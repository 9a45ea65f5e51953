"""Ulysses sequence parallelism (train.sequence_parallel) on real DeepSpeed runs: CPU, gloo's
all-to-all, fp32, a tiny Llama with 4 attention heads and 2 key/value heads.

- 2 processes at SP=2 (one data-parallel rank: both read the same rows, each feeds half of every
  row) train exactly like 1 process at SP=1 on the same rows: loss, per-task losses and gradient
  norm of every step and the final weights, at ZeRO-1, 2 and 3 and with gradient checkpointing
  and tiled MLPs, with packed rows whose examples (and their targets) cross the slice boundary. (slow)
- A run at SP=2 killed (SIGKILL) after step 4 resumes from its step-3 checkpoint: at SP=2 with the
  uninterrupted run's losses exactly; at SP=1 on one process and at SP=4 on four (2 ranks -> 1, 4:
  DeepSpeed's universal checkpoint) with the same samples and losses to 1e-5. And an SP=1 checkpoint of one
  process resumes at SP=2 on two (1 -> 2, universal) with the SP=1 run's losses.       (slow)
- Start-up checks name the field.
"""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import (
    MIXED_DATA,
    TINY_MODEL,
    TrainJob,
    consolidated_state,
    read_metrics,
    run_concurrently,
    run_train,
    write_config,
)

DATA = {**MIXED_DATA, "max_seq_len": 64}
# No clipping (it would hide a wrong gradient scale), a constant lr small enough that Adam's
# amplified float noise stays far under the tolerance.
TRAIN = {
    "max_steps": 6,
    "grad_clip": 0.0,
    "lr": 1e-4,
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "log_every": 1,
    "micro_batch_size": 2,
    "save_every": 3,
}


# The held-out loss at steps 3 and 6: the model in eval mode bypasses SP, every rank scores whole rows.
EVAL = {"every": 3, "limit": 4, "batch_size": 2, "tasks": [{"builtin": "uppercase_word", "n": 8}]}


# 4 query heads over 2 key/value heads: SP=2 splits both, SP=4 has DeepSpeed replicate the KV heads
MODEL = {"config": {**TINY_MODEL, "num_attention_heads": 4, "num_key_value_heads": 2}}


# variant: (ZeRO stage, overrides). "ckpt_tiled": gradient checkpointing (attention's all-to-alls and
# the shared mask recomputed in backward) and tiled MLPs on rows of 128 (64 tokens per rank: 2 tiles).
VARIANTS = {
    "z1": (1, {}),
    "z2": (2, {}),
    "z3": (3, {}),
    "ckpt_tiled": (
        2,
        {"model": {"gradient_checkpointing": True}, "data": {"max_seq_len": 128}, "train": {"tiled_mlp": True}},
    ),
}


def _config(tmp, name, stage, sp, model=None, data=None, train=None):
    return write_config(
        tmp,
        name,
        model={**MODEL, **(model or {})},
        data={**DATA, **(data or {})},
        eval=EVAL,
        train={**TRAIN, "zero_stage": stage, "sequence_parallel": sp, **(train or {})},
    )


@pytest.fixture(scope="module")
def sp_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sp")
    jobs = {}
    for variant, (stage, more) in VARIANTS.items():
        for sp in (1, 2):
            jobs[(f"sp{sp}", variant)] = (_config(tmp, f"sp{sp}_{variant}", stage, sp, **more), {"nproc": sp})
    started = run_concurrently(jobs)
    os.environ["IFT_FAULT"] = "step@4"  # only the cut run's environment has it
    try:
        cut = TrainJob(_config(tmp, "cut", 2, 2), nproc=2)
    finally:
        del os.environ["IFT_FAULT"]
    cut.wait(check=False)
    started["cut"] = cut
    return tmp, started


def _crossing_targets(run) -> int:
    """Targets of the run's first steps in the second half of a row (SP rank 1's slice) whose example
    began in the first half: their attention spans both slices. Counted on the rows ift's loader makes."""
    import torch

    from ift.config import load_config
    from ift.data.loader import PackedLoader
    from ift.data.packing import IGNORE
    from ift.data.prepare import prepare_data

    cfg = load_config(str(run / "config.yaml"))
    seq = cfg.data.max_seq_len
    _, tokenizer, tokenized, rates = prepare_data(cfg)
    loader = PackedLoader(
        tokenized,
        rates,
        seed=cfg.run.seed,
        seq_len=seq,
        window=cfg.data.pack_window,
        packing=True,
        micro_batch_size=TRAIN["micro_batch_size"],
        grad_accum=1,
        train_on_prompt=False,
        pad_id=tokenizer.pad_token_id,
    )
    at = torch.arange(seq)
    crossing = 0
    for _ in range(5):
        for micro in loader.next_step().micro_batches:
            began = at - micro["position_ids"]  # where each token's example starts
            crossing += int(((micro["labels"] != IGNORE) & (at >= seq // 2) & (began < seq // 2)).sum())
    return crossing


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sp2_on_two_processes_trains_exactly_like_sp1_on_one(sp_runs, variant):
    _, jobs = sp_runs
    stage = VARIANTS[variant][0]
    one, two = jobs[("sp1", variant)].wait(), jobs[("sp2", variant)].wait()
    ref, got = read_metrics(jobs[("sp1", variant)].run_dir), read_metrics(jobs[("sp2", variant)].run_dir)
    assert [m["step"] for m in got] == [m["step"] for m in ref] == list(range(1, 7)), (
        one.stderr[-2000:],
        two.stderr[-2000:],
    )
    for a, b in zip(ref[:5], got[:5]):
        where = f"{variant} (ZeRO-{stage}) step {a['step']}"
        assert b["examples_drawn"] == a["examples_drawn"], where
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=0), where
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5, abs=0), where
        tasks = sorted(k for k in a if k.startswith("loss/"))
        assert tasks == sorted(k for k in b if k.startswith("loss/")), where
        for key in tasks:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=0), (where, key)
        held = sorted(k for k in a if k.startswith("eval/loss"))
        assert bool(held) == (a["step"] % EVAL["every"] == 0), where
        assert held == sorted(k for k in b if k.startswith("eval/loss")), where
        for key in held:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=0), (where, key)
    assert all(m["grad_norm"] > 0 for m in ref)
    # the final weights, gathered from the SP run's ZeRO shards as `ift export` does
    weights = [consolidated_state(jobs[(sp, variant)].run_dir) for sp in ("sp1", "sp2")]
    worst = max(((weights[1][k] - v).abs().max().item(), k) for k, v in weights[0].items())
    assert worst[0] <= 1e-5, f"{variant}: SP=2 weights differ from SP=1 by {worst[0]:.3g} in {worst[1]}"
    assert _crossing_targets(jobs[("sp2", variant)].run_dir) > 0, "no example crossed the slice boundary"


@pytest.mark.slow
def test_kill_at_sp2_resumes_exactly_and_at_other_sp_sizes(sp_runs):
    tmp, jobs = sp_runs
    cut = jobs["cut"]
    assert cut.result.returncode != 0, "the kill hook should have ended the run after step 4"
    straight = {m["step"]: m for m in read_metrics(jobs[("sp2", "z2")].run_dir)}
    assert sorted(p.name for p in (cut.run_dir / "checkpoints").glob("step_*")) == ["step_00000003"]

    other = tmp / "at_sp1"
    shutil.copytree(cut.run_dir.parent, other / "runs")  # the same checkpoint, resumed by 1 process at SP=1
    sp1_cfg = _config(other, "cut", 2, 1)
    wider = tmp / "at_sp4"
    shutil.copytree(cut.run_dir.parent, wider / "runs")  # and by 4 processes at SP=4 (2 ranks -> 4)
    sp4_cfg = _config(wider, "cut", 2, 4)
    # and the other way: the uninterrupted SP=1 run's step-3 checkpoint resumed at SP=2 on 2 processes
    into = tmp / "into_sp2"
    shutil.copytree(jobs[("sp1", "z2")].run_dir.parent, into / "runs")
    sp2_cfg = _config(
        into, "sp1_z2", 2, 2, train={"resume": str(into / "runs" / "sp1_z2" / "checkpoints" / "step_00000003")}
    )
    again = TrainJob(cut.config_path, nproc=2)  # train.resume: auto
    at_sp1 = TrainJob(sp1_cfg, nproc=1)
    at_sp2 = TrainJob(sp2_cfg, nproc=2)
    again.wait()
    for moved in (at_sp1.wait(), at_sp2.wait()):
        assert "universal" in moved.stderr
    at_sp4 = TrainJob(sp4_cfg, nproc=4)  # after the others: 4 processes on their own
    assert "universal" in at_sp4.wait().stderr

    resumed = {m["step"]: m for m in read_metrics(cut.run_dir)}
    assert sorted(resumed) == list(range(1, 7))
    for step in range(4, 7):
        assert resumed[step]["loss"] == straight[step]["loss"], f"step {step}: {resumed[step]} != {straight[step]}"
        assert resumed[step]["examples_drawn"] == straight[step]["examples_drawn"]
    for where in (other, wider):  # SP=1 and SP=4: the same sample stream, the same losses
        moved = {m["step"]: m for m in read_metrics(where / "runs" / "cut")}
        for step in range(4, 7):
            assert moved[step]["examples_drawn"] == straight[step]["examples_drawn"], (where.name, step)
            assert moved[step]["loss"] == pytest.approx(straight[step]["loss"], rel=1e-5, abs=0), (where.name, step)
            for key in (k for k in straight[step] if k.startswith("eval/loss")):  # step 6: whole rows, no SP
                assert moved[step][key] == pytest.approx(straight[step][key], rel=1e-5, abs=0), (where.name, key)
    want = {m["step"]: m for m in read_metrics(jobs[("sp1", "z2")].run_dir)}
    sp2 = {m["step"]: m for m in read_metrics(into / "runs" / "sp1_z2")}
    assert sorted(sp2) == list(range(1, 7))
    for step in range(4, 7):
        assert sp2[step]["examples_drawn"] == want[step]["examples_drawn"], step
        assert sp2[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5, abs=0), step
        assert sp2[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-5, abs=0), step


@pytest.mark.parametrize(
    "model, override, nproc, message",
    [
        ({}, ["train.sequence_parallel=2"], 1, "train.sequence_parallel=2: the world size 1 is not divisible by it"),
        ({}, ["train.sequence_parallel=2", "data.max_seq_len=63"], 2, "data.max_seq_len=63: must be divisible by"),
        (
            {"num_attention_heads": 1, "num_key_value_heads": 1},
            ["train.sequence_parallel=2"],
            2,
            "train.sequence_parallel=2: the model's 1 attention heads are not divisible by it",
        ),
        ({}, ["train.sequence_parallel=2", "model.attn_implementation=eager"], 2, "model.attn_implementation=eager"),
        ({}, ["train.tiled_mlp=true", "data.packing=false"], 1, "train.tiled_mlp: needs data.packing=true"),
        ({}, ["train.sequence_parallel=2", "train.zero_stage=0"], 2, "train.zero_stage=0: sequence parallelism"),
        (
            {},
            [
                "train.sequence_parallel=2",
                "train.zero_stage=3",
                "deepspeed.extra.zero_optimization.reduce_scatter=false",
            ],
            2,
            "deepspeed: zero_optimization.reduce_scatter=false with train.sequence_parallel > 1",
        ),
    ],
)
def test_sequence_parallel_start_up_checks_name_the_field(tmp_path, model, override, nproc, message):
    cfg = write_config(tmp_path, "bad", model={"config": {**TINY_MODEL, **model}}, train={"max_steps": 1})
    result = run_train(cfg, *override, nproc=nproc, check=False, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: {message}" in result.stderr, result.stderr[-3000:]
