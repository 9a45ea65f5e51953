"""Device placement, proven on CPU by standing in for the GPU.

On a GPU the training loop breaks in two ways that a CPU run never shows: a micro-batch left on
the host reaches a model on CUDA, and a host tensor enters an NCCL collective. Here a real
one-process `Trainer` (DeepSpeed engine, gloo) runs with two spies:
- `to_device` records every tensor it returns, and a forward pre-hook on the engine's module
  fails on any input that did not come from it (the loader's host tensors used to go straight in);
- `collective_device` reports a device that is not the host (meta) and the collective helpers fail
  on any tensor not on it (the per-step tally used to be all-reduced as a host float64 tensor).
The held-out loss (`eval.every`) goes through the same checks."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers import write_config

DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def in_process_world(monkeypatch):
    """A one-process world inside pytest, torn down afterwards (process group, signal handlers)."""
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    import ift.distributed

    for s, h in handlers.items():
        signal.signal(s, h)
    ift.distributed.shutdown()
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)


def test_batches_and_collective_tensors_go_through_placement(tmp_path, monkeypatch, in_process_world):
    import ift.engine
    import ift.step_metrics
    import ift.train
    from ift.config import load_config

    path = write_config(
        tmp_path,
        "placement",
        train={"max_steps": 3, "log_every": 1, "grad_accum": 2},
        eval={"every": 2, "limit": 4, "tasks": [{"builtin": "uppercase_word", "n": 8}]},
    )
    cfg = load_config(str(path), [])

    placed: set[int] = set()
    real_to_device = ift.engine.to_device

    def spy_to_device(batch, device):
        out = real_to_device(batch, device)
        placed.update(id(v) for v in out.values())
        return out

    # training steps and the held-out loss both place batches with ift.engine.model_inputs -> to_device
    monkeypatch.setattr(ift.engine, "to_device", spy_to_device)

    gpu_stand_in = torch.device("meta")
    collective_inputs: list[torch.device] = []

    def spy_all_reduce(t, op=None):
        collective_inputs.append(t.device)
        return torch.zeros(t.shape, dtype=t.dtype)

    def spy_all_gather(t):
        collective_inputs.append(t.device)
        return [torch.zeros(t.shape, dtype=t.dtype)]

    # the loss tallies enter collectives (ift.step_metrics); a CUDA device stands in as "meta"
    monkeypatch.setattr(ift.step_metrics, "collective_device", lambda device: gpu_stand_in)
    monkeypatch.setattr(ift.step_metrics, "all_reduce", spy_all_reduce)
    monkeypatch.setattr(ift.step_metrics, "all_gather", spy_all_gather)

    trainer = ift.train.Trainer(cfg)
    forwards: list[list[str]] = []

    def inputs_were_placed(module, args, kwargs):
        tensors = [v for v in (*args, *kwargs.values()) if torch.is_tensor(v)]
        assert tensors, "the model was called without tensors"
        unplaced = [k for k, v in kwargs.items() if torch.is_tensor(v) and id(v) not in placed]
        assert not unplaced and not [a for a in args if torch.is_tensor(a)], (
            f"inputs not moved by to_device: {unplaced}"
        )
        forwards.append(sorted(kwargs))

    trainer.engine.module.register_forward_pre_hook(inputs_were_placed, with_kwargs=True)
    result = trainer.train()

    assert result["step"] == 3 and result["finished"]
    n_heldout = len(trainer.heldout[1])
    # every micro-batch of every step, and the held-out batches at step 2 (eval.every) and the last step
    assert len(forwards) == 3 * 2 + 2 * n_heldout
    assert all("input_ids" in f and "target_index" in f for f in forwards)
    # per logging step: the loss tally (all_reduce) and the non-finite tally (all_gather); one more
    # non-finite check before the final save
    assert len(collective_inputs) >= 2 * 3
    assert set(collective_inputs) == {gpu_stand_in}, collective_inputs


def test_to_device_moves_every_tensor_and_keeps_values():
    from ift.engine import to_device

    batch = {"a": torch.arange(6).view(2, 3), "b": torch.ones(4)}
    moved = to_device(batch, torch.device("meta"))
    assert {k: v.device.type for k, v in moved.items()} == {"a": "meta", "b": "meta"}
    assert {k: v.shape for k, v in moved.items()} == {k: v.shape for k, v in batch.items()}
    same = to_device(batch, torch.device("cpu"))
    assert all(torch.equal(same[k], batch[k]) for k in batch)


HOST_READS = ("item", "tolist", "new_tensor", "__float__", "__int__", "__bool__", "cpu")


def test_no_host_read_in_a_step_that_does_not_log(tmp_path, monkeypatch, in_process_world):
    """On CUDA every read of a device value into Python (item, tolist, float(t), bool(t), .cpu())
    and every Python scalar copied to the device (new_tensor) blocks until the GPU catches up.
    Spies on those Tensor methods record each call made from ift's own code, with the phase of the
    loop it came from; a step that neither logs nor saves must make none. (numpy() is not spied:
    it refuses a CUDA tensor, so it only ever reads host tensors, like the stop vote's.)"""
    import os
    import sys

    import ift.train
    from ift.config import load_config

    path = write_config(tmp_path, "sync", train={"max_steps": 8, "log_every": 4, "grad_accum": 2, "peak_tflops": 1.0})
    cfg = load_config(str(path), [])
    package = os.path.dirname(ift.train.__file__)
    phase = {"now": "set-up"}
    calls: list[tuple[str, str, str]] = []

    def spy(name, real):
        def method(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(package):
                calls.append((phase["now"], name, f"{os.path.relpath(caller, package)}:{sys._getframe(1).f_lineno}"))
            return real(self, *args, **kwargs)

        return method

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))

    def in_phase(name, real):
        def method(self, *args, **kwargs):
            before, phase["now"] = phase["now"], name
            try:
                return real(self, *args, **kwargs)
            finally:
                phase["now"] = before

        return method

    for name in ("log_metrics", "checkpoint_state", "finish"):
        monkeypatch.setattr(ift.train.Trainer, name, in_phase(name, getattr(ift.train.Trainer, name)))
    trainer = ift.train.Trainer(cfg)
    phase["now"] = "step"
    result = trainer.train()

    assert result["finished"] and result["step"] == 8
    in_steps = [c for c in calls if c[0] == "step"]
    assert not in_steps, f"host reads in steps that do not log: {in_steps}"
    assert any(c[0] == "log_metrics" for c in calls)  # the spies do see ift's reads where they belong
    m = result["last_metrics"]
    assert m["tflops_per_device"] > 0 and m["mfu"] == pytest.approx(m["tflops_per_device"] / 1.0)


def test_checkpoint_checksums_come_from_the_bytes_written(tmp_path, monkeypatch, in_process_world):
    """The manifest's CRC-32s are computed while DeepSpeed's checkpoint engine writes the shards
    (ift.checkpoint.save_file), not by reading the files back: only DeepSpeed's small helper files
    nobody recorded are read. The manifest still matches a full read-back verification."""
    import ift.checkpoint
    import ift.train
    from ift.config import load_config

    cfg = load_config(str(write_config(tmp_path, "crc", train={"max_steps": 2})), [])
    read_back: list[str] = []
    real_crc = ift.checkpoint._crc32
    trainer = ift.train.Trainer(cfg)
    monkeypatch.setattr(ift.checkpoint, "_crc32", lambda p: read_back.append(p) or real_crc(p))
    result = trainer.train()
    monkeypatch.setattr(ift.checkpoint, "_crc32", real_crc)

    ckpt = result["checkpoint"]
    manifest = json.loads(open(os.path.join(ckpt, ift.checkpoint.MANIFEST_FILE)).read())["files"]
    assert "mp_rank_00_model_states.pt" in manifest and "rng/rank_0.pt" in manifest
    assert not [p for p in read_back if p.endswith((".pt", ift.checkpoint.STATE_FILE))], read_back
    assert ift.checkpoint.verify_checkpoint(ckpt, "full") == []
