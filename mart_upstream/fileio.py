"""Atomic file writes: a temp file in the target folder, renamed over the target when complete."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def atomic_path(path: str, suffix: str = "", fsync: bool = False) -> Iterator[str]:
    """Yield a temp path to write; on success it replaces ``path``, on any error it is removed.

    A reader (or a run killed mid-write) sees either the old complete file or the new one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
