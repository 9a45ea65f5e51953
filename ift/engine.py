"""The training engine: where batches go (the one function that places tensors), the DeepSpeed
config from the typed config, and `deepspeed.initialize` with our optimizer and LR schedule. The
distributed world itself is ift.distributed."""

from __future__ import annotations

import json
import logging
import math

import torch

from ift.config import Config
from ift.config_loader import deep_merge
from ift.distributed import accelerator_available, resolve_dtype
from ift.errors import UserError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- placement


def to_device(batch: dict, device: torch.device) -> dict:
    """The one place a micro-batch moves to the model's device. On CUDA the loader collated it
    into pinned memory (pin_batch), so the copy is asynchronous; on CPU this returns the batch."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_inputs(batch: dict, device: torch.device) -> tuple[dict, torch.Tensor]:
    """(the model's inputs, the task of each target token), on `device`. The per-position task_ids
    stay on the host: the loss needs only the targets' tasks."""
    placed = to_device({k: v for k, v in batch.items() if k != "task_ids"}, device)
    return placed, placed.pop("target_task")


def pin_batch(batch: dict) -> dict:
    """Page-locked host memory, so that to_device's copy does not block (CUDA only)."""
    if not accelerator_available():
        return batch
    return {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}


def zero_comm(stage: int, hidden_size: int | None) -> dict:
    """Communication settings of a generated ZeRO config. Overlap: gradients are reduced while the
    backward pass goes on (DeepSpeed turns it on by itself only at stage 3), from contiguous
    buffers. Buckets from the model's width, as the DeepSpeed/transformers integration's "auto"
    values do (hidden^2 elements per reduce; at stage 3 0.9 x hidden^2 prefetched and parameters
    under 10 x hidden kept whole), never under 2^20 elements (a tiny model: one bucket, not hundreds).
    Without a width (config-file checks before the model is known) DeepSpeed's defaults stay."""
    if stage == 0:
        return {}
    out: dict = {"overlap_comm": True, "contiguous_gradients": True}
    if hidden_size:
        bucket = max(hidden_size * hidden_size, 1 << 20)
        out["reduce_bucket_size"] = bucket
        if stage == 3:
            out["stage3_prefetch_bucket_size"] = int(0.9 * bucket)
            out["stage3_param_persistence_threshold"] = 10 * hidden_size
        else:
            out["allgather_bucket_size"] = bucket
    return out


def deepspeed_config(cfg: Config, world_size: int, hidden_size: int | None = None) -> dict:
    """The DeepSpeed config: from deepspeed.config_file (checked against the typed config), or
    generated (with zero_comm's settings for a model of width `hidden_size`; deepspeed.extra
    overrides any of them). The optimizer and schedule are ours (see build_optimizer), so
    "optimizer" and "scheduler" entries are refused to keep one source of truth."""
    t, d = cfg.train, cfg.deepspeed
    dtype_name = resolve_dtype(cfg.model.dtype)
    expected = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.grad_clip,
    }
    if d.config_file:  # checked against the typed config at load (ift.config.check_deepspeed_file)
        with open(d.config_file) as f:
            ds = json.load(f)
        for key in ("bf16", "fp16"):
            ds[key] = {**ds.get(key, {}), "enabled": dtype_name == key}
    else:
        zero: dict = {"stage": t.zero_stage, **zero_comm(t.zero_stage, hidden_size)}
        if d.offload_optimizer and t.zero_stage > 0:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": accelerator_available()}
        if d.offload_param and t.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": accelerator_available()}
        if t.zero_stage == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = False
        ds = {"zero_optimization": zero}
    ds.update(expected)
    if world_size % t.sequence_parallel:
        raise UserError(
            f"train.sequence_parallel={t.sequence_parallel}: the world size {world_size} is not divisible by it"
        )
    # rows per optimizer step: the ranks of a sequence-parallel group share theirs
    ds["train_batch_size"] = t.micro_batch_size * t.grad_accum * (world_size // t.sequence_parallel)
    if t.sequence_parallel > 1:
        ds["sequence_parallel_size"] = t.sequence_parallel
    # check_grad_overflow: bf16 updates with a non-finite gradient are skipped (train.skip_nonfinite)
    ds.setdefault("bf16", {"enabled": dtype_name == "bf16", "check_grad_overflow": t.skip_nonfinite})
    ds.setdefault("fp16", {"enabled": dtype_name == "fp16"})  # fp16: DeepSpeed's dynamic loss scaling
    ds.setdefault("steps_per_print", 10**9)  # we log ourselves
    ds.setdefault("wall_clock_breakdown", False)
    # A torch optimizer on CPU, DeepSpeed's CPU Adam when ZeRO offloads (see build_optimizer)
    ds.setdefault("zero_allow_untested_optimizer", True)
    ds.setdefault("zero_force_ds_cpu_optimizer", False)
    return deep_merge(ds, d.extra)


def lr_lambda(cfg: Config):
    t = cfg.train

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / (t.warmup_steps + 1)
        if t.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if t.lr_schedule == "cosine" else 1 - progress
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * shape

    return factor


def build_optimizer(cfg: Config, model, ds_config: dict):
    t = cfg.train
    decay: list = []
    no_decay: list = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            # ZeRO-3 (zero.Init) leaves an empty 1-D placeholder; ds_shape is the real shape
            (no_decay if len(getattr(p, "ds_shape", p.shape)) < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    offload = ds_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "cpu"
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=t.lr, betas=(t.betas[0], t.betas[1]), adamw_mode=True)
    # torch's fused AdamW on CUDA: one kernel per step, nothing to JIT-build
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.betas[0], t.betas[1]), fused=accelerator_available() or None)


def initialize(cfg: Config, model, ds_config: dict, mpu=None):
    """`model` is what DeepSpeed trains (ift.model.CausalLMLoss: its forward returns the loss);
    `mpu`: DeepSpeed's sequence-parallel groups (ift.sequence_parallel.setup) or None."""
    import deepspeed

    optimizer = build_optimizer(cfg, model, ds_config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, mpu=mpu
    )
    return engine, optimizer, scheduler
