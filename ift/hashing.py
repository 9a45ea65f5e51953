"""One fingerprint for everything ift keys on content: caches, the mixture, the model a checkpoint
belongs to. Changing it changes every cache key and makes every saved run look different."""

from __future__ import annotations

import hashlib
import json


def fingerprint(obj, length: int = 24) -> str:
    """The first `length` hex digits of the sha256 of obj as canonical JSON (sorted keys; str() of
    what JSON cannot hold, such as a dtype in a model config)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]
