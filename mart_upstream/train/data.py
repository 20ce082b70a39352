"""Pretraining data: a folder tree of audio files, scanned once, read as random 16 kHz mono crops.

Crops are fully determined by (seed, key): ``key`` counts the samples of the whole run, so a run
resumed at step s reads exactly what the uninterrupted run would have read, whatever the number of
DataLoader workers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterator, List, Optional

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from ..audio import AUDIO_EXTENSIONS, find_audio_files, is_regular, load_audio, load_segment
from ..errors import AudioError
from ..fileio import write_json

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4
MAX_PEAK = 100.0  # a decoded peak above this is not audio (a float file scaled wrongly, or garbage)
INDEX_VERSION = 2


@dataclass(frozen=True)
class AudioFileInfo:
    path: str
    frames: int  # at the file's own rate
    sample_rate: int  # the file's own rate
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _list_files(root: str, file_list: Optional[str]) -> List[str]:
    if file_list is None:
        return find_audio_files(root)
    if not os.path.isfile(file_list):
        raise AudioError(f"file list not found: {file_list}")
    paths = []
    with open(file_list) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = line if os.path.isabs(line) else os.path.join(root, line)
            if is_regular(p):
                paths.append(p)
            elif os.path.exists(p):
                log.warning("%s: listed in %s but not a regular file; skipped", p, file_list)
            else:
                log.warning("%s: listed in %s but does not exist; skipped", p, file_list)
    return paths


def _content_problem(path: str, check_silence: bool) -> Optional[str]:
    """Why the decoded samples of ``path`` are unusable (NaN/Inf, an absurd peak, digital silence), or None."""
    peak = 0.0
    for block in sf.blocks(path, blocksize=1 << 16, dtype="float32", always_2d=True):
        if not np.isfinite(block).all():
            return "holds NaN or infinite samples"
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
        if peak > MAX_PEAK:
            return f"peak amplitude {peak:.3g} is not audio (samples should lie in [-1, 1])"
    if check_silence and peak < SILENCE_PEAK:
        return f"digitally silent (peak < {SILENCE_PEAK:g})"
    return None


def _needs_content_check(info, check_silence: bool) -> bool:
    """Integer PCM cannot hold NaN or out-of-range values: it is read only for the silence check.
    Float and compressed files are always read (one NaN or Inf would make the loss non-finite)."""
    return check_silence or not str(info.subtype).startswith("PCM")


def _fingerprint(paths: List[str]) -> str:
    """Size and modification time of every file, hashed: a changed or replaced file invalidates the index."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def scan_audio_files(root: str, file_list: Optional[str] = None, min_seconds: float = 0.0,
                     check_silence: bool = True, index_path: Optional[str] = None,
                     progress: bool = True) -> List[AudioFileInfo]:
    """Find usable audio files under ``root`` (or those in ``file_list``), sorted.

    Unreadable, too-short, non-finite or absurdly loud (peak > ``MAX_PEAK``) and (with
    ``check_silence``) digitally silent files are skipped with a warning naming the file; only regular
    files are opened. The result can be cached in ``index_path`` (JSON, written atomically) and is
    reused while root, file list, criteria and the files' sizes and modification times are unchanged.
    Raises AudioError when nothing is left.
    """
    if not os.path.isdir(root):
        raise AudioError(f"data folder does not exist: {root}")
    paths = _list_files(root, file_list)
    key = {"version": INDEX_VERSION, "root": os.path.abspath(root),
           "file_list": os.path.abspath(file_list) if file_list else None,
           "min_seconds": float(min_seconds), "check_silence": bool(check_silence),
           "files": _fingerprint(paths)}
    cached = _read_index(index_path, key) if index_path else None
    if cached:
        return cached
    if not paths:
        raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {root}")
    files, skipped = [], Counter()
    for p in tqdm(paths, desc="scanning audio", disable=not progress, leave=False):
        info, why = _usable(p, min_seconds, check_silence)
        if why:
            skipped[why] += 1
        else:
            files.append(info)
    summary = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none"
    log.info("audio scan of %s: kept %d of %d files (skipped: %s)", root, len(files), len(paths), summary)
    if not files:
        raise AudioError(f"no usable audio in {root}: all {len(paths)} files were skipped ({summary})")
    if index_path:
        write_json(index_path, {"key": key, "files": [asdict(f) for f in files]}, indent=None, sort_keys=False)
    return files


def _read_index(index_path: str, key: dict) -> Optional[List[AudioFileInfo]]:
    """The files of a data index written for ``key`` (the same root, list, criteria and files), or None."""
    if not os.path.isfile(index_path):
        return None
    try:
        with open(index_path) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return [AudioFileInfo(**x) for x in cached["files"]] or None
    except (ValueError, KeyError, TypeError):
        log.warning("%s: unreadable data index, rescanning", index_path)
    return None


def _usable(p: str, min_seconds: float, check_silence: bool):
    """One file -> (its AudioFileInfo, None), or (None, why it is skipped), the reason logged."""
    try:
        info = sf.info(p)
    except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
        log.warning("%s: unreadable audio (%s); skipped", p, str(e).strip() or type(e).__name__)
        return None, "unreadable"
    if info.frames <= 0 or info.samplerate <= 0:
        log.warning("%s: no audio frames; skipped", p)
        return None, "empty"
    seconds = info.frames / info.samplerate
    if seconds < min_seconds:
        log.warning("%s: %.2f s long, shorter than the %.2f s needed; skipped", p, seconds, min_seconds)
        return None, "too short"
    if _needs_content_check(info, check_silence):
        try:
            problem = _content_problem(p, check_silence)
        except Exception as e:  # noqa: BLE001
            log.warning("%s: cannot be decoded (%s); skipped", p, e)
            return None, "unreadable"
        if problem:
            log.warning("%s: %s; skipped", p, problem)
            return None, "silent" if problem.startswith("digitally") else "not audio"
    return AudioFileInfo(p, int(info.frames), int(info.samplerate), int(info.channels)), None


def _seed(*parts: int) -> int:
    h = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


SAMPLING = ("duration", "file")
# How the views of one example are placed in their track (strategies §2.3.2, Table 1):
#   independent: each view anywhere in the file (or, with groups, in another file of its group)
#   same:        every view the same segment (self-augmented targets: the augmentations tell them apart)
#   adjacent:    view k+1 starts ``gap_seconds`` after view k ends (strategies: 0.5 s gap, against
#                edge-continuity shortcuts); which of a pair comes first is drawn
#   rest:        the anchor anywhere; every other view uniformly from the rest of the track, not
#                overlapping the anchor
PAIRINGS = ("independent", "same", "adjacent", "rest")


def read_groups(path: str, root: str, files: List[AudioFileInfo]) -> List[int]:
    """Group id per file from a CSV with columns ``path,group`` (paths relative to ``root``).

    Files of one group are renderings/versions of one work: with groups, a training example's
    second view comes from another file of its group. Files not listed are groups of their own.
    """
    import csv

    if not os.path.isfile(path):
        raise AudioError(f"groups file not found: {path}")
    by_path: dict = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "group"} <= set(reader.fieldnames):
            raise AudioError(f"{path}: a groups file needs the columns path,group; got {reader.fieldnames}")
        for row in reader:
            by_path[os.path.normpath(os.path.join(root, row["path"]))] = row["group"]
    # the same audio re-encoded (e.g. .wav -> .ogg) keeps its group: listed paths are matched by stem too
    by_stem = {os.path.splitext(k)[0]: v for k, v in by_path.items()}
    names: dict = {}
    out = []
    for info in files:
        p = os.path.normpath(info.path)
        g = by_path.get(p) or by_stem.get(os.path.splitext(p)[0])
        out.append(names.setdefault(g if g is not None else f"\0{p}", len(names)))
    return out


class RandomCropDataset(torch.utils.data.Dataset):
    """Key k -> ``num_crops`` random crops [num_crops, num_samples] of one file (or of one group).

    ``sampling="duration"`` (default): the file of key k is drawn with probability proportional to
    its duration, so every second of audio is equally likely to be cropped whatever the file
    lengths. ``sampling="file"``: epoch = k // len(files) visits the files in a seeded permutation.
    ``groups`` (a group id per file): every crop after the first comes from a file drawn uniformly
    among the other files of the first file's group (itself when it is alone), so positive pairs
    cross renderings. ``pairing`` (see ``PAIRINGS``) places the crops of one key in their track; a
    track too short for the placement asked gets the nearest that fits (crops zero-padded at the end
    of the track). ``in_memory``: every file is decoded and resampled once, at construction.
    All draws come from generators seeded with (seed, k): the same key gives the same crops.
    """

    def __init__(self, files: List[AudioFileInfo], num_samples: int, num_crops: int = 2,
                 sample_rate: int = 16000, seed: int = 0, sampling: str = "duration",
                 groups: Optional[List[int]] = None, in_memory: bool = False, pairing: str = "independent",
                 gap_seconds: float = 0.0):
        if not files:
            raise AudioError("RandomCropDataset needs at least one file")
        if sampling not in SAMPLING:
            raise AudioError(f"data.sampling must be one of {SAMPLING}, got {sampling!r}")
        if pairing not in PAIRINGS:
            raise AudioError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
        if groups is not None and pairing != "independent":
            raise AudioError(f"data.groups (views from other renderings) needs independent crops; this model "
                             f"places its views with pairing={pairing!r} in one track")
        if not gap_seconds >= 0:
            raise AudioError(f"gap_seconds must be >= 0, got {gap_seconds}")
        self.pairing, self.gap_seconds = pairing, float(gap_seconds)
        if groups is not None and len(groups) != len(files):
            raise AudioError(f"{len(groups)} group ids for {len(files)} files")
        self.files, self.num_samples, self.num_crops = files, num_samples, num_crops
        self.sample_rate, self.seed, self.sampling = sample_rate, seed, sampling
        self._perm_epoch, self._perm = -1, None
        self._cum = np.cumsum([f.seconds for f in files])
        self._members = None
        if groups is not None:
            members: dict = {}
            for i, g in enumerate(groups):
                members.setdefault(g, []).append(i)
            self._members = [members[g] for g in groups]
        self.audio = None
        if in_memory:
            self.audio = [load_audio(f.path, sample_rate) for f in
                          tqdm(files, desc="decoding audio into memory", leave=False, disable=len(files) < 50)]

    def __len__(self) -> int:
        return len(self.files)

    def _index(self, key: int) -> int:
        if self.sampling == "duration":
            g = torch.Generator().manual_seed(_seed(self.seed, -2, key))
            u = float(torch.rand(1, generator=g)) * float(self._cum[-1])
            return min(int(np.searchsorted(self._cum, u, side="right")), len(self.files) - 1)
        epoch, pos = divmod(key, len(self.files))
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(_seed(self.seed, epoch))
            self._perm, self._perm_epoch = torch.randperm(len(self.files), generator=g), epoch
        return int(self._perm[pos])

    def _file(self, key: int) -> AudioFileInfo:
        return self.files[self._index(int(key))]

    def _picks(self, key: int, g: torch.Generator) -> List[int]:
        """File index of each crop of ``key`` (the first file, then others of its group)."""
        i = self._index(int(key))
        picks = [i] * self.num_crops
        if self._members is not None:
            others = [j for j in self._members[i] if j != i] or [i]
            draw = torch.randint(0, len(others), (self.num_crops,), generator=g)
            picks = [i] + [others[int(d)] for d in draw[1:]]
        return picks

    def sources(self, key: int) -> List[str]:
        """Paths the crops of ``key`` come from (to name them when a batch goes wrong)."""
        g = torch.Generator().manual_seed(_seed(self.seed, -1, int(key)))
        return sorted({self.files[j].path for j in self._picks(key, g)})

    def _crop(self, i: int, start_s: float) -> torch.Tensor:
        if self.audio is None:
            return load_segment(self.files[i].path, self.files[i].sample_rate, start_s, self.num_samples, self.sample_rate)
        x = self.audio[i]
        a = int(round(start_s * self.sample_rate))
        seg = x[a:a + self.num_samples]
        return torch.nn.functional.pad(seg, (0, self.num_samples - seg.shape[0]))

    def starts(self, key: int) -> List[float]:
        """Start time (seconds, in its own file) of each crop of ``key``."""
        g = torch.Generator().manual_seed(_seed(self.seed, -1, int(key)))
        picks = self._picks(key, g)
        u = torch.rand(self.num_crops, generator=g)
        crop_s = self.num_samples / self.sample_rate
        if self.pairing == "independent":
            return [float(v) * max(0.0, self.files[j].seconds - crop_s) for j, v in zip(picks, u)]
        seconds = self.files[picks[0]].seconds
        span = max(0.0, seconds - crop_s)
        if self.pairing == "same":
            return [float(u[0]) * span] * self.num_crops
        if self.pairing == "adjacent":
            step = crop_s + self.gap_seconds
            total = crop_s + step * (self.num_crops - 1)
            if total > seconds:  # too short for the gap: the views share the track evenly
                step = span / max(1, self.num_crops - 1)
                total = seconds
            first = float(u[0]) * max(0.0, seconds - total)
            out = [first + k * step for k in range(self.num_crops)]
            return out[::-1] if self.num_crops > 1 and float(u[1]) < 0.5 else out  # which view comes first is drawn
        # rest: the anchor at a, the others uniformly on [0, a - crop] U [a + crop, span]
        a = float(u[0]) * span
        before, after = max(0.0, a - crop_s), max(0.0, span - (a + crop_s))
        out = [a]
        for v in u[1:]:
            if before + after <= 0.0:  # no room for a segment apart from the anchor: anywhere else
                out.append(float(v) * span)
                continue
            x = float(v) * (before + after)
            out.append(x if x < before else a + crop_s + (x - before))
        return out

    def __getitem__(self, key: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed(self.seed, -1, int(key)))
        picks = self._picks(key, g)
        return torch.stack([self._crop(j, start) for j, start in zip(picks, self.starts(key))])


class StepSampler(torch.utils.data.Sampler):
    """Keys for steps start_step, start_step+1, ... (infinite): step s, rank r, slot i ->
    s * batch_size * world_size + r * batch_size + i. Every rank gets a disjoint shard of each global
    batch, like DistributedSampler, and a run can start at any step, which exact resume needs."""

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        self.batch_size, self.start_step, self.rank, self.world_size = batch_size, start_step, rank, world_size

    def keys(self, step: int) -> range:
        """The keys of ``step`` on this rank."""
        base = (step * self.world_size + self.rank) * self.batch_size
        return range(base, base + self.batch_size)

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            yield from self.keys(step)
            step += 1
