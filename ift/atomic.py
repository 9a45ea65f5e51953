"""Atomic writes: a reader (a resume, another rank, another node) sees the old file or the new one,
never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket


def _tmp_name(path: str) -> str:
    # host and pid: the local rank 0 of several nodes may write the same shared file at once
    return f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"


@contextlib.contextmanager
def replacing(path: str, durable: bool = False):
    """Yields a temporary path beside `path` to write (a file or a folder); renamed onto `path` when
    the block ends without an exception, removed when it raises. durable: fsync the file and the
    folder holding it (checkpoint markers)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if durable and os.path.isfile(tmp):
            fsync(tmp)
        if os.path.isdir(tmp):
            shutil.rmtree(path, ignore_errors=True)  # os.replace cannot replace a non-empty folder
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if os.path.isdir(tmp) else _remove(tmp)
        raise
    if durable:
        fsync(os.path.dirname(os.path.abspath(path)))


def write_text(path: str, text: str, durable: bool = False) -> None:
    with replacing(path, durable) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def fsync(path: str) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
