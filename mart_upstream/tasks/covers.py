"""Cover-song collections as lists of ``Track(work, version, path, split)``.

* ``read_manifest``: a CSV with columns ``work_id,version_id,path`` and optionally ``split`` (paths
  absolute or relative to the CSV's folder); ``assign_splits`` splits its works (not its versions)
  into train / dev / test by that column or by a seeded shuffle.
* ``covers80``: the LabROSA layout ``covers32k/<Work>/<version>.mp3`` with ``list1.list`` /
  ``list2.list`` (80 works x 2 versions; all 160 are queries).
* ``shs100k_sub``: SHS100K's published ``list`` (set_id, ver_id, title, performer, url, status; tab
  separated) resolved against audio the user downloaded; the SHS100K-SUB protocol: works with more
  than 5 available versions, split 8:1:1 by work with a fixed seed, split files written out.

Missing audio files are counted and reported (``Collection.missing``); an empty result is an error.
A file listed twice under one work is counted once (``Collection.duplicates``; repeated rows would
inflate every score); a file under two works, or one (work, version) with two files, is an error.
Errors are :class:`mart_upstream.errors.TaskError`.
"""
from __future__ import annotations

import csv
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mart_upstream.audio import AUDIO_EXTENSIONS, is_audio_name
from mart_upstream.errors import TaskError
from mart_upstream.fileio import atomic_path

from . import SPLITS

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ("work_id", "version_id", "path")
SPLIT_ALIASES = {"valid": "dev", "validation": "dev", "val": "dev"}  # accepted in a manifest's split column


@dataclass
class Track:
    work: str
    version: str
    path: str
    split: str = ""  # a manifest's split column, when it has one


@dataclass
class Collection:
    tracks: List[Track]
    missing: List[str] = field(default_factory=list)  # listed entries without an audio file
    duplicates: int = 0  # repeated entries dropped

    def summary(self) -> str:
        works = len({t.work for t in self.tracks})
        dropped = f", {self.duplicates} duplicate entries dropped" if self.duplicates else ""
        return f"{len(self.tracks)} tracks of {works} works ({len(self.missing)} listed files missing{dropped})"


def _unique(tracks: List[Track], what: str, conflicts: str = "error") -> Tuple[List[Track], int]:
    """Drop repeats of one file under one work; one file under two works or two files for one version
    are an error (``conflicts="error"``) or dropped with a warning (``"drop"``: published lists that
    carry such entries)."""

    def conflict(message: str) -> None:
        if conflicts == "error":
            raise TaskError(f"{what}: {message}")
        log.warning("%s: %s; the later entry is dropped", what, message)

    by_file: Dict[str, Track] = {}
    by_version: Dict[Tuple[str, str], str] = {}
    kept = []
    for t in tracks:
        real = os.path.realpath(t.path)
        first = by_file.get(real)
        if first is not None:
            if first.work != t.work:
                conflict(f"{t.path} is listed under two works ({first.work!r} and {t.work!r})")
            continue
        other = by_version.get((t.work, t.version))
        if other is not None and t.version:
            conflict(f"work {t.work!r} version {t.version!r} has two files ({other} and {t.path})")
            continue
        by_file[real] = t
        by_version[(t.work, t.version)] = t.path
        kept.append(t)
    return kept, len(tracks) - len(kept)


def _finish(tracks: List[Track], missing: List[str], what: str, conflicts: str = "error") -> Collection:
    if missing:
        log.warning("%s: %d listed audio files are missing (first: %s)", what, len(missing), missing[0])
    tracks, duplicates = _unique(tracks, what, conflicts)
    if duplicates:
        log.warning("%s: %d duplicate entries (a file listed again under its work) dropped", what, duplicates)
    if not tracks:
        raise TaskError(f"{what}: no audio files found ({len(missing)} listed entries missing)")
    return Collection(tracks, missing, duplicates)


def read_manifest(path: str, hint: str = "") -> Collection:
    """``hint`` follows the message when the manifest does not exist (how to give its path)."""
    if not path or not os.path.isfile(os.path.expanduser(str(path))):
        raise TaskError(f"manifest {path} does not exist" + (f"; {hint}" if hint else ""))
    path = os.path.expanduser(str(path))
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not a column name
            rows = list(csv.DictReader(f))
            fieldnames = list(rows[0]) if rows else None
    except UnicodeDecodeError as e:
        raise TaskError(f"manifest {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise TaskError(f"manifest {path}: not a readable CSV ({e})") from None
    if fieldnames is None or not set(MANIFEST_COLUMNS) <= set(fieldnames):
        raise TaskError(f"manifest {path}: needs the columns {','.join(MANIFEST_COLUMNS)} (and optionally split) "
                        f"and at least one row, got {fieldnames}")
    tracks, missing = [], []
    for i, row in enumerate(rows, start=2):
        work, version, rel, split = ((row.get(k) or "").strip() for k in (*MANIFEST_COLUMNS, "split"))
        if not work or not rel:
            raise TaskError(f"manifest {path} line {i}: empty work_id or path")
        p = os.path.join(base, os.path.expanduser(rel))  # an absolute path stays as it is
        if not os.path.isfile(p):
            missing.append(p)
        else:
            tracks.append(Track(work, version, p, SPLIT_ALIASES.get(split, split)))  # checked by assign_splits
    return _finish(tracks, missing, f"manifest {path}")


def assign_splits(tracks: Sequence[Track], dev_fraction: float, test_fraction: float,
                  seed: int) -> Dict[str, str]:
    """work -> split (train, dev or test), so that no work is in two splits: the manifest's ``split``
    column when the tracks have one, else a seeded shuffle of the works gives ``dev_fraction`` and
    ``test_fraction`` of them (at least one each when the fraction is above 0) to dev and test."""
    if any(t.split for t in tracks):
        out: Dict[str, str] = {}
        for t in tracks:
            if t.split not in SPLITS:
                raise TaskError(f"split {t.split!r} of version {t.version or t.path} is not train, dev or test "
                                "(valid or val for dev)")
            if out.setdefault(t.work, t.split) != t.split:
                raise TaskError(f"work {t.work} has versions in both {out[t.work]} and {t.split}")
        return out
    works = sorted({t.work for t in tracks})
    random.Random(seed).shuffle(works)
    n_test = int(round(len(works) * test_fraction)) if test_fraction > 0 else 0
    n_dev = int(round(len(works) * dev_fraction)) if dev_fraction > 0 else 0
    n_test, n_dev = max(n_test, test_fraction > 0), max(n_dev, dev_fraction > 0)
    return {w: "test" if i < n_test else "dev" if i < n_test + n_dev else "train" for i, w in enumerate(works)}


def write_manifest(tracks: Sequence[Track], path: str) -> None:
    """Atomically write ``work_id,version_id,path`` with paths relative to the CSV's folder."""
    base = os.path.dirname(os.path.abspath(path))
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(MANIFEST_COLUMNS)
            for t in tracks:
                w.writerow([t.work, t.version, os.path.relpath(t.path, base)])


def covers80(root: str) -> Collection:
    """``root`` holds ``covers32k/`` (or is it)."""
    top = os.path.join(root, "covers32k")
    top = top if os.path.isdir(top) else root
    if not os.path.isdir(top):
        raise TaskError(f"Covers80: {root} is not a folder (expected covers32k/<Work>/<version>.mp3)")
    lists = [os.path.join(top, f"list{i}.list") for i in (1, 2)]
    entries: List[str] = []
    if all(os.path.isfile(p) for p in lists):
        for p in lists:
            with open(p, encoding="utf-8") as f:
                entries += [line.strip() for line in f if line.strip()]
    else:  # no lists: every audio file under a work folder
        for work in sorted(os.listdir(top)):
            d = os.path.join(top, work)
            if os.path.isdir(d):
                entries += [f"{work}/{os.path.splitext(v)[0]}" for v in sorted(os.listdir(d))
                            if is_audio_name(v)]
    tracks, missing = [], []
    for e in entries:
        work, version = e.split("/", 1)
        p = _find_audio(os.path.join(top, e))
        (tracks.append(Track(work, version, p)) if p else missing.append(os.path.join(top, e)))
    return _finish(tracks, missing, f"Covers80 {top}")


def _find_audio(stem: str) -> Optional[str]:
    if os.path.isfile(stem) and is_audio_name(os.path.basename(stem)):
        return stem
    for ext in AUDIO_EXTENSIONS:
        if os.path.isfile(stem + ext):
            return stem + ext
    return None


def read_shs100k_list(path: str) -> List[Dict[str, str]]:
    """SHS100K's ``list``: set_id, ver_id, title, performer, url, status per tab-separated line."""
    if not os.path.isfile(path):
        raise TaskError(f"SHS100K list {path} does not exist")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if not parts[0].strip() or (n == 1 and not parts[0].strip().isdigit()):
                continue  # blank line or a header
            if len(parts) < 2:
                raise TaskError(f"{path} line {n}: expected set_id<TAB>ver_id[<TAB>title<TAB>performer<TAB>url...]")
            url = parts[4] if len(parts) > 4 else ""
            rows.append({"set_id": parts[0].strip(), "ver_id": parts[1].strip(),
                         "youtube_id": url.split("v=")[-1].split("&")[0] if "v=" in url else ""})
    return rows


def shs100k_tracks(list_path: str, audio_dir: str) -> Collection:
    """Resolve each listed version to ``AUDIO/<set>_<ver>.*``, ``AUDIO/<set>/<ver>.*`` or ``AUDIO/<youtube id>.*``."""
    tracks, missing = [], []
    for r in read_shs100k_list(list_path):
        stems = [os.path.join(audio_dir, f"{r['set_id']}_{r['ver_id']}"),
                 os.path.join(audio_dir, r["set_id"], r["ver_id"])]
        if r["youtube_id"]:
            stems.append(os.path.join(audio_dir, r["youtube_id"]))
        p = next((q for q in map(_find_audio, stems) if q), None)
        (tracks.append(Track(r["set_id"], r["ver_id"], p)) if p else missing.append(stems[0]))
    return _finish(tracks, missing, f"SHS100K {list_path} with audio {audio_dir}", conflicts="drop")


def shs100k_sub(list_path: str, audio_dir: str, out_dir: str, min_versions: int = 6,
                ratios: Sequence[int] = (8, 1, 1), seed: int = 0) -> Dict[str, Collection]:
    """SHS100K-SUB: works with at least ``min_versions`` available versions (> 5), split by work
    ``ratios`` (train:val:test) after a seeded shuffle. Writes ``SHS100K-SUB-{TRAIN,VAL,TEST}``
    (set_id<TAB>ver_id, as SHS100K's own split files) and ``{train,val,test}.csv`` manifests."""
    found = shs100k_tracks(list_path, audio_dir)
    by_work: Dict[str, List[Track]] = {}
    for t in found.tracks:
        by_work.setdefault(t.work, []).append(t)
    works = sorted((w for w, ts in by_work.items() if len(ts) >= min_versions), key=lambda w: (len(w), w))
    if len(works) < 3:
        raise TaskError(f"SHS100K-SUB: only {len(works)} works have >= {min_versions} available versions; "
                            "need at least 3 for a train/val/test split")
    random.Random(seed).shuffle(works)
    total = sum(ratios)
    n_val = max(1, round(len(works) * ratios[1] / total))
    n_test = max(1, round(len(works) * ratios[2] / total))
    splits = {"train": works[: len(works) - n_val - n_test], "val": works[len(works) - n_val - n_test : len(works) - n_test],
              "test": works[len(works) - n_test :]}
    os.makedirs(out_dir, exist_ok=True)
    out = {}
    for name, ws in splits.items():
        tracks = [t for w in sorted(ws, key=lambda w: (len(w), w)) for t in by_work[w]]
        with atomic_path(os.path.join(out_dir, f"SHS100K-SUB-{name.upper()}")) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(f"{t.work}\t{t.version}\n" for t in tracks)
        write_manifest(tracks, os.path.join(out_dir, f"{name}.csv"))
        out[name] = Collection(tracks, [])
    out["train"].missing = found.missing
    return out
