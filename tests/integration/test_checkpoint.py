"""Checkpoints with the real DeepSpeed engine on CPU: exact continuation after a kill, a kill in
the middle of a save, retention, mismatch checks, another world size, export round trip."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from helpers import TrainJob, read_metrics, run_train, write_config

TASKS = [{"builtin": "reverse_word", "n": 24}, {"builtin": "add_numbers", "n": 40}]


def _config(tmp_path, name, stage, **train):
    # Small tasks and a small packing window: 10 steps cross several windows and task epochs.
    return write_config(
        tmp_path,
        name,
        data={"tasks": TASKS, "pack_window": 8},
        train={"max_steps": 10, "micro_batch_size": 2, "zero_stage": stage, **train},
    )


def _losses(run) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(run)}


def _state(ckpt) -> dict:
    return json.loads((ckpt / "ift_state.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_exact_continuation_after_kill_and_at_another_world_size(tmp_path, monkeypatch, stage):
    straight = _config(tmp_path, "straight", stage)
    cut = _config(tmp_path, "cut", stage, save_every=3)
    jobs = {"straight": TrainJob(straight, nproc=2)}
    monkeypatch.setenv("IFT_FAULT", "step@7")  # only the cut run's environment has it
    jobs["cut"] = TrainJob(cut, nproc=2)
    for job in jobs.values():
        job.wait(check=False)
    assert jobs["straight"].result.returncode == 0, jobs["straight"].result.stderr[-3000:]
    assert jobs["cut"].result.returncode != 0, "the kill hook should have ended the run at step 7"
    monkeypatch.delenv("IFT_FAULT")

    cut_run = jobs["cut"].run_dir
    ckpts = sorted(p.name for p in (cut_run / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000003", "step_00000006"]
    saved = _state(cut_run / "checkpoints" / "step_00000006")
    assert saved["loader"]["next_row"] > 0, "the stop should fall inside a packing window"
    other_world = tmp_path / "other_world"
    shutil.copytree(cut_run.parent, other_world / "runs")  # the same checkpoint, resumed by 1 process

    run_train(cut, nproc=2)  # train.resume: auto
    want = _losses(jobs["straight"].run_dir)
    got = _losses(cut_run)
    assert sorted(got) == list(range(1, 11))
    for step in range(7, 11):
        assert got[step] == want[step], f"step {step}: resumed {got[step]!r} != straight {want[step]!r}"
    final = _state(cut_run / "checkpoints" / "step_00000010")
    assert final["loader"]["window_start"]["epoch"] != saved["loader"]["window_start"]["epoch"], (
        "the resumed stretch should cross a task-epoch boundary"
    )

    # World size 2 -> 1 with the same global batch (micro-batch 2x2 -> 4x1): DeepSpeed's universal checkpoint.
    other_cfg = write_config(
        other_world,
        "cut",
        data={"tasks": TASKS, "pack_window": 8},
        train={"max_steps": 10, "micro_batch_size": 4, "zero_stage": stage, "save_every": 3},
    )
    other = run_train(other_cfg, nproc=1)
    assert "universal" in other.stderr
    moved = _losses(other_world / "runs" / "cut")
    for step in range(7, 11):
        assert abs(moved[step] - want[step]) < 1e-4, f"step {step}: {moved[step]} vs {want[step]}"


def test_kill_in_the_middle_of_a_save_resumes_from_the_previous_checkpoint(tmp_path, monkeypatch):
    straight = _config(tmp_path, "straight", 2, max_steps=6)
    cut = _config(tmp_path, "cut", 2, max_steps=6, save_every=2)
    ok = TrainJob(straight)
    monkeypatch.setenv("IFT_FAULT", "save@4")
    died = TrainJob(cut)
    died.wait(check=False)
    ok.wait()
    monkeypatch.delenv("IFT_FAULT")
    assert died.result.returncode != 0
    ckpt_dir = died.run_dir / "checkpoints"
    assert (ckpt_dir / ".tmp-step_00000004").is_dir(), "the killed save should have left its temporary folder"
    assert not (ckpt_dir / "step_00000004").exists()
    assert (ckpt_dir / "latest").read_text() == "step_00000002"

    resumed = run_train(cut)
    assert "resumed from" in resumed.stderr and "step_00000002" in resumed.stderr
    assert _losses(died.run_dir) == _losses(ok.run_dir)
    assert not (ckpt_dir / ".tmp-step_00000004").exists()


def test_retention_keeps_last_and_every(tmp_path):
    cfg = _config(tmp_path, "keep", 2, max_steps=10, save_every=2, keep_last=2, keep_every=4)
    run = TrainJob(cfg)
    run.wait()
    names = sorted(p.name for p in (run.run_dir / "checkpoints").glob("step_*"))
    assert names == ["step_00000004", "step_00000008", "step_00000010"]
    assert (run.run_dir / "checkpoints" / "latest").read_text() == "step_00000010"


def test_resume_checks_model_and_mixture(tmp_path):
    cfg = _config(tmp_path, "base", 2, max_steps=2)
    run_train(cfg)
    wider = run_train(cfg, "train.max_steps=4", "model.config.intermediate_size=96", check=False)
    assert wider.returncode == 2
    assert "different model" in wider.stderr and "resume_allow_mismatch" in wider.stderr

    more_tasks = [
        "train.max_steps=4",
        "data.tasks=[{builtin: reverse_word, n: 24}, {builtin: add_numbers, n: 40}, {builtin: sentiment, n: 30}]",
    ]
    refused = run_train(cfg, *more_tasks, check=False)
    assert refused.returncode == 2 and "different mixture" in refused.stderr
    allowed = run_train(cfg, *more_tasks, "train.resume_allow_mismatch=[mixture]")
    assert "mixture changed" in allowed.stderr
    steps = [m["step"] for m in read_metrics(tmp_path / "runs" / "base")]
    assert steps == [1, 2, 3, 4]


def test_export_round_trip_matches_the_training_weights(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from ift.export import export_checkpoint

    cfg = _config(tmp_path, "exp", 2, max_steps=3)
    run = TrainJob(cfg)
    run.wait()
    out = export_checkpoint(str(run.run_dir), str(tmp_path / "hf"))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (tmp_path / "hf" / "model.safetensors").exists() and (tmp_path / "hf" / "generation_config.json").exists()
    # At ZeRO-2 DeepSpeed stores the training module's full fp32 weights beside the shards.
    # (DeepSpeed trains ift.model.CausalLMLoss, which holds the causal LM as `lm`.)
    module = torch.load(
        run.run_dir / "checkpoints" / "step_00000003" / "mp_rank_00_model_states.pt", weights_only=False
    )["module"]
    module = {k.removeprefix("lm."): v for k, v in module.items()}
    exported = model.state_dict()
    assert set(module) == set(exported)
    for key, value in module.items():
        assert torch.equal(value, exported[key]), key
    # the training dtype by default (fp32 here), another on request
    assert {v.dtype for v in load_file(str(tmp_path / "hf" / "model.safetensors")).values()} == {torch.float32}
    half = export_checkpoint(str(run.run_dir), str(tmp_path / "hf16"), dtype="bf16")
    weights = load_file(os.path.join(half, "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert torch.equal(weights["model.embed_tokens.weight"], module["model.embed_tokens.weight"].bfloat16())
    trained = AutoModelForCausalLM.from_pretrained(out).eval()
    trained.load_state_dict(module, strict=True)
    ids = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, trained(ids).logits)
        assert not torch.equal(
            module["model.embed_tokens.weight"], torch.zeros_like(module["model.embed_tokens.weight"])
        )


@pytest.mark.slow
def test_resume_one_process_checkpoint_with_two(tmp_path):
    """World size 1 -> 2 at ZeRO-3 (same global batch): the universal path in the other direction."""
    straight = _config(tmp_path, "straight", 3, max_steps=6, micro_batch_size=4)
    cut = _config(tmp_path, "cut", 3, max_steps=3, micro_batch_size=4)
    jobs = [TrainJob(straight), TrainJob(cut)]
    for job in jobs:
        job.wait()
    grown = write_config(
        tmp_path,
        "cut",
        data={"tasks": TASKS, "pack_window": 8},
        train={"max_steps": 6, "micro_batch_size": 2, "zero_stage": 3},
    )
    resumed = run_train(grown, nproc=2)
    assert "universal" in resumed.stderr
    want, got = _losses(jobs[0].run_dir), _losses(jobs[1].run_dir)
    assert sorted(got) == list(range(1, 7))
    for step in range(4, 7):
        assert abs(got[step] - want[step]) < 1e-4, f"step {step}: {got[step]} vs {want[step]}"
