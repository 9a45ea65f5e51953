"""End-to-end training: real `ift train` subprocesses on DeepSpeed (CPU, gloo) with a tiny Llama.

Start-up (imports, W&B, DeepSpeed) dominates these tiny runs, so each group of independent runs
is started at once by a module fixture and the tests then check the finished runs.

- ZeRO-2 and ZeRO-3 on 2 processes: loss falls, metrics, per-task losses, W&B offline files,
  run-directory layout, consolidated checkpoints.                                   (slow)
- Loss normalization: micro-batch 4 x 1 process == micro-batch 1 x grad_accum 4 == 2 ranks x
  micro-batch 2, step by step (and the held-out loss, scored in shares across ranks) and in the
  final weights: padded rows on ZeRO-2, packed rows on ZeRO-3.                      (slow)
- A local `from_pretrained` folder trains; DeepSpeed config-file conflicts and shipped configs;
  a non-finite loss stops the run naming the step (exit 1: a failure of the run, not of its input).
"""

from __future__ import annotations

import json
import math
import re

import pytest
import yaml
from helpers import (
    MIXED_DATA,
    REPO,
    TINY_MODEL,
    consolidated_state,
    final_checkpoint,
    pretrained_folder,
    read_metrics,
    run_concurrently,
    write_config,
)

# --------------------------------------------------------------------------- 1. ZeRO-2 / ZeRO-3, 2 processes

LEARN = dict(
    data={"tasks": [{"builtin": "reverse_word", "n": 64}, {"builtin": "uppercase_word", "n": 64}]},
    train={
        "max_steps": 20,
        "lr": 1e-2,
        "warmup_steps": 2,
        "lr_schedule": "cosine",
        "log_every": 5,
        "micro_batch_size": 4,
    },
    tracking={"wandb": {"mode": "offline"}},
)
TASKS = ("reverse_word", "uppercase_word")


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory):
    """ZeRO-2 on the two-task mixture; ZeRO-3 as a single-task baseline (--only-task reverse_word)."""
    tmp = tmp_path_factory.mktemp("zero")
    z2 = write_config(tmp, "z2", **LEARN)
    z3 = write_config(
        tmp, "z3", data=LEARN["data"], tracking=LEARN["tracking"], train={**LEARN["train"], "zero_stage": 3}
    )
    return run_concurrently({2: (z2, {"nproc": 2}), 3: (z3, {"nproc": 2, "only_task": "reverse_word"})})


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_two_processes_learns_and_writes_the_run(zero_runs, stage):
    job = zero_runs[stage]
    job.wait()
    run = job.run_dir
    assert run.name == ("z2" if stage == 2 else "z3-ft-reverse_word")
    tasks = TASKS if stage == 2 else ("reverse_word",)

    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [5, 10, 15, 20]
    for m in metrics:
        for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s"):
            assert isinstance(m.get(key), (int, float)) and math.isfinite(m[key]), (key, m)
        assert m["tokens_per_s"] > 0 and m["lr"] > 0 and m["grad_norm"] > 0
        # per-task losses: exactly the trained tasks (the --only-task run drops the other one)
        assert sorted(k for k in m if k.startswith("loss/")) == sorted(f"loss/{t}" for t in tasks)
        assert all(math.isfinite(m[f"loss/{t}"]) for t in tasks)
    first, last = metrics[0], metrics[-1]
    assert last["loss"] < first["loss"] - 1.0, [m["loss"] for m in metrics]
    for t in tasks:
        assert last[f"loss/{t}"] < first[f"loss/{t}"] - 0.5, (t, first, last)

    # W&B offline run written in the run directory, with the id the run directory keeps
    run_id = (run / "wandb_run_id").read_text().strip()
    assert list((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")), list((run / "wandb").iterdir())

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["zero_stage"] == stage and saved["train"]["max_steps"] == 20
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    mixture = json.loads((run / "mixture.json").read_text())
    assert sorted(mixture["tasks"]) == sorted(tasks)

    ckpt = final_checkpoint(run)
    assert ckpt.name == "step_00000020" and (ckpt / "ift_state.json").is_file()
    assert (run / "checkpoints" / "latest").read_text().strip() == ckpt.name
    assert len(list(ckpt.glob("*optim_states.pt"))) == 2  # one ZeRO shard per rank: 2 ranks really ran
    state = consolidated_state(run)
    assert state["model.embed_tokens.weight"].shape == (TINY_MODEL["vocab_size"], TINY_MODEL["hidden_size"])
    assert all(v.isfinite().all() for v in state.values())


# --------------------------------------------------------------------------- 2. loss normalization

EQUIV_DATA = MIXED_DATA
# No clipping (it would hide a wrong gradient scale), constant moderate lr. Adam amplifies float
# noise in elements whose gradient is ~eps; at lr 1e-4 that stays well under 1e-6, while a
# per-micro-batch normalization moves most weights by ~1e-4.
EQUIV_TRAIN = {
    "max_steps": 4,
    "grad_clip": 0.0,
    "lr": 1e-4,
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "log_every": 1,
    "zero_stage": 2,
}
# The held-out loss at steps 2 and 4: 5 batches, so at 2 ranks one rank scores 3 and the other
# 2 (+ one uncounted forward, which ZeRO-3's collective parameter gathering needs).
EQUIV_EVAL = {
    "every": 2,
    "limit": 5,
    "batch_size": 2,
    "tasks": [{"builtin": "uppercase_word", "n": 8}, {"builtin": "add_numbers", "n": 8}],
}
LAYOUTS = {  # name: (train overrides, processes); every layout has 4 rows per optimizer step
    "mb4": ({"micro_batch_size": 4, "grad_accum": 1}, 1),
    "ga4": ({"micro_batch_size": 1, "grad_accum": 4}, 1),
    "w2": ({"micro_batch_size": 2, "grad_accum": 1}, 2),
}


def _layout_train(packing: bool, name: str) -> dict:
    # The packed variant runs every layout on ZeRO-3 (its own gradient partitioning and accumulation
    # path). All layouts of one variant share the ZeRO stage: a from-scratch init under zero.Init
    # draws different random weights than a plain init with the same seed.
    return {**EQUIV_TRAIN, **LAYOUTS[name][0], "zero_stage": 3 if packing else 2}


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equiv")
    jobs = {}
    for packing in (False, True):
        for name, (_, nproc) in LAYOUTS.items():
            tag = f"{'packed' if packing else 'padded'}_{name}"
            path = write_config(
                tmp, tag, data={**EQUIV_DATA, "packing": packing}, train=_layout_train(packing, name), eval=EQUIV_EVAL
            )
            jobs[(packing, name)] = (path, {"nproc": nproc})
    return run_concurrently(jobs)


@pytest.mark.slow
@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_loss_normalization_is_independent_of_batch_layout(equivalence_runs, packing):
    runs = {name: equivalence_runs[(packing, name)] for name in LAYOUTS}
    for job in runs.values():
        job.wait()
    metrics = {name: read_metrics(job.run_dir) for name, job in runs.items()}
    ref = metrics["mb4"]
    assert [m["step"] for m in ref] == [1, 2, 3, 4]
    if not packing:  # rows of different lengths really were padded, differently per layout
        assert any(m["padding_frac"] > 0.05 for m in ref)
        assert all(m["padding_frac"] == 0 for m in metrics["ga4"])  # one row per micro-batch: no padding
    for name in ("ga4", "w2"):
        other = metrics[name]
        assert [m["step"] for m in other] == [1, 2, 3, 4]
        for a, b in zip(ref, other):
            where = f"{name} step {a['step']}"
            assert b["examples_drawn"] == a["examples_drawn"], where  # same data
            # same global-batch token-mean loss at every step: the same weights before every step
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=0), where
            for key in (k for k in a if k.startswith("loss/")):
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=0), (where, key)
            # same gradient: a wrong scale (which Adam would mostly hide) shows here
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5, abs=0), where
            # the held-out loss: each rank scored its share, the sums all-reduced
            held = [k for k in a if k.startswith("eval/loss")]
            assert bool(held) == (a["step"] % EQUIV_EVAL["every"] == 0), where
            for key in held:
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=0), (where, key)

    assert all(m["grad_norm"] > 0 and m["lr"] == EQUIV_TRAIN["lr"] for m in ref)  # the weights did move
    weights = {name: consolidated_state(job.run_dir) for name, job in runs.items()}
    for name in ("ga4", "w2"):
        assert weights[name].keys() == weights["mb4"].keys()
        worst = max(((weights[name][k] - v).abs().max().item(), k) for k, v in weights["mb4"].items())
        assert worst[0] <= 1e-6, f"{name}: weights differ from mb4 by {worst[0]:.3g} in {worst[1]}"


# --------------------------------------------------------------------------- 3, 4. single-process runs


@pytest.fixture(scope="module")
def solo_runs(tmp_path_factory):
    """Single-process runs, started together: a from_pretrained folder, a conflicting DeepSpeed
    config file, and a diverging lr."""
    tmp = tmp_path_factory.mktemp("solo")
    folder = tmp / "pretrained"
    vocab, tok_size = pretrained_folder(folder)
    pre = write_config(
        tmp, "pre", model={"config": None, "name_or_path": str(folder)}, train={"max_steps": 3, "lr": 1e-2}
    )
    ds_file = tmp / "ds_conflict.json"
    ds_file.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 2}}))
    conflict = write_config(tmp, "conflict", deepspeed={"config_file": str(ds_file)}, train={"micro_batch_size": 4})
    # Adam moves every weight by ~lr at step 1; at 1e30 the next forward pass overflows.
    diverge = write_config(tmp, "diverge", train={"lr": 1e30, "max_steps": 5, "grad_clip": 0.0})
    jobs = run_concurrently({"pre": (pre, {}), "conflict": (conflict, {}), "diverge": (diverge, {})})
    jobs["pre"].info = {"folder": folder, "vocab": vocab, "tok_size": tok_size}
    return jobs


def test_local_from_pretrained_folder_trains(solo_runs):
    job = solo_runs["pre"]
    job.wait()
    info, run = job.info, job.run_dir
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in metrics)
    # the saved weights were loaded (a fresh random init is ~0.03 away from uniform)
    assert metrics[0]["loss"] == pytest.approx(math.log(info["vocab"]), abs=1e-4)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    # the folder's tokenizer is the run's tokenizer (not a BPE retrained on the data)
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(run / "tokenizer").get_vocab()
        == AutoTokenizer.from_pretrained(info["folder"]).get_vocab()
    )
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(info["folder"]) and saved["model"]["config"] is None
    state = consolidated_state(run)
    assert state["lm_head.weight"].shape == (info["vocab"], TINY_MODEL["hidden_size"])
    assert state["lm_head.weight"].abs().max() > 0  # trained away from the saved zeros


def test_deepspeed_config_file_conflict_exits_2(solo_runs):
    result = solo_runs["conflict"].wait(check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "train_micro_batch_size_per_gpu=8" in errors[0] and "train.micro_batch_size=4" in errors[0]
    assert "Traceback" not in result.stderr


def test_nonfinite_loss_stops_naming_the_step(solo_runs):
    job = solo_runs["diverge"]
    result = job.wait(check=False)
    # not the input's fault: a failure of the run (exit 1, traceback in the log), not a user error
    assert result.returncode == 1, result.stderr[-3000:]
    assert "ift.errors.RunError: non-finite loss" in result.stderr and "Traceback" in result.stderr
    # (the progress bar's carriage returns can put the message mid-line)
    found = re.search(r"failed: non-finite loss \((nan|inf|-inf)\) at step (\d+)", result.stderr)
    assert found, result.stderr[-3000:]
    step = int(found.group(2))
    logged = read_metrics(job.run_dir)
    assert step == 2 and [m["step"] for m in logged] == [1]  # step 1 was finite and logged, then it stopped
    assert not list((job.run_dir / "checkpoints").glob("step_*"))  # nothing saved from a diverged model


# --------------------------------------------------------------------------- 4. DeepSpeed config, in process


def _cfg(*overrides):
    from ift.config import load_config

    return load_config(None, list(overrides))


@pytest.mark.parametrize(
    "entry, train, message",
    [
        ({"train_micro_batch_size_per_gpu": 8}, [], ("train_micro_batch_size_per_gpu=8", "train.micro_batch_size=4")),
        (
            {"gradient_accumulation_steps": 3},
            ["train.grad_accum=2"],
            ("gradient_accumulation_steps=3", "train.grad_accum=2"),
        ),
        ({"gradient_clipping": 0.5}, [], ("gradient_clipping=0.5", "train.grad_clip=1.0")),
        ({"zero_optimization": {"stage": 3}}, [], ("zero_optimization.stage=3", "train.zero_stage=2")),
        ({"optimizer": {"type": "AdamW"}}, [], ("remove 'optimizer'",)),
        ({"scheduler": {"type": "WarmupLR"}}, [], ("remove 'scheduler'",)),
        ({"bf16": {"enabled": True}}, ["model.dtype=fp32"], ("bf16.enabled=True", "model.dtype=fp32")),
        ({"fp16": {"enabled": False}}, ["model.dtype=fp16"], ("fp16.enabled=False", "model.dtype=fp16")),
    ],
)
def test_deepspeed_config_file_conflicts_name_both_fields(tmp_path, entry, train, message):
    """Checked with the config, at load: before any launcher or rank starts."""
    from ift.config import ConfigError

    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, **entry}))
    with pytest.raises(ConfigError) as err:
        _cfg(f"deepspeed.config_file={path}", *train)
    for part in message:
        assert part in str(err.value)


def test_deepspeed_config_file_auto_and_agreeing_values(tmp_path):
    from ift.engine import deepspeed_config

    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": 2,
                "gradient_clipping": "auto",
                "zero_optimization": {"stage": 2, "overlap_comm": True},
            }
        )
    )
    ds = deepspeed_config(_cfg(f"deepspeed.config_file={path}", "train.grad_accum=2", "train.micro_batch_size=3"), 2)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 12 and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True}


def test_deepspeed_config_bad_json_names_the_line(tmp_path):
    from ift.config import ConfigError

    path = tmp_path / "ds.json"
    path.write_text('{\n  "zero_optimization": {"stage": 2},\n  oops\n}\n')
    with pytest.raises(ConfigError, match=r"ds\.json:3: invalid JSON"):
        _cfg(f"deepspeed.config_file={path}")
    with pytest.raises(ConfigError, match=r"deepspeed.config_file: must be an existing JSON file"):
        _cfg(f"deepspeed.config_file={tmp_path / 'missing.json'}")


SHIPPED = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


@pytest.mark.parametrize(
    "path",
    SHIPPED
    or [pytest.param(None, marks=pytest.mark.skip(reason="no configs/deepspeed/*.json in the repository yet"))],
    ids=lambda p: p.name if p else "none",
)
def test_shipped_deepspeed_configs_load(path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.config import DeepSpeedConfig

    from ift.engine import deepspeed_config

    raw = json.loads(path.read_text())
    stage = raw.get("zero_optimization", {}).get("stage", 0)
    overrides = [f"deepspeed.config_file={path}", f"train.zero_stage={stage}"]
    for dtype in ("bf16", "fp16"):
        if raw.get(dtype, {}).get("enabled") is True:
            overrides.append(f"model.dtype={dtype}")
    for key, field in (
        ("train_micro_batch_size_per_gpu", "micro_batch_size"),
        ("gradient_accumulation_steps", "grad_accum"),
        ("gradient_clipping", "grad_clip"),
    ):
        if raw.get(key, "auto") != "auto":
            overrides.append(f"train.{field}={raw[key]}")
    ds = deepspeed_config(_cfg(*overrides), 1)
    parsed = DeepSpeedConfig(ds)  # DeepSpeed's own validation of every section
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_batch_size == ds["train_batch_size"]
    # and the same file with an fp32 model is refused, naming both sides
    if any(raw.get(k, {}).get("enabled") is True for k in ("bf16", "fp16")):
        from ift.errors import UserError

        with pytest.raises(UserError, match="model.dtype=fp32"):
            deepspeed_config(_cfg(*[o for o in overrides if not o.startswith("model.dtype=")]), 1)
