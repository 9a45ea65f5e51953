"""Where a run continues from. `plan_resume` decides it before the engine exists (which checkpoint,
whether it must be re-sharded for a new world size, which changes of the run it accepts), and
`load` carries the plan out on the engine. The checkpoint's layout is ift.checkpoint's."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ift import distributed, rundir
from ift.atomic import replacing
from ift.checkpoint import DONE_FILE, STATE_FILE, is_complete, set_rng_state
from ift.config import Config
from ift.errors import RunError, UserError
from ift.hashing import fingerprint

log = logging.getLogger(__name__)


@dataclass
class Resume:
    path: str
    """The checkpoint folder."""
    universal: str | None
    """Its universal form (ZeRO shards re-cut for this world size), or None at the same world size."""
    saved_state: dict
    """Its ift_state.json: step, loader and mixture state, W&B id, world size, fingerprints."""
    allowed_mismatch: list[str]
    """What differs from this run and train.resume_allow_mismatch accepts (model, tokenizer, mixture)."""

    @property
    def step(self) -> int:
        return self.saved_state["step"]


def run_fingerprints(lm, tokenizer, mixture: dict) -> dict:
    """What a checkpoint must agree with to be continued (check_match): the model's config, the
    tokenizer's vocabulary and the mixture's definition."""
    return {
        "model": fingerprint(lm.config.to_dict(), 16),
        "tokenizer": fingerprint(tokenizer.get_vocab(), 16),
        "mixture": fingerprint(mixture, 16),
    }


def plan_resume(cfg: Config, run: rundir.RunDir, world: int, fingerprints: dict) -> Resume | None:
    """What train.resume names (the run's newest valid checkpoint under `auto`), checked against
    this run's fingerprints; None for a fresh start. Collective (verification, the universal
    conversion)."""
    t = cfg.train
    path = rundir.resume_checkpoint(t.resume, run, t.verify_checkpoint)
    if not path:
        return None
    saved = read_state(path)
    allowed = check_match(saved, fingerprints, t.resume_allow_mismatch, path)
    universal = None
    if saved["world_size"] != world and t.zero_stage > 0:  # ZeRO shards are per rank: re-shard
        if distributed.rank() == 0:
            log.info(
                "checkpoint was saved by %d ranks, this run has %d: loading it as a universal checkpoint",
                saved["world_size"],
                world,
            )
        universal = prepare_universal(path)
    return Resume(path, universal, saved, allowed)


def read_state(path: str) -> dict:
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def check_match(saved: dict, current: dict, allow: Sequence[str], path: str) -> list[str]:
    """Compare fingerprints of what defines the run; returns the allowed mismatches."""
    allowed: list[str] = []
    for what in ("model", "tokenizer", "mixture"):
        if saved["fingerprints"].get(what) != current.get(what):
            if what not in allow:
                raise UserError(
                    f"checkpoint {path} was saved with a different {what} than this run's config "
                    f"(to continue anyway, set train.resume_allow_mismatch=[{what}])"
                )
            allowed.append(what)
    return allowed


def prepare_universal(path: str) -> str:
    """The universal form of a checkpoint, for loading at another world size: converted once by
    rank 0 with DeepSpeed's ds_to_universal and kept beside it as `<checkpoint>_universal`."""
    universal = path.rstrip("/") + "_universal"
    if distributed.rank() == 0 and not is_complete(universal):
        convert_to_universal(path, universal)
    distributed.barrier()
    return universal


def load(engine, path: str, universal: str | None = None) -> dict:
    """Load engine state from the ZeRO shards (same world size) or from the universal form made by
    prepare_universal (the engine must then be initialized with checkpoint.load_universal)."""
    source = universal or path
    ckpt_dir, tag = os.path.split(source.rstrip("/"))
    load_path, _ = engine.load_checkpoint(ckpt_dir, tag=tag, load_module_strict=True)
    if load_path is None:
        raise RunError(f"DeepSpeed could not load checkpoint {source}")
    if universal is not None and engine.zero_optimization_stage() == 3:
        _repair_stage3_universal_optimizer(engine, universal)
    rng_file = os.path.join(path, "rng", f"rank_{distributed.rank()}.pt")
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
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    # DeepSpeed's file holds its loss scaler and stage enum beside the tensors: allow those, nothing else
    with torch.serialization.safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum]):
        saved = torch.load(os.path.join(universal, "zero", "optimizer_state.pt"), weights_only=True)
    saved_groups = saved["optimizer_state_dict"]["param_groups"]
    if len(saved_groups) != len(base.param_groups):
        raise RunError(
            f"universal checkpoint {universal} has {len(saved_groups)} optimizer param groups, "
            f"this run has {len(base.param_groups)}"
        )
    for group, saved_group in zip(base.param_groups, saved_groups):
        group.update({k: v for k, v in saved_group.items() if k != "params"})


def convert_to_universal(path: str, out: str) -> None:
    """DeepSpeed's own ds_to_universal, written to a temporary folder then renamed."""
    log.info("converting %s to a universal checkpoint (world size changed)", path)
    with replacing(out) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            "--input_folder",
            path,
            "--output_folder",
            tmp,
            "--num_extract_workers",
            "1",
            "--num_merge_workers",
            "1",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RunError(f"ds_to_universal failed on {path}:\n{done.stderr[-3000:]}")
        with open(os.path.join(tmp, DONE_FILE), "w") as f:
            f.write("universal\n")
