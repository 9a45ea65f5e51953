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
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    ift.distributed._HOST_GROUP = None
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)


def test_batches_and_collective_tensors_go_through_placement(tmp_path, monkeypatch, in_process_world):
    import ift.engine
    import ift.step_metrics
    import ift.train
    from ift.config import load_config

    path = write_config(tmp_path, "placement", train={"max_steps": 3, "log_every": 1, "grad_accum": 2},
                        eval={"every": 2, "limit": 4, "tasks": [{"builtin": "uppercase_word", "n": 8}]})
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
        assert not unplaced and not [a for a in args if torch.is_tensor(a)], \
            f"inputs not moved by to_device: {unplaced}"
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
