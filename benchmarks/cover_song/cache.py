"""Keys of the on-disk caches (embeddings, CQTs): a file's identity and short digests.

A file is identified by its absolute path, size and modification time, so an edited or replaced file
gets a new key and its cached values are computed again.
"""
from __future__ import annotations

import hashlib
import os
from typing import Tuple


def file_identity(path: str) -> Tuple[str, int, int]:
    """(absolute path, size in bytes, modification time in ns) of ``path``."""
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, int(st.st_mtime_ns)


def digest(*parts) -> str:
    """16 hex digits naming ``parts`` (joined by their ``str``)."""
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]
