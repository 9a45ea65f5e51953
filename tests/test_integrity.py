"""Checkpoint integrity, in process on checkpoint folders: the manifest written before COMPLETE,
verification (full: sizes and CRC-32; size; none), damaged checkpoints set aside (renamed, never
deleted) and the newest valid one chosen; retention never deletes the newest valid checkpoint.
The same on real training runs: tests/integration/test_faults.py."""

from __future__ import annotations

import json
import logging
import os

import pytest

from ift import checkpoint
from ift.checkpoint import DONE_FILE, MANIFEST_FILE, newest_valid, prune, verify_checkpoint, write_manifest


def make_checkpoint(ckpt_dir, step: int, manifest: bool = True) -> str:
    path = os.path.join(ckpt_dir, checkpoint.step_name(step))
    os.makedirs(os.path.join(path, "rng"))
    with open(os.path.join(path, "mp_rank_00_model_states.pt"), "wb") as f:
        f.write(os.urandom(3000) + bytes([step]))
    with open(os.path.join(path, "zero_pp_rank_0_mp_rank_00_optim_states.pt"), "wb") as f:
        f.write(os.urandom(5000))
    with open(os.path.join(path, "rng", "rank_0.pt"), "wb") as f:
        f.write(b"rng")
    with open(os.path.join(path, checkpoint.STATE_FILE), "w") as f:
        json.dump({"step": step}, f)
    if manifest:
        write_manifest(path, {})
    with open(os.path.join(path, DONE_FILE), "w") as f:
        f.write(f"{step}\n")
    return path


def test_manifest_lists_every_file_but_itself_and_the_marker(tmp_path):
    path = make_checkpoint(tmp_path, 5)
    files = json.load(open(os.path.join(path, MANIFEST_FILE)))["files"]
    assert sorted(files) == [
        "ift_state.json",
        "mp_rank_00_model_states.pt",
        "rng/rank_0.pt",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    assert files["mp_rank_00_model_states.pt"]["size"] == 3001
    assert all(len(v["crc32"]) == 8 for v in files.values())
    assert verify_checkpoint(path) == []


def _truncate(path):
    f = os.path.join(path, "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    os.truncate(f, 1000)
    return f, "1000 bytes, expected 5000"


def _remove(path):
    f = os.path.join(path, "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    os.remove(f)
    return f, "missing (expected 5000 bytes)"


def _flip(path):
    f = os.path.join(path, "mp_rank_00_model_states.pt")
    with open(f, "r+b") as fh:
        fh.seek(1234)
        b = fh.read(1)
        fh.seek(1234)
        fh.write(bytes([b[0] ^ 0x01]))
    return f, "CRC-32"


@pytest.mark.parametrize("damage", [_truncate, _remove, _flip], ids=["truncated", "missing", "flipped-byte"])
def test_damage_is_named_and_the_previous_checkpoint_chosen(tmp_path, damage, caplog):
    older = make_checkpoint(tmp_path, 2)
    newest = make_checkpoint(tmp_path, 4)
    file, what = damage(newest)
    problems = verify_checkpoint(newest)
    assert len(problems) == 1 and problems[0].startswith(file) and what in problems[0], problems
    with caplog.at_level(logging.ERROR, logger="ift.checkpoint"):
        assert newest_valid(str(tmp_path)) == older
    assert not os.path.exists(newest) and os.path.isdir(newest + ".invalid-1")  # set aside, not deleted
    assert "damaged" in caplog.text and file in caplog.text
    assert checkpoint.complete_checkpoints(str(tmp_path)) == [(2, older)]  # never picked again


def test_size_mode_catches_truncation_not_a_flipped_byte(tmp_path):
    a = make_checkpoint(tmp_path / "a", 1)
    _flip(a)
    assert verify_checkpoint(a, "size") == [] and verify_checkpoint(a, "full")
    assert verify_checkpoint(a, "none") == []
    b = make_checkpoint(tmp_path / "b", 1)
    _truncate(b)
    assert verify_checkpoint(b, "size")


def test_checkpoint_without_manifest_loads_with_one_warning(tmp_path, caplog):
    old = [make_checkpoint(tmp_path, s, manifest=False) for s in (1, 2)]
    checkpoint._warned_no_manifest.clear()
    with caplog.at_level(logging.WARNING, logger="ift.checkpoint"):
        assert newest_valid(str(tmp_path)) == old[-1]
        assert verify_checkpoint(old[0]) == []
    assert caplog.text.count("cannot be verified") == 1


def test_nothing_valid_gives_none_and_keeps_everything(tmp_path):
    a = make_checkpoint(tmp_path, 1)
    _truncate(a)
    assert newest_valid(str(tmp_path)) is None
    assert os.path.isdir(a + ".invalid-1")


def test_retention_never_deletes_the_newest_valid_checkpoint(tmp_path):
    good = make_checkpoint(tmp_path, 2)
    bad = [make_checkpoint(tmp_path, s) for s in (4, 6)]
    for b in bad:
        _truncate(b)
    prune(str(tmp_path), keep_last=1, keep_every=0)
    assert os.path.isdir(good)  # step 6 is the newest, but damaged: step 2 stays
    fine = make_checkpoint(tmp_path, 8)
    prune(str(tmp_path), keep_last=1, keep_every=0)
    assert os.path.isdir(fine) and not os.path.exists(good)


def test_retention_keeps_everything_below_keep_last(tmp_path):
    saved = [make_checkpoint(tmp_path, s) for s in (2, 4)]
    prune(str(tmp_path), keep_last=3, keep_every=0)  # 2 of 3: nothing to delete
    assert all(os.path.isdir(c) for c in saved)
    saved += [make_checkpoint(tmp_path, s) for s in (6, 8)]
    prune(str(tmp_path), keep_last=3, keep_every=0)
    assert [os.path.isdir(c) for c in saved] == [False, True, True, True]


def test_resume_of_an_explicit_damaged_checkpoint_is_a_user_error(tmp_path):
    from ift import rundir
    from ift.errors import UserError

    a = make_checkpoint(tmp_path / "checkpoints", 3)
    _flip(a)
    with pytest.raises(UserError, match="train.resume: .*damaged.*CRC-32"):
        rundir.resume_checkpoint(a, rundir.RunDir(str(tmp_path)))
    with pytest.raises(UserError, match="damaged.*CRC-32"):
        rundir.resolve(a)
    with pytest.raises(UserError, match="no valid complete checkpoint"):
        rundir.resolve(str(tmp_path))  # the run directory: its only checkpoint is set aside
