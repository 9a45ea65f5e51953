"""Sharded, atomic, exactly-resumable checkpoints.

Layout under <run dir>/checkpoints/:
    step_00000100/              one complete checkpoint (DeepSpeed tag folder)
        mp_rank_00_model_states.pt, *_optim_states.pt   ZeRO shards, every rank writes its own
        ift_state.json          step, loader/mixer state, W&B id, config, fingerprints
        rng/rank_<r>.pt         python/numpy/torch RNG of every rank
        COMPLETE                written last, after every rank finished
    latest                      name of the newest complete checkpoint (moved after the rename)
A save goes to `.tmp-step_...` and is renamed only when complete, so a kill at any moment leaves
the previous checkpoint as the one a resume picks.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist

from ift.config import UserError

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "ift_state.json"
DONE_FILE = "COMPLETE"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def complete_checkpoints(ckpt_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    out = []
    for name in os.listdir(ckpt_dir):
        m = STEP_DIR.match(name)
        path = os.path.join(ckpt_dir, name)
        if m and os.path.exists(os.path.join(path, DONE_FILE)):
            out.append((int(m.group(1)), path))
    return sorted(out)


def find_resume(resume: str, run_dir: str) -> str | None:
    """The checkpoint folder to resume from: `auto` = newest complete one in the run, `never`, or a path."""
    if resume == "never":
        return None
    if resume == "auto":
        found = complete_checkpoints(os.path.join(run_dir, "checkpoints"))
        return found[-1][1] if found else None
    path = os.path.abspath(resume)
    if os.path.isdir(os.path.join(path, "checkpoints")):  # a run directory
        found = complete_checkpoints(os.path.join(path, "checkpoints"))
        if not found:
            raise UserError(f"train.resume: no complete checkpoint in {path}/checkpoints")
        return found[-1][1]
    if not os.path.exists(os.path.join(path, DONE_FILE)):
        raise UserError(f"train.resume: {path} is not a complete checkpoint (no {DONE_FILE} marker)")
    return path


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state((state["numpy"][0], np.asarray(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- save


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save(engine, run_dir: str, step: int, state: dict, keep_last: int, keep_every: int,
         _stop_inside: bool = False) -> str:
    """Collective: every rank calls it. Returns the final checkpoint path."""
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    final_name = step_name(step)
    tmp_name = f".tmp-{final_name}"
    rank = dist.get_rank() if dist.is_initialized() else 0
    tmp_path = os.path.join(ckpt_dir, tmp_name)
    if rank == 0:
        shutil.rmtree(tmp_path, ignore_errors=True)  # a leftover of a killed save
        os.makedirs(ckpt_dir, exist_ok=True)
    _barrier()
    # universal_checkpoint_info lets ds_to_universal convert this for another world size
    engine.save_checkpoint(ckpt_dir, tag=tmp_name, save_latest=False,
                           client_state={"universal_checkpoint_info": {}})
    os.makedirs(os.path.join(tmp_path, "rng"), exist_ok=True)
    torch.save(rng_state(), os.path.join(tmp_path, "rng", f"rank_{rank}.pt"))
    if _stop_inside:  # test hook: die in the middle of a save, as a kill -9 would
        os._exit(17)
    _barrier()
    final_path = os.path.join(ckpt_dir, final_name)
    if rank == 0:
        with open(os.path.join(tmp_path, STATE_FILE), "w") as f:
            json.dump(state, f, indent=1)
        with open(os.path.join(tmp_path, DONE_FILE), "w") as f:
            f.write(f"{step}\n")
        shutil.rmtree(final_path, ignore_errors=True)
        os.replace(tmp_path, final_path)
        _write_atomic(os.path.join(ckpt_dir, "latest"), final_name)
        _fsync_dir(ckpt_dir)
        prune(ckpt_dir, keep_last, keep_every)
    _barrier()
    return final_path


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(ckpt_dir: str, keep_last: int, keep_every: int) -> None:
    """Delete old complete checkpoints: keep the newest `keep_last` and every `keep_every`-th step.
    Runs only after a newer checkpoint is complete."""
    found = complete_checkpoints(ckpt_dir)
    for step, path in found[:-keep_last] if keep_last else []:
        if keep_every and step % keep_every == 0:
            continue
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- load


def read_state(path: str) -> dict:
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def check_match(saved: dict, current: dict, allow: list[str], path: str) -> list[str]:
    """Compare fingerprints of what defines the run; returns the allowed mismatches."""
    allowed = []
    for what in ("model", "tokenizer", "mixture"):
        if saved["fingerprints"].get(what) != current.get(what):
            if what not in allow:
                raise UserError(
                    f"checkpoint {path} was saved with a different {what} than this run's config "
                    f"(to continue anyway, set train.resume_allow_mismatch=[{what}])")
            allowed.append(what)
    return allowed


def prepare_universal(path: str) -> str:
    """The universal form of a checkpoint, for loading at another world size: converted once by
    rank 0 with DeepSpeed's ds_to_universal and kept beside it as `<checkpoint>_universal`."""
    universal = path.rstrip("/") + "_universal"
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and not os.path.exists(os.path.join(universal, DONE_FILE)):
        convert_to_universal(path, universal)
    _barrier()
    return universal


def load(engine, path: str, universal: str | None = None) -> dict:
    """Load engine state from the ZeRO shards (same world size) or from the universal form made by
    prepare_universal (the engine must then be initialized with checkpoint.load_universal)."""
    source = universal or path
    ckpt_dir, tag = os.path.split(source.rstrip("/"))
    load_path, _ = engine.load_checkpoint(ckpt_dir, tag=tag, load_module_strict=True)
    if load_path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {source}")
    if universal is not None and engine.zero_optimization_stage() == 3:
        _repair_stage3_universal_optimizer(engine, universal)
    rank = dist.get_rank() if dist.is_initialized() else 0
    rng_file = os.path.join(path, "rng", f"rank_{rank}.pt")
    if universal is None and os.path.exists(rng_file):  # per-rank RNG only means something at the same world size
        set_rng_state(torch.load(rng_file, weights_only=True))
    return read_state(path)


def _repair_stage3_universal_optimizer(engine, universal: str) -> None:
    """Undo two faults of DeepSpeed's ZeRO-3 universal load (stage3.py
    load_hp_checkpoint_state_from_checkpoint_dir_stage3, DeepSpeed 0.19):
    - it gives every ZeRO-3 sub-group (one per param group or more) the *same* `step` tensor, which
      torch's Adam/AdamW increments in place once per sub-group step, so from the first step after
      the resume every group but the first uses a step count that runs ahead (bias correction off,
      losses drift from the uninterrupted run). Each sub-group gets its own copy here.
    - it copies param_groups[0]'s hyperparameters into every group, so our no-decay group would
      get weight decay. Each group gets back its own saved hyperparameters (same order: both
      engines build their groups with build_optimizer)."""
    base = getattr(engine.optimizer, "optimizer", None)
    if base is None:
        return
    for state in base.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()
    saved = torch.load(os.path.join(universal, "zero", "optimizer_state.pt"), weights_only=False)
    saved_groups = saved["optimizer_state_dict"]["param_groups"]
    if len(saved_groups) != len(base.param_groups):
        raise UserError(f"universal checkpoint {universal} has {len(saved_groups)} optimizer param groups, "
                        f"this run has {len(base.param_groups)}")
    for group, saved_group in zip(base.param_groups, saved_groups):
        group.update({k: v for k, v in saved_group.items() if k != "params"})


def convert_to_universal(path: str, out: str) -> None:
    """DeepSpeed's own ds_to_universal, written to a temporary folder then renamed."""
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting %s to a universal checkpoint (world size changed)", path)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", path,
           "--output_folder", tmp, "--num_extract_workers", "1", "--num_merge_workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"ds_to_universal failed on {path}:\n{done.stderr[-3000:]}")
    with open(os.path.join(tmp, DONE_FILE), "w") as f:
        f.write("universal\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
