"""``mart-bench device-unpack PARTS --out RUN``: a GPU run's returned parts back into its run folder.

The parts ``PARTS/run.tar.part00``, ``part01``, ... (from ``device_pretrain.sh --bundle``) are joined
in order and checked: numbered without gaps, the sha256 that ``PARTS/device_run.json`` records (when
it is there), a readable tar holding only plain files and folders with relative paths inside the
run folder. They are extracted into a temp folder beside ``--out`` and renamed into place.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from typing import Dict, List

from mart_upstream.fileio import replace_dir, staging_dir
from mart_upstream.errors import UsageError

from .train import PART_PREFIX

PROG = "mart-bench device-unpack"



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
    return [os.path.join(folder, n) for _, n in numbered]


def _expected(folder: str) -> Dict:
    path = os.path.join(folder, "device_run.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f).get("bundle") or {}


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise UsageError(f"unsafe path in the tar: {name!r}")
    if not (m.isfile() or m.isdir()):
        raise UsageError(f"{name!r} in the tar is not a plain file or folder (links and devices are refused)")


def unpack(parts_dir: str, out: str, force: bool = False) -> List[str]:
    """Join, check and extract; -> the extracted file names (relative to ``out``)."""
    parts = find_parts(parts_dir)
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out) and not force):
        raise UsageError(f"{out} exists and is not empty; remove it or pass --force")
    expected = _expected(parts_dir)
    names = [os.path.basename(p) for p in parts]
    if expected.get("parts") and expected["parts"] != names:
        raise UsageError(f"{parts_dir}: device_run.json lists the parts {expected['parts']}, found {names}")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = staging_dir(parent, f".tmp-{os.path.basename(os.path.abspath(out))}-")
    try:
        with tempfile.TemporaryDirectory(prefix=".join-", dir=parent) as jdir:
            joined, sha, size = os.path.join(jdir, "run.tar"), hashlib.sha256(), 0
            with open(joined, "wb") as g:
                for p in parts:
                    with open(p, "rb") as f:
                        for b in iter(lambda: f.read(1 << 20), b""):
                            sha.update(b)
                            size += len(b)
                            g.write(b)
            if expected.get("sha256") and expected["sha256"] != sha.hexdigest():
                raise UsageError(f"the joined parts ({size} bytes) do not match the sha256 in "
                                  f"{parts_dir}/device_run.json ({expected.get('tar_bytes')} bytes expected): "
                                  "a part is damaged or from another run")
            try:
                with tarfile.open(joined, "r:") as tar:
                    members = tar.getmembers()
                    for m in members:
                        _check_member(m)
                    tar.extractall(tmp, members=members, filter="data")
            except tarfile.TarError as e:
                raise UsageError(f"the parts in {parts_dir} do not join into a readable tar: {e}") from e
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
