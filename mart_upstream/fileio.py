"""Atomic file writes: a temp file in the target folder, renamed over the target when complete."""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from .errors import DiskFullError  # noqa: F401  (re-exported)

TEMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process umask, read when a file's mode is set (it can change while the process runs).

    Linux shows it in /proc/self/status; elsewhere it is read by setting it and setting it back, with
    a private mask in between, so a file another thread creates meanwhile is not made more open.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _disk_full(exc: BaseException, folder: str) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a failed write as a RuntimeError ("... file write failed")
    if isinstance(exc, RuntimeError) and "write" in str(exc):
        try:
            return shutil.disk_usage(folder).free < (16 << 20)
        except OSError:
            return False
    return False


@contextmanager
def atomic_path(path: str, suffix: str = "", fsync: bool = False) -> Iterator[str]:
    """Yield a temp path to write; on success it replaces ``path``, on any error it is removed.

    A reader (or a run killed mid-write) sees either the old complete file or the new one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's file is private; the result is an ordinary file
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _disk_full(e, folder):
            raise DiskFullError(errno.ENOSPC, f"the disk is full: no space left to write {path} "
                                f"({shutil.disk_usage(folder).free >> 20} MB free); nothing was changed") from None
        raise


def remove_stale_temps(folder: str) -> list:
    """Remove the temp files ``atomic_path`` left in ``folder`` when its process was killed mid-write
    (call it only where no other process is writing). Returns their paths."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), TEMP_PREFIX + "*")):
        if os.path.isfile(path):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def staging_dir(parent: str, prefix: str) -> str:
    """A new folder in ``parent`` to build a result in before renaming it into place, with the
    permissions of an ordinary folder (``tempfile.mkdtemp`` makes it private)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o777 & ~current_umask())
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def owned_staging_dir(parent: str, prefix: str) -> str:
    """``staging_dir`` named ``<prefix><pid>-...``, so that once this process is gone (killed before it
    renamed the folder into place) ``remove_dead_staging`` knows the folder is debris."""
    return staging_dir(parent, f"{prefix}{os.getpid()}-")


def remove_dead_staging(parent: str, prefix: str) -> list:
    """Remove the ``owned_staging_dir`` folders in ``parent`` whose process is no longer running."""
    pat = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    for name in os.listdir(parent):
        m = pat.match(name)
        path = os.path.join(parent, name)
        if m and not _alive(int(m.group(1))) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def replace_dir(staged: str, target: str) -> None:
    """Put the finished folder ``staged`` at ``target``, replacing any folder there: the old one is
    moved aside first and removed only once the new one is in place."""
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(os.path.abspath(target)))
        os.replace(target, os.path.join(old, "replaced"))
        os.replace(staged, target)
        shutil.rmtree(old)
    else:
        os.replace(staged, target)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str, data, indent: int | None = 1, sort_keys: bool = True) -> None:
    """``json.dump`` to ``path`` atomically."""
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent, sort_keys=sort_keys)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
