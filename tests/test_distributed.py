"""ift.distributed across real processes (gloo): the stop vote that does not wait, the clean end
of the process groups, and which GPU a rank takes. Plus the settings a GPU run depends on that CPU
can check: the generated DeepSpeed communication settings, the attention choice, eval placement."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, tiny_config, train_env

VOTE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist
    from ift import distributed
    dist.init_process_group("gloo")
    distributed.init_distributed()
    rank = distributed.rank()
    vote, seen = distributed.StopVote(), []
    for step in range(1, 9):
        if vote.exchange(rank == 1 and step == 3):  # rank 1 alone asks after step 3
            seen.append(step)
            break
    vote.drain()
    distributed.shutdown()
    print(json.dumps({"rank": rank, "stopped_after": seen}))
""")


def _run_world(script: str, n: int = 2, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    from ift.distributed import free_port

    port = str(free_port())
    procs = []
    for r in range(n):
        env = {
            **train_env(),
            "RANK": str(r),
            "WORLD_SIZE": str(n),
            "LOCAL_RANK": str(r),
            "LOCAL_WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=str(REPO),
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    return [subprocess.CompletedProcess(p.args, p.wait(timeout), *p.communicate()) for p in procs]


def test_stop_vote_is_read_one_step_later_on_every_rank_and_the_world_ends_cleanly():
    done = _run_world(VOTE_SCRIPT)
    for d in done:
        assert d.returncode == 0, d.stderr[-3000:]  # no abort at exit (terminate called ..., -6)
        assert "terminate called" not in d.stderr
    results = sorted((json.loads(d.stdout.strip().splitlines()[-1]) for d in done), key=lambda r: r["rank"])
    # asked after step 3 on rank 1 only; every rank learns it after step 4 and stops there together
    assert [r["stopped_after"] for r in results] == [[4], [4]]


def test_a_rank_takes_its_local_rank_or_the_only_gpu_it_sees(monkeypatch):
    import torch

    from ift import distributed

    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert distributed.cuda_device_index() == 3  # every task sees the node's GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.cuda_device_index() == 0  # --gpus-per-task=1: the one it was given


# --------------------------------------------------------------------------- DeepSpeed config


def _cfg(tmp_path, **train):
    from ift.config import Config
    from ift.config_loader import build

    return build(Config, tiny_config(tmp_path, train=train))


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_1_and_2_overlap_communication_with_buckets_from_the_width(tmp_path, stage):
    from ift.engine import deepspeed_config

    zero = deepspeed_config(_cfg(tmp_path, zero_stage=stage), 2, hidden_size=4096)["zero_optimization"]
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    assert zero["reduce_bucket_size"] == zero["allgather_bucket_size"] == 4096 * 4096


def test_zero_3_buckets_and_extra_overrides(tmp_path):
    from ift.engine import deepspeed_config

    zero = deepspeed_config(_cfg(tmp_path, zero_stage=3), 2, hidden_size=4096)["zero_optimization"]
    assert zero["reduce_bucket_size"] == 4096**2
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 4096**2)
    assert zero["stage3_param_persistence_threshold"] == 40960
    cfg = _cfg(tmp_path, zero_stage=2)
    cfg.deepspeed.extra = {"zero_optimization": {"overlap_comm": False, "reduce_bucket_size": 5e8}}
    zero = deepspeed_config(cfg, 2, hidden_size=32)["zero_optimization"]
    assert zero["overlap_comm"] is False and zero["reduce_bucket_size"] == 5e8
    assert zero["allgather_bucket_size"] == 1 << 20  # a tiny model: never under 2^20 elements
    assert "overlap_comm" not in deepspeed_config(_cfg(tmp_path, zero_stage=0), 1, 4096)["zero_optimization"]


# --------------------------------------------------------------------------- attention, eval placement


@pytest.mark.parametrize(
    "cuda, flash, dtype, want",
    [
        (False, True, "bf16", "sdpa"),  # no GPU
        (True, False, "bf16", "sdpa"),  # no matching flash_attn wheel
        (True, True, "fp32", "sdpa"),  # flash-attention takes bf16/fp16 only
        (True, True, "bf16", "flash_attention_2"),
        (True, True, "fp16", "flash_attention_2"),
    ],
)
def test_auto_attention(monkeypatch, cuda, flash, dtype, want):
    import transformers.utils

    import ift.model

    monkeypatch.setattr(ift.model, "accelerator_available", lambda: cuda)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: flash)
    assert ift.model.resolve_attn_implementation("auto", dtype) == want
    assert ift.model.resolve_attn_implementation("eager", dtype) == "eager"  # a choice is kept


def test_eval_spreads_a_model_only_when_it_does_not_fit_one_gpu():
    from ift.eval.generate import gpu_placement

    gib = 2**30
    assert gpu_placement(16 * gib, 79 * gib, gpus=8) == "one"  # 8B bf16 on an H100: one GPU
    assert gpu_placement(140 * gib, 79 * gib, gpus=8) == "spread"  # 70B bf16
    assert gpu_placement(70 * gib, 79 * gib, gpus=8) == "spread"  # no room left to generate
    assert gpu_placement(140 * gib, 79 * gib, gpus=1) == "one"  # nothing to spread over
