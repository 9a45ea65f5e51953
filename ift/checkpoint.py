"""Sharded, atomic, exactly-resumable checkpoints.

Layout under <run dir>/checkpoints/:
    step_00000100/              one complete checkpoint (DeepSpeed tag folder)
        mp_rank_00_model_states.pt, *_optim_states.pt   ZeRO shards, every rank writes its own
        ift_state.json          step, loader/mixer state, W&B id, config, fingerprints
        rng/rank_<r>.pt         python/numpy/torch RNG of every rank
        MANIFEST.json           size and CRC-32 of every other file, written before COMPLETE
        COMPLETE                written last, after every rank finished
    latest                      name of the newest complete checkpoint (moved after the rename)
A save goes to `.tmp-step_...` and is renamed only when complete, so a kill at any moment leaves
the previous checkpoint as the one a resume picks. A resume (and `ift export`, `ift eval`) checks
the newest checkpoint against its manifest (train.verify_checkpoint: full | size | none); one that
fails is reported, set aside (renamed `<name>.invalid-<n>`, never deleted) and the next newest
valid one is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import time
import zlib
from collections.abc import Callable
from typing import IO, cast

import numpy as np
import torch

from ift import distributed, faults
from ift.atomic import fsync, write_text
from ift.config import TrainConfig

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "ift_state.json"
DONE_FILE = "COMPLETE"
MANIFEST_FILE = "MANIFEST.json"


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
        if m and is_complete(path):
            out.append((int(m.group(1)), path))
    return sorted(out)


def is_complete(path: str) -> bool:
    """A checkpoint folder whose save finished (its COMPLETE marker is written last)."""
    return os.path.isfile(os.path.join(path, DONE_FILE))


# --------------------------------------------------------------------------- integrity


def _crc32(path: str) -> str:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _files(path: str) -> list[str]:
    out = []
    for root, _, names in os.walk(path):
        out += [os.path.relpath(os.path.join(root, n), path) for n in names]
    return sorted(f for f in out if f not in (MANIFEST_FILE, DONE_FILE))


class _ChecksummedFile:
    """A file opened for writing, seen by torch.save as its target: the CRC-32 and size of the bytes
    are computed as they pass, so the manifest needs no read-back of what was just written."""

    def __init__(self, f):
        self.f, self.crc, self.size = f, 0, 0

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += memoryview(data).nbytes
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_file(obj, path: str, written: dict, zipfile: bool = True) -> None:
    """torch.save to `path`, fsynced, with its size and CRC-32 recorded in `written` (path -> entry)."""
    with open(path, "wb") as f:
        out = _ChecksummedFile(f)
        torch.save(obj, cast(IO[bytes], out), _use_new_zipfile_serialization=zipfile)
        f.flush()
        os.fsync(f.fileno())
    written[os.path.abspath(path)] = {"size": out.size, "crc32": f"{out.crc:08x}"}


def write_bytes(data: bytes, path: str, written: dict) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    written[os.path.abspath(path)] = {"size": len(data), "crc32": f"{zlib.crc32(data):08x}"}


@contextlib.contextmanager
def checksummed_saves(engine, written: dict):
    """While DeepSpeed saves, its torch checkpoint engine writes through save_file, so every shard's
    CRC-32 comes from the bytes written. Another checkpoint engine (DeepSpeed's decoupled or
    Nebula ones) is left as it is; the manifest then reads its files back."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    ce = getattr(engine, "checkpoint_engine", None)
    if ce is None or type(ce) is not TorchCheckpointEngine:
        yield
        return
    ce.save = lambda state_dict, path: save_file(state_dict, path, written, ce.zipfile_serialization)
    try:
        yield
    finally:
        del ce.save  # back to the class's method


def write_manifest(path: str, written: dict) -> None:
    """Collective: every rank hands over the sizes and CRC-32s of the files it wrote (`written`,
    absolute path -> entry); rank 0 reads back (and fsyncs) only files nobody recorded (DeepSpeed's
    small helper files), then writes MANIFEST.json."""
    mine = {os.path.relpath(k, path): v for k, v in written.items()}
    parts = distributed.gather_objects(mine)
    if distributed.rank() == 0:
        entries = {k: v for part in parts for k, v in part.items()}
        for rel in _files(path):
            if rel not in entries:
                full = os.path.join(path, rel)
                fsync(full)  # on disk before COMPLETE says so
                entries[rel] = {"size": os.path.getsize(full), "crc32": _crc32(full)}
        with open(os.path.join(path, MANIFEST_FILE), "w") as f:
            json.dump({"files": dict(sorted(entries.items()))}, f, indent=1)


_warned_no_manifest: set[str] = set()


def verify_checkpoint(path: str, mode: str = "full") -> list[str]:
    """Problems of a complete checkpoint against its manifest ([] = valid): each names the file,
    what the manifest expects and what was found. mode: full (sizes and CRC-32), size, none."""
    if mode == "none":
        return []
    manifest = os.path.join(path, MANIFEST_FILE)
    if not os.path.exists(manifest):  # written before manifests existed (or by another tool)
        if os.path.dirname(path) not in _warned_no_manifest:
            _warned_no_manifest.add(os.path.dirname(path))
            log.warning(
                "%s has no %s (written before checkpoint manifests): it cannot be verified, loading it as it is",
                path,
                MANIFEST_FILE,
            )
        return []
    began = time.perf_counter()
    try:
        with open(manifest) as f:
            expected = json.load(f)["files"]
    except (OSError, ValueError, KeyError) as e:
        return [f"{manifest}: unreadable manifest ({e})"]
    problems, total = [], 0
    for rel, want in expected.items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            problems.append(f"{full}: missing (expected {want['size']} bytes)")
            continue
        size = os.path.getsize(full)
        total += size
        if size != want["size"]:
            problems.append(f"{full}: {size} bytes, expected {want['size']}")
        elif mode == "full" and (crc := _crc32(full)) != want["crc32"]:
            problems.append(f"{full}: CRC-32 {crc}, expected {want['crc32']}")
    log.log(
        logging.INFO if mode == "full" else logging.DEBUG,
        "verified %s (%s: %d files, %.2f GB) in %.2fs%s",
        path,
        mode,
        len(expected),
        total / 1e9,
        time.perf_counter() - began,
        f": {len(problems)} problem(s)" if problems else "",
    )
    return problems


def set_aside(path: str, problems: list[str]) -> str:
    """Rename a damaged checkpoint so that nothing picks it again (never deleted: it may be rescued)."""
    n = 1
    while os.path.exists(f"{path}.invalid-{n}"):
        n += 1
    target = f"{path}.invalid-{n}"
    os.replace(path, target)
    log.error(
        "checkpoint %s is damaged (%s%s); set aside as %s",
        path,
        problems[0],
        f", and {len(problems) - 1} more" if len(problems) > 1 else "",
        target,
    )
    return target


def newest_valid(ckpt_dir: str, verify: str = "full") -> str | None:
    """The newest complete checkpoint that passes verification; damaged newer ones are set aside.
    Decided by rank 0 and shared, so every rank loads the same one."""
    chosen = None
    if distributed.rank() == 0:
        for _, path in reversed(complete_checkpoints(ckpt_dir)):
            problems = verify_checkpoint(path, verify)
            if not problems:
                chosen = path
                break
            set_aside(path, problems)
    return distributed.broadcast_object(chosen)


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    np_state = cast(tuple, np.random.get_state())  # the legacy tuple form
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
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


def save(engine, ckpt_dir: str, step: int, state: dict, keep_last: int, keep_every: int) -> str:
    """Collective: every rank calls it. Returns the final checkpoint path."""
    final_name = step_name(step)
    tmp_name = f".tmp-{final_name}"
    rank = distributed.rank()
    tmp_path = os.path.join(ckpt_dir, tmp_name)
    if rank == 0:
        shutil.rmtree(tmp_path, ignore_errors=True)  # a leftover of a killed save
        os.makedirs(ckpt_dir, exist_ok=True)
    distributed.barrier()
    # universal_checkpoint_info lets ds_to_universal convert this for another world size
    written: dict = {}
    with checksummed_saves(engine, written):
        engine.save_checkpoint(
            ckpt_dir, tag=tmp_name, save_latest=False, client_state={"universal_checkpoint_info": {}}
        )
    os.makedirs(os.path.join(tmp_path, "rng"), exist_ok=True)
    save_file(rng_state(), os.path.join(tmp_path, "rng", f"rank_{rank}.pt"), written)
    faults.maybe_die("save", step, rank)  # tests only
    final_path = os.path.join(ckpt_dir, final_name)
    if rank == 0:
        write_bytes(json.dumps(state, indent=1).encode(), os.path.join(tmp_path, STATE_FILE), written)
    write_manifest(tmp_path, written)  # collective: after every rank's files are written
    if rank == 0:
        with open(os.path.join(tmp_path, DONE_FILE), "w") as f:
            f.write(f"{step}\n")
        shutil.rmtree(final_path, ignore_errors=True)
        os.replace(tmp_path, final_path)
        write_text(os.path.join(ckpt_dir, "latest"), final_name, durable=True)
        prune(ckpt_dir, keep_last, keep_every)
    distributed.barrier()
    return final_path


def prune(ckpt_dir: str, keep_last: int, keep_every: int) -> None:
    """Delete old complete checkpoints: keep the newest `keep_last` and every `keep_every`-th step.
    Runs only after a newer checkpoint is complete."""
    found = complete_checkpoints(ckpt_dir)
    # never delete the newest valid checkpoint: keep everything from it on
    newest_ok = next((i for i in range(len(found) - 1, -1, -1) if not verify_checkpoint(found[i][1], "size")), 0)
    # max(0, ...): with fewer checkpoints than keep_last a negative end would slice from the back
    for step, path in found[: max(0, min(len(found) - keep_last, newest_ok))] if keep_last else []:
        if keep_every and step % keep_every == 0:
            continue
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the save policy


class Checkpointer:
    """When to save and what to keep: every train.save_every steps, when the run stops early, and at
    the end (unless that step is saved already); after each save, prune keeps train.keep_last and
    every train.keep_every-th step. The loop only says which step is done (torchtitan's
    CheckpointManager does the same). `state()` is called only when a save is due: it returns what
    the checkpoint holds besides the engine (a host read of the loss tallies is fine then)."""

    def __init__(self, engine, ckpt_dir: str, t: TrainConfig, state: Callable[[], dict]):
        self.engine, self.ckpt_dir, self.t, self.state = engine, ckpt_dir, t, state
        self.seconds = 0.0  # how long the last save took (the trainer leaves it out of its throughput)

    def step_done(self, step: int, stopping: bool = False) -> str | None:
        """Collective. The checkpoint saved at this step, or None when none is due."""
        if stopping or (self.t.save_every and step % self.t.save_every == 0):
            return self.save(step)
        return None

    def final(self, step: int) -> str:
        """Collective. The run's last checkpoint: the one at this step if it is complete, else a new one."""
        done = complete_checkpoints(self.ckpt_dir) if distributed.rank() == 0 else None  # one rank reads
        saved = distributed.broadcast_object(done[-1][1] if done and done[-1][0] == step else None)
        return saved or self.save(step)

    def save(self, step: int) -> str:
        began = time.perf_counter()
        path = save(self.engine, self.ckpt_dir, step, self.state(), self.t.keep_last, self.t.keep_every)
        if distributed.rank() == 0:
            log.info("saved %s", path)
        self.seconds = time.perf_counter() - began
        return path
