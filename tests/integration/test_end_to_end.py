"""The whole story: instruction fine-tuning and the single-task baseline, evaluation, comparison —
on the built-in suite, and (integration, when ../shared is present) on real SNI tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TrainJob, read_metrics, train_env, write_config

SNI = REPO.parent / "shared" / "data" / "sni"


def _ift(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "ift", *args],
        cwd=str(REPO),
        env=train_env(2),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"ift {' '.join(args)} exited {done.returncode}\n{done.stderr[-4000:]}"
    return done


def _compare_and_check(runs: list[Path], out: Path, tasks: list[str], *flags: str) -> str:
    _ift("compare", *map(str, runs), "--out", str(out), *flags)
    report = (out / "COMPARISON.md").read_text()
    for task in tasks:
        assert task in report, f"{task} missing from COMPARISON.md"
    for run in runs:
        assert run.name in report
    for png in ("comparison.png", "comparison_tasks.png"):
        assert (out / png).stat().st_size > 10_000
    return report


@pytest.mark.slow
def test_builtin_ift_vs_ft_end_to_end(tmp_path):
    from ift.data import builtin

    cfg = write_config(
        tmp_path,
        "ift",
        data={"tasks": [{"builtin": "train", "n": 32}], "max_seq_len": 128},
        train={"max_steps": 6, "micro_batch_size": 4},
        eval={
            "tasks": [{"builtin": "heldout"}, {"builtin": "twice_animal"}, {"builtin": "name_fruit"}],
            "limit": 3,
            "max_new_tokens": 4,
            "batch_size": 8,
            "every": 3,
        },
    )
    jobs = [TrainJob(cfg), TrainJob(cfg, only_task="twice_animal")]
    for job in jobs:
        job.wait()
    runs = [job.run_dir for job in jobs]
    for run in runs:  # held-out loss during training, every eval.every steps, per task
        scored = [m for m in read_metrics(run) if "eval/loss" in m]
        assert [m["step"] for m in scored] == [3, 6]
        assert all(f"eval/loss/{t}" in scored[-1] for t in builtin.HELDOUT_TASKS)
    for run in runs:
        _ift("eval", str(run), "--shots", "0,2")  # two evaluations in one process
        for shots in ("0", "2"):
            assert (run / "eval" / f"eval_{shots}shot.json").exists()
    out = tmp_path / "comparison"
    report = _compare_and_check(
        runs,
        out,
        list(builtin.HELDOUT_TASKS) + ["twice_animal", "name_fruit"],
        "--eval",
        "eval_0shot",
        "--eval",
        "eval_2shot",
    )
    assert "held-out" in report and "own" in report and "(eval_2shot)" in report
    assert (out / "heldout_loss.png").stat().st_size > 10_000
    data = json.loads((out / "comparison.json").read_text())  # every number of the report, for tools
    assert [e["name"] for e in data["evaluations"]] == ["eval_0shot", "eval_2shot"]
    for ev in data["evaluations"]:
        ft = ev["groups"]["ift-ft-twice_animal"]  # the three groups: own task, other run's tasks, held-out
        assert (ft["own"]["tasks"], ft["seen by other run"]["tasks"], ft["held-out"]["tasks"]) == (
            1,
            1,
            len(builtin.HELDOUT_TASKS),
        )
        scores = {t["task"]: t["scores"]["ift"] for t in ev["tasks"]}
        assert set(scores["twice_animal"]) >= {"rougeL", "exact_match"}
    assert sorted(data["heldout_loss"]["runs"]["ift"]) == ["3", "6"]


@pytest.mark.slow
def test_sni_integration_short(tmp_path):
    if not SNI.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SNI} is missing: CI must run the SNI integration test")
        pytest.skip(f"{SNI} not present (it lives in ../shared beside the checkout)")
    tiny = (
        "model.config={model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
        "num_attention_heads: 2, num_key_value_heads: 2, vocab_size: 512, max_position_embeddings: 512}"
    )
    common = [
        tiny,
        f"data.root={SNI}",
        f"run.output_dir={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_seq_len=512",
        "train.max_steps=3",
        "train.micro_batch_size=2",
        "train.grad_accum=1",
        "train.log_every=1",
        "tracking.wandb.mode=disabled",
        "eval.limit=2",
        "eval.max_new_tokens=4",
    ]
    for config in ("configs/sni_ift.yaml", "configs/sni_ft.yaml"):
        _ift("train", config, *common)
    runs = [tmp_path / "runs" / "sni_ift", tmp_path / "runs" / "sni_ft"]
    eval_tasks = sorted(p.stem for p in SNI.glob("eval/*.jsonl"))
    for run in runs:
        _ift("eval", str(run), "--no-wandb")
    _compare_and_check(runs, tmp_path / "comparison", eval_tasks)
