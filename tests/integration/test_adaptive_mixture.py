"""The adaptive mixture with the real DeepSpeed engine on CPU: 2 processes at ZeRO-2 move the rates
deterministically, a kill -9 resumes bit-identically (rates, losses, the sample stream), a resume at
another world size continues the same stream, and the held-out signal works end to end."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import TrainJob, read_metrics, run_train, write_config

# two large easy tasks and two small hard ones
TASKS = [
    {"builtin": "reverse_word", "n": 48},
    {"builtin": "first_letter", "n": 48},
    {"builtin": "add_numbers", "n": 12},
    {"builtin": "sort_ascending", "n": 12},
]
NAMES = ["reverse_word", "first_letter", "add_numbers", "sort_ascending"]
ADAPT = {"rule": "excess_loss", "every": 3, "eta": 4.0, "smoothing": 0.1}


def _config(tmp_path, name, micro=2, adapt=ADAPT, **sections):
    train = {"max_steps": 14, "micro_batch_size": micro, "save_every": 4, "lr": 3e-3, **sections.pop("train", {})}
    return write_config(
        tmp_path, name, data={"tasks": TASKS, "pack_window": 16, "mixture": {"adapt": adapt}}, train=train, **sections
    )


def _by_step(run) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for m in read_metrics(run):
        out.setdefault(m["step"], {}).update(m)
    return out


def _mix(record) -> list[float]:
    return [record[f"mix/{n}"] for n in NAMES]


@pytest.mark.slow
def test_two_processes_adapt_deterministically_and_resume_exactly(tmp_path, monkeypatch):
    straight, cut = _config(tmp_path, "straight"), _config(tmp_path, "cut")
    lp = _config(
        tmp_path,
        "heldout",
        micro=4,
        adapt={"rule": "learning_progress", "every": 4, "eta": 4.0, "signal": "heldout"},
        eval={"tasks": TASKS, "limit": 4, "batch_size": 4},
    )
    jobs = {"straight": TrainJob(straight, nproc=2), "heldout": TrainJob(lp)}
    monkeypatch.setenv("IFT_FAULT", "step@10")  # only the cut run's environment has it: SIGKILL after step 10
    jobs["cut"] = TrainJob(cut, nproc=2)
    for job in jobs.values():
        job.wait(check=False)
    monkeypatch.delenv("IFT_FAULT")
    for name in ("straight", "heldout"):
        assert jobs[name].result.returncode == 0, jobs[name].result.stderr[-4000:]
    assert jobs["cut"].result.returncode != 0

    want = _by_step(jobs["straight"].run_dir)
    # the rates moved, at the update steps only, and stay a distribution
    updates = [s for s in sorted(want) if "mix/reverse_word" in want[s]]
    assert updates == [0, 3, 6, 9, 12]
    assert _mix(want[0]) == pytest.approx([0.4, 0.4, 0.1, 0.1])  # the base: proportional to size
    assert _mix(want[3]) == _mix(want[0])  # reference: initial, the first window fixes it
    assert max(abs(a - b) for a, b in zip(_mix(want[12]), _mix(want[0]))) > 0.02
    assert all(sum(_mix(want[s])) == pytest.approx(1.0) for s in updates)
    final = json.loads((jobs["straight"].run_dir / "checkpoints" / "step_00000014" / "ift_state.json").read_text())
    history = final["mixture_adapt"]["history"]
    assert [s for s, _ in history] == updates and [r for _, r in history] == [_mix(want[s]) for s in updates]

    # kill -9 after step 10 (last checkpoint: step 8, in the middle of an update window) -> resume: bit-identical
    cut_run = jobs["cut"].run_dir
    other_world = tmp_path / "other_world"
    shutil.copytree(cut_run.parent, other_world / "runs")
    shutil.rmtree(other_world / "runs" / "straight")
    run_train(cut, nproc=2)
    got = _by_step(cut_run)
    for step in range(9, 15):
        for key in ("loss", "grad_norm", "examples_drawn", *[f"loss/{n}" for n in NAMES]):
            assert got[step].get(key) == want[step].get(key), (
                f"step {step} {key}: {got[step].get(key)} != {want[step].get(key)}"
            )
    for step in (9, 12):
        assert _mix(got[step]) == _mix(want[step]), step

    # the same checkpoint resumed by one process (universal checkpoint): the same sample stream goes on
    moved_cfg = _config(other_world, "cut", micro=4)
    assert "universal" in run_train(moved_cfg, nproc=1).stderr
    moved = _by_step(other_world / "runs" / "cut")
    for step in range(9, 15):
        assert moved[step]["examples_drawn"] == want[step]["examples_drawn"], step
        assert moved[step]["loss"] == pytest.approx(want[step]["loss"], abs=1e-4), step
    for step in (9, 12):
        assert _mix(moved[step]) == pytest.approx(_mix(want[step]), abs=1e-5), step

    # the held-out signal: learning progress on eval/loss/<task> moves the rates (one process, ZeRO-2)
    held = _by_step(jobs["heldout"].run_dir)
    assert [s for s in sorted(held) if "mix/add_numbers" in held[s]] == [0, 4, 8, 12]
    assert all(f"eval/loss/{n}" in held[8] for n in NAMES)
    assert _mix(held[12]) != pytest.approx(_mix(held[0]), abs=1e-3)


def test_start_up_errors_name_the_field(tmp_path):
    one = write_config(tmp_path, "one", data={"mixture": {"adapt": {"rule": "excess_loss"}}})
    r = run_train(one, check=False)
    assert r.returncode == 2
    assert "error: data.mixture.adapt.rule: an adaptive mixture needs at least 2 tasks" in r.stderr
    held = write_config(
        tmp_path,
        "held",
        data={"tasks": TASKS, "mixture": {"adapt": {"rule": "excess_loss", "signal": "heldout"}}},
        eval={"tasks": TASKS[:2]},
    )
    r = run_train(held, check=False)
    assert r.returncode == 2
    assert (
        "error: data.mixture.adapt.signal: heldout needs eval.tasks to hold every training task; missing "
        "['add_numbers', 'sort_ascending']" in r.stderr
    )
