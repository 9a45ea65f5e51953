"""The one content fingerprint and the one tokenizer opener (#25 item 3 and 6)."""

import hashlib
import json

import torch

from ift.hashing import fingerprint
from ift.model import open_tokenizer, train_bpe_tokenizer


def test_fingerprint_is_the_keys_caches_and_checkpoints_already_hold():
    # the formulas of the four sites it replaced: a different digest would orphan every cache and
    # make every saved run's fingerprints disagree with its code
    settings = {"v": "3", "files": [["a.jsonl", 10, 7]], "schema": None, "k": 2}
    assert fingerprint(settings) == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    model = {"torch_dtype": torch.float32, "hidden_size": 32}
    assert (
        fingerprint(model, 16)
        == hashlib.sha256(json.dumps(model, sort_keys=True, default=str).encode()).hexdigest()[:16]
    )
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1}) != fingerprint({"a": 1, "b": 3})


def test_open_tokenizer_gives_a_pad_token_to_a_tokenizer_saved_without_one(tmp_path):
    tok = train_bpe_tokenizer(["one two three"] * 3, vocab_size=280)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    opened = open_tokenizer(str(tmp_path))
    assert opened.pad_token == opened.eos_token == "<|eos|>"
    keep = train_bpe_tokenizer(["one two three"] * 3, vocab_size=280)
    keep.save_pretrained(tmp_path / "with_pad")
    assert open_tokenizer(str(tmp_path / "with_pad")).pad_token == "<|pad|>"
