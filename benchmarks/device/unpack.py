"""``mart-bench device-unpack PARTS --out RUN``: a GPU run's returned parts back into its run folder.

The parts ``PARTS/run.tar.part00``, ``part01``, ... (from ``device_pretrain.sh --bundle``) are joined
in order, in memory (a bundle is at most ``MAX_TAR_BYTES``), and checked: regular files numbered without
gaps, the size and sha256 that ``PARTS/device_run.json`` records (when it is there), a complete tar (its
end-of-archive blocks present) holding only plain files and folders with relative paths inside the run
folder, each name once, none both a file and a folder, no sparse members, and no more bytes than the tar
holds. They are extracted into a temp folder beside ``--out`` and renamed into place; the temp folder of
a run that was killed is removed by the next run.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from typing import Dict, List, Tuple

from mart_upstream.fileio import owned_staging_dir, remove_dead_staging, replace_dir
from mart_upstream.errors import UsageError

from .pretrain import MAX_RETURN_FILES, PART_BYTES, PART_PREFIX

PROG = "mart-bench device-unpack"
MAX_TAR_BYTES = MAX_RETURN_FILES * PART_BYTES  # what a device call can send back
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_PATH_BYTES = 1024


def find_parts(folder: str) -> List[str]:
    """``run.tar.partNN`` files of ``folder`` in order; an error when none are there or one is missing."""
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder")
    pat = re.compile(re.escape(PART_PREFIX) + r"(\d+)$")
    numbered = sorted((int(m.group(1)), n) for n in os.listdir(folder) if (m := pat.match(n)))
    if not numbered:
        raise UsageError(f"no {PART_PREFIX}NN files in {folder}")
    missing = sorted(set(range(numbered[-1][0] + 1)) - {i for i, _ in numbered})
    if missing:
        raise UsageError(f"{folder}: part(s) {', '.join(f'{PART_PREFIX}{i:02d}' for i in missing)} missing")
    if len(numbered) != len({i for i, _ in numbered}):
        raise UsageError(f"{folder}: a part is there under two names ({', '.join(n for _, n in numbered)})")
    return [os.path.join(folder, n) for _, n in numbered]


def read_parts(parts: List[str]) -> bytes:
    """The parts joined: each a regular file (a pipe, a device or a link to one is refused before it is
    read), together at most ``MAX_TAR_BYTES``."""
    data = bytearray()
    for p in parts:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # a pipe does not block the open
        except OSError as e:
            raise UsageError(f"{p} cannot be read ({e.strerror or e})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{p} is not a regular file (a pipe, a device or a link to one)")
            if len(data) + st.st_size > MAX_TAR_BYTES:
                raise UsageError(f"the parts in {os.path.dirname(p)} hold more than the {MAX_TAR_BYTES >> 20} MiB "
                                 "a device run sends back")
            block = f.read(st.st_size)
            if len(block) != st.st_size:
                raise UsageError(f"{p} changed while it was read")
            data += block
    return bytes(data)


def _expected(folder: str) -> Dict:
    """``bundle`` of ``folder/device_run.json``, checked; {} when the file is not there."""
    path = os.path.join(folder, "device_run.json")
    if not os.path.lexists(path):
        return {}
    if not os.path.isfile(path):
        raise UsageError(f"{path} is not a regular file")
    try:
        with open(path, "rb") as f:
            summary = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError(f"{path} is damaged ({' '.join(str(e).split())[:100]}); remove it to unpack without "
                         "the checks it allows") from None
    bundle = summary.get("bundle") if isinstance(summary, dict) else None
    if bundle is None and isinstance(summary, dict):
        return {}
    kinds = {"parts": list, "sha256": str, "tar_bytes": int}
    if not isinstance(bundle, dict) or any(k in bundle and not isinstance(bundle[k], t) for k, t in kinds.items()):
        raise UsageError(f"{path} is damaged: its bundle is {json.dumps(bundle)[:100]}")
    return bundle


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise UsageError(f"unsafe path in the tar: {name!r}")
    if not (m.isfile() or m.isdir()):
        raise UsageError(f"{name!r} in the tar is not a plain file or folder (links and devices are refused)")
    if m.issparse():
        raise UsageError(f"{name!r} in the tar is a sparse file (claiming {m.size} bytes); a run folder holds none")
    encoded = os.fsencode(name)
    if len(encoded) > MAX_PATH_BYTES or any(len(c) > MAX_NAME_BYTES for c in encoded.split(b"/")):
        raise UsageError(f"{name[:60]!r}... in the tar has a name longer than a file system takes")


def check_members(members: List[tarfile.TarInfo], tar_bytes: int) -> None:
    """Every member safe, each name once, none a file and a folder at once, sizes within the tar."""
    kinds: Dict[str, str] = {}
    total = 0
    for m in members:
        _check_member(m)
        name = "/".join(c for c in m.name.split("/") if c not in ("", "."))
        if not name:
            continue  # the run folder itself
        if name in kinds:
            raise UsageError(f"{name!r} is in the tar twice" + (" (a file and a folder)" if kinds[name] != (
                "dir" if m.isdir() else "file") else ""))
        kinds[name] = "dir" if m.isdir() else "file"
        total += m.size if m.isfile() else 0
    for name in kinds:
        parent = name.rpartition("/")[0]
        while parent:
            if kinds.get(parent) == "file":
                raise UsageError(f"{parent!r} in the tar is a file and a folder (it holds {name!r})")
            parent = parent.rpartition("/")[0]
    if total > tar_bytes:
        raise UsageError(f"the tar's members claim {total} bytes, more than the {tar_bytes} it holds")


def _read_tar(data: bytes, where: str) -> Tuple[tarfile.TarFile, List[tarfile.TarInfo]]:
    """The tar of ``data`` and its members, read to its end-of-archive blocks (tarfile alone stops quietly
    at a damaged or missing header: a tar cut after a member would look complete)."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = tar.getmembers()
    except tarfile.TarError as e:
        raise UsageError(f"the parts in {where} do not join into a readable tar: {e}") from None
    end = tar.offset
    if len(data) < end + 2 * tarfile.BLOCKSIZE or any(data[end:]):
        raise UsageError(f"the parts in {where} do not join into a complete tar: it stops or is damaged after "
                         f"{len(members)} members (byte {end} of {len(data)}); a part is cut short or damaged")
    return tar, members


def _staging_prefix(out: str) -> str:
    return f".tmp-{os.path.basename(os.path.abspath(out))}-"


def remove_debris(parent: str, out: str) -> List[str]:
    """Remove what killed runs left beside ``out``: staging folders of processes no longer running, and the
    ``.join-*`` copies of the parts that earlier versions made. -> what was removed."""
    removed = remove_dead_staging(parent, _staging_prefix(out))
    for n in os.listdir(parent):
        path = os.path.join(parent, n)
        if n.startswith(".join-") and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def unpack(parts_dir: str, out: str, force: bool = False) -> List[str]:
    """Join, check and extract; -> the extracted file names (relative to ``out``)."""
    parts = find_parts(parts_dir)
    if _inside(parts_dir, out):
        raise UsageError(f"--out {out} holds the parts in {parts_dir}: replacing it would delete them; "
                         "give another --out")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise UsageError(f"{out} exists and is not empty; remove it or pass --force")
    expected = _expected(parts_dir)
    names = [os.path.basename(p) for p in parts]
    if expected.get("parts") and expected["parts"] != names:
        raise UsageError(f"{parts_dir}: device_run.json lists the parts {expected['parts']}, found {names}")
    data = read_parts(parts)
    if expected.get("tar_bytes") is not None and expected["tar_bytes"] != len(data) or \
            expected.get("sha256") and expected["sha256"] != hashlib.sha256(data).hexdigest():
        raise UsageError(f"the joined parts ({len(data)} bytes) do not match the sha256 in "
                         f"{parts_dir}/device_run.json ({expected.get('tar_bytes')} bytes expected): "
                         "a part is damaged or from another run")
    tar, members = _read_tar(data, parts_dir)
    check_members(members, len(data))
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        remove_debris(parent, out)
        tmp = owned_staging_dir(parent, _staging_prefix(out))
    except OSError as e:
        raise UsageError(f"--out {out}: {parent} cannot be written ({e.strerror or e})") from None
    try:
        try:
            tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise UsageError(f"the tar in {parts_dir} cannot be extracted into {parent} ({e})") from None
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [m.name for m in members if m.isfile()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", help="folder with run.tar.part00, part01, ... (and device_run.json)")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args) -> int:
    names = unpack(args.parts, args.out, args.force)
    ckpts = sorted(n for n in names if n.endswith(".ckpt") and "/" not in n)
    print(f"wrote {args.out}: {len(names)} files" + (f"; checkpoints {', '.join(ckpts)} (evaluate with "
                                                       f"`mart-bench run --checkpoints {args.out} --out RESULTS`)"
                                                       if ckpts else ""))
    return 0
