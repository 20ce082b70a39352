"""The recordings corpus: game soundtracks packaged by Debian, decoded, deduplicated and split by track.

    mart-bench data --out D [--game-data]       # part of every profile with recordings (full, multi, quick)

Sources (``PACKAGES``), each a Debian package holding a game's recorded music under a free licence:
the music-only packages (``wesnoth-1.16-music``, ``ufoai-music``: Ogg inside a .pk3 zip,
``warzone2100-music``: Opus in album folders) and, with ``--game-data``, the music folders of the game
data packages whose download holds enough music per MB (``GAME_DATA``: hedgewars, supertux, widelands,
freedroidrpg; supertuxkart and megaglest hold 1.6 and 2.1 h per GB and are left out, see
docs/recordings.md). The soundtrack label of a track is its game.

Rules, applied in this order and reported in the manifest with every dropped track:

1. *jingle*: shorter than ``min_track_seconds`` (20 s): victory / defeat stings, level-done cues.
2. *ambience*: a file name naming ambience or silence (``AMBIENCE_NAME``), or more than half of the
   track below -50 dBFS (1 s frames): ambience loops and near-silent cues are not music to learn from.
3. *duplicate*: the same recording twice (in two packages, or twice in one, e.g. an "enhanced" menu
   theme beside its original, or an excerpt of a longer track). Fingerprint: log energy in 12
   log-spaced bands at 2 frames/s; a 16 s snippet of each track (from 20% of its length) is slid over
   every other track, each band's mean over the stretch removed, and a normalised correlation of at
   least ``duplicate_corr`` (0.95) makes the two duplicates. On the packages above, copies of one
   recording score 0.99-1.00 and the closest two distinct tracks 0.885. Of each group of duplicates the copy in the earliest package of ``PACKAGES`` (the
   longest within one package) is kept.

Split: within each game, the kept tracks are ordered by ``sha256(seed, package, track)`` and the first
``eval_tracks`` (at most 40% of the game's tracks, at least 3 when the game has 5) are the evaluation
tracks; every other track is pretraining audio. No evaluation track is ever in the pretraining pool.

Outputs (under the data folder):

* ``pretrain/recorded/<game>/<track>.wav``: the pretraining tracks, 16 kHz mono PCM-16 (when the profile
  has recorded pretraining audio);
* ``raw/soundtrack/<game>/<track>_<j>.wav``: ``clips_per_track`` clips of ``clip_seconds`` of every
  evaluation track, evenly spaced between 5% and 95% of it (only the clips are decoded);
* ``tasks/soundtrack-1.0.0-full``: the HEAR task (multiclass, the game; train/valid/test by track);
* ``recordings/tracks.csv``: the same clips as a same-track retrieval collection (the cover-song
  manifest format: ``work`` = the track), a clip finding the other clips of its track;
* ``manifest.json`` ``recordings``: per package the version, licence, tracks and hours kept, the
  dropped tracks with their rule, and the split.

Decoding is libsndfile (Ogg Vorbis and Opus) and torchaudio's resampler, deterministic on a CPU: the
same seed and package versions give the same bytes. ``decode_all=False`` (the ``quick`` profile, which
writes no pretraining audio) reads durations from the files' headers and applies the name rules only,
so only the evaluation clips are decoded. Fingerprints are cached per source file (path,
size, modification time) in ``~/.cache/mart_upstream/recordings`` (``MART_CACHE`` overrides), so a
second build does not decode everything again.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import subprocess
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from mart_upstream.errors import AudioError, TaskError
from mart_upstream.fileio import atomic_path

log = logging.getLogger("mart-bench.data")
SR = 16000
AMBIENCE_NAME = re.compile(r"(ambien|silence|atmosphere)", re.IGNORECASE)
MUSIC_EXTENSIONS = (".ogg", ".opus", ".flac", ".wav", ".mp3")
FP_RATE = 2  # fingerprint frames per second
FP_BANDS = 12
FP_SNIPPET_S = 16.0  # shorter than the shortest kept track (20 s)


@dataclass(frozen=True)
class Package:
    name: str  # Debian package
    game: str  # the soundtrack label
    roots: Tuple[str, ...]  # folders (or .pk3/.zip archives) holding its music, relative to the file system root
    music_only: bool
    download_mb: float = 0.0  # size of the .deb (apt-cache show: Size), for the hours-per-MB rule


PACKAGES = (
    Package("wesnoth-1.16-music", "wesnoth", ("usr/share/games/wesnoth/1.16/data/core/music",), True, 153.2),
    Package("ufoai-music", "ufoai", ("usr/share/games/ufoai/base/0music.pk3",), True, 210.2),
    Package("warzone2100-music", "warzone2100", ("usr/share/games/warzone2100/music",), True, 85.7),
    Package("hedgewars-data", "hedgewars", ("usr/share/games/hedgewars/Data/Music",), False, 145.3),
    Package("supertux-data", "supertux", ("usr/share/games/supertux2/music",), False, 161.6),
    Package("widelands-data", "widelands", ("usr/share/games/widelands/data/music",), False, 381.4),
    Package("freedroidrpg-data", "freedroidrpg", ("usr/share/freedroidrpg/data/sound/music",), False, 228.3),
)
MUSIC_ONLY = tuple(p.name for p in PACKAGES if p.music_only)
GAME_DATA = tuple(p.name for p in PACKAGES if not p.music_only)
BY_NAME = {p.name: p for p in PACKAGES}


@dataclass
class RecordingsConfig:
    packages: Tuple[str, ...] = MUSIC_ONLY
    min_track_seconds: float = 20.0
    quiet_dbfs: float = -50.0
    max_quiet_fraction: float = 0.5
    duplicate_corr: float = 0.95
    eval_tracks: int = 8  # per game
    max_eval_fraction: float = 0.4
    clip_seconds: float = 10.0
    clips_per_track: int = 6
    pretrain: bool = True  # write the pretraining tracks
    decode_all: bool = True  # decode every track for the quiet and duplicate rules (False: durations from the
    # files' headers and the name rules only, decoding just the evaluation clips: `mart-bench run --quick`)
    prefix: str = "/"  # where the packages' paths start (another root holds the same layout)


@dataclass
class Source:
    """One track of one package: a file, or a member of a zip archive."""

    package: str
    game: str
    track: str  # path relative to its root, without extension ("albums/x/track1")
    path: str  # file, or archive
    member: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.package}:{self.track}"

    def identity(self) -> str:
        """What identifies the bytes: path, size and mtime (and the member's CRC and size in an archive)."""
        st = os.stat(self.path)
        ident = f"{self.path}\0{st.st_size}\0{st.st_mtime_ns}"
        if self.member is not None:
            with zipfile.ZipFile(self.path) as z:
                info = z.getinfo(self.member)
            ident += f"\0{self.member}\0{info.CRC}\0{info.file_size}"
        return ident

    def open(self):
        """A soundfile.SoundFile on the file or the archive member (seekable)."""
        if self.member is None:
            return sf.SoundFile(self.path)
        with zipfile.ZipFile(self.path) as z:
            return sf.SoundFile(io.BytesIO(z.read(self.member)))

    def info(self) -> Tuple[int, int]:
        """(frames, sample rate) from the file's header."""
        try:
            with self.open() as f:
                return f.frames, f.samplerate
        except Exception as e:  # noqa: BLE001
            raise AudioError(f"cannot read {self.path}{':' + self.member if self.member else ''}: {e}") from None

    def segments(self, starts_s: Sequence[float], seconds: float) -> List[np.ndarray]:
        """16 kHz mono clips of ``seconds`` at ``starts_s`` (``load_segment``: each decoded alone, with
        resampler context, zero-padded at the end of the track)."""
        from mart_upstream.audio import load_segment

        _, sr = self.info()
        n = int(round(seconds * SR))
        where = f"{self.path}:{self.member}" if self.member else self.path
        try:
            data = None
            if self.member is not None:
                with zipfile.ZipFile(self.path) as z:
                    data = z.read(self.member)
            # a file object is read from where it stands: a fresh one for each clip
            return [np.clip(load_segment(self.path if data is None else io.BytesIO(data), sr, t, n, SR).numpy(),
                            -1.0, 1.0) for t in starts_s]
        except Exception as e:  # noqa: BLE001 - libsndfile and zipfile raise several types
            raise AudioError(f"cannot decode {where}: {e}") from None

    def read(self) -> Tuple[np.ndarray, int]:
        """Decoded samples [frames, channels] float32 and the file's rate."""
        try:
            if self.member is None:
                data, sr = sf.read(self.path, dtype="float32", always_2d=True)
            else:
                with zipfile.ZipFile(self.path) as z:
                    data, sr = sf.read(io.BytesIO(z.read(self.member)), dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - libsndfile and zipfile raise several types
            where = f"{self.path}:{self.member}" if self.member else self.path
            raise AudioError(f"cannot decode {where}: {e}") from None
        return data, sr


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-" else "-" for c in text).strip("-")


def roots(pkg: Package, prefix: str = "/") -> List[str]:
    return [os.path.join(prefix, r) for r in pkg.roots]


def installed(pkg: Package, prefix: str = "/") -> bool:
    return all(os.path.exists(r) for r in roots(pkg, prefix))


def apt_command(names: Sequence[str]) -> str:
    return "sudo apt-get install " + " ".join(names)


def list_sources(pkg: Package, prefix: str = "/") -> List[Source]:
    """Every music file of an installed package, sorted by track."""
    out = []
    for root in roots(pkg, prefix):
        if os.path.isfile(root) and zipfile.is_zipfile(root):
            with zipfile.ZipFile(root) as z:
                for m in sorted(z.namelist()):
                    if m.lower().endswith(MUSIC_EXTENSIONS):
                        out.append(Source(pkg.name, pkg.game, os.path.splitext(m)[0], root, m))
            continue
        for d, dirs, names in os.walk(root):
            dirs.sort()
            for n in sorted(names):
                if n.lower().endswith(MUSIC_EXTENSIONS) and not n.startswith("."):
                    p = os.path.join(d, n)
                    out.append(Source(pkg.name, pkg.game, os.path.splitext(os.path.relpath(p, root))[0], p))
    return sorted(out, key=lambda s: s.track)


def package_version(name: str, prefix: str = "/") -> str:
    if os.path.abspath(prefix) != "/":
        return "unknown (files under %s)" % prefix
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def copyright_stanzas(text: str) -> List[Tuple[List[str], str]]:
    """(Files patterns, licence name) of each stanza of a machine-readable (DEP-5) copyright file."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.MULTILINE)
        lic = re.search(r"^License:[ \t]*(\S.*)$", block, re.MULTILINE)
        if files and lic:
            out.append((files.group(1).split(), lic.group(1).strip()))
    return out


def track_licence(stanzas: List[Tuple[List[str], str]], src: "Source") -> Optional[str]:
    """The licence of the last stanza whose pattern matches the track's file (DEP-5: the last match wins);
    patterns are matched against the end of the installed path (``a/b.ogg`` matches ``/usr/.../a/b.ogg``)."""
    import fnmatch

    path = "/" + (f"{os.path.dirname(src.path)}/{src.member}" if src.member else src.path).lstrip("/")
    found = None
    for patterns, lic in stanzas:
        for pat in patterns:
            pat = pat[2:] if pat.startswith("./") else pat
            # the source tree's leading folders may differ from the installed ones (data/music/* is
            # installed as .../supertux2/music/...): drop them one at a time, keeping a folder and a name
            parts = pat.split("/")
            tails = ["/".join(parts[i:]) for i in range(len(parts) - 1)]
            if pat == "*" or any(fnmatch.fnmatch(path, "*/" + t) for t in tails or [pat]):
                found = lic
                break
    return found


def package_licences(name: str, sources: Sequence["Source"], prefix: str = "/") -> Dict:
    """Licences of a package's music: per DEP-5 stanza matching each track (counted), or, in a copyright
    file that is not machine-readable, the GPL version it names; with the file and its sha256."""
    path = os.path.join(prefix, f"usr/share/doc/{name}/copyright")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {"licence": f"unknown (no {path})", "file": path, "sha256": None}
    stanzas = copyright_stanzas(text)
    counts: Dict[str, int] = {}
    if stanzas:
        for src in sources:
            lic = track_licence(stanzas, src) or "unknown"
            counts[lic] = counts.get(lic, 0) + 1
        text_out = ", ".join(f"{k} ({v} tracks)" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    else:
        m = re.search(r"General Public License,? version (\d)", text, re.IGNORECASE)
        text_out = f"GPL-{m.group(1)} (copyright file not machine-readable)" if m else f"see {path}"
    return {"licence": text_out, "file": path, "sha256": hashlib.sha256(text.encode()).hexdigest()}


# --------------------------------------------------------------------------- decoding and fingerprints

def to_16k_mono(data: np.ndarray, sr: int, block_s: float = 30.0) -> np.ndarray:
    """[frames, channels] at ``sr`` -> mono 16 kHz in [-1, 1]. torchaudio's resampler, in blocks of about
    ``block_s`` with context on each side (one call on a whole track of minutes is 10x slower); a block
    boundary is a whole number of samples at both rates, so the blocks join without a seam."""
    import math

    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))
    if sr == SR:
        return np.clip(x.numpy(), -1.0, 1.0)
    unit = sr // math.gcd(sr, SR)  # input samples per whole number of output samples
    margin = unit * -(-64 // unit)  # well beyond the resampling kernel's reach
    step = unit * max(1, int(block_s * sr) // unit)
    out = []
    for lo in range(0, len(x), step):
        hi = min(lo + step, len(x))
        a, b = max(0, lo - margin), min(len(x), hi + margin)
        y = AF.resample(x[a:b], sr, SR)
        skip = (lo - a) * SR // sr
        out.append(y[skip : skip + int(math.ceil((hi - lo) * SR / sr))])
    y = torch.cat(out)[: int(math.ceil(len(x) * SR / sr))]
    return np.clip(y.numpy(), -1.0, 1.0)


def band_energies(x: np.ndarray) -> np.ndarray:
    """16 kHz mono -> [frames, FP_BANDS] log energies of 0.5 s frames in log-spaced bands (60 Hz-8 kHz)."""
    hop = SR // FP_RATE
    n = len(x) // hop
    if n == 0:
        return np.zeros((0, FP_BANDS), np.float32)
    spec = np.abs(np.fft.rfft(x[: n * hop].reshape(n, hop) * np.hanning(hop), axis=1)) ** 2  # [n, hop/2+1]
    freqs = np.fft.rfftfreq(hop, 1.0 / SR)
    edges = np.geomspace(60.0, SR / 2, FP_BANDS + 1)
    bands = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], 1)
    return np.log(bands + 1e-8).astype(np.float32)


def quiet_fraction(x: np.ndarray, dbfs: float) -> float:
    """Share of 1 s frames whose RMS is below ``dbfs``."""
    n = len(x) // SR
    if n == 0:
        return 1.0
    rms = np.sqrt(np.mean(x[: n * SR].reshape(n, SR).astype(np.float64) ** 2, axis=1))
    return float(np.mean(20 * np.log10(rms + 1e-12) < dbfs))


def _cache_dir() -> str:
    return os.path.join(os.environ.get("MART_CACHE", os.path.expanduser("~/.cache/mart_upstream")), "recordings")


def analyse(src: Source, quiet_dbfs: float) -> Dict:
    """Duration, quiet fraction and fingerprint of a source (cached per source identity)."""
    ident = src.identity()
    key = hashlib.sha256(f"v1\0{ident}\0{quiet_dbfs}".encode()).hexdigest()[:32]
    path = os.path.join(_cache_dir(), key + ".npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as z:
                return {"seconds": float(z["seconds"]), "quiet": float(z["quiet"]), "fp": z["fp"]}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is computed again
    x = to_16k_mono(*src.read())
    out = {"seconds": len(x) / SR, "quiet": quiet_fraction(x, quiet_dbfs), "fp": band_energies(x)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, seconds=out["seconds"], quiet=out["quiet"], fp=out["fp"])
    return out


def _unit_windows(w: np.ndarray) -> np.ndarray:
    """[W, n, B] stretches of a fingerprint -> [W, n*B]: each band's mean over the stretch removed (the
    spectral balance, which much music shares), then unit norm: what is left is how each band moves."""
    w = w - w.mean(axis=1, keepdims=True)
    w = w.reshape(len(w), -1)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-9)


def snippet(fp: np.ndarray) -> Optional[np.ndarray]:
    n = int(FP_SNIPPET_S * FP_RATE)
    if len(fp) < n:
        return None
    start = min(int(0.2 * len(fp)), len(fp) - n)
    return _unit_windows(fp[None, start : start + n])[0]


def best_match(snips: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Max normalised correlation of each snippet [S, n*B] at any offset in the fingerprint ``fp``."""
    n = snips.shape[1] // FP_BANDS
    if len(fp) < n:
        return np.full(len(snips), -1.0)
    win = np.lib.stride_tricks.sliding_window_view(fp, (n, FP_BANDS))[:, 0]  # [W, n, B]
    return (_unit_windows(win) @ snips.T).max(axis=0)


def duplicates(fps: List[np.ndarray], threshold: float) -> Dict[int, Tuple[int, float]]:
    """Pairs of fingerprints where one's snippet is found in the other: {i: (j, corr)}, j < i in priority
    order (the caller orders tracks by package, then by length within a package, longest first)."""
    snips = [snippet(f) for f in fps]
    idx = [i for i, s in enumerate(snips) if s is not None]
    if not idx:
        return {}
    S = np.stack([snips[i] for i in idx])
    corr = np.full((len(fps), len(fps)), -1.0)  # corr[a, b]: snippet of a found in b
    for b, fp in enumerate(fps):
        corr[idx, b] = best_match(S, fp)
    np.fill_diagonal(corr, -1.0)
    sym = np.maximum(corr, corr.T)
    out = {}
    for i in range(len(fps)):
        for j in range(i):  # earlier (kept) tracks only
            if j not in out and sym[i, j] >= threshold:
                out[i] = (j, float(sym[i, j]))
                break
    return out


# --------------------------------------------------------------------------- the corpus

def select(cfg: RecordingsConfig, seed: int, pool=None) -> Dict:
    """Find, analyse, filter, deduplicate and split the installed packages' tracks (nothing written)."""
    unknown = [n for n in cfg.packages if n not in BY_NAME]
    if unknown:
        raise TaskError(f"recordings: unknown packages {unknown}; known: {', '.join(BY_NAME)}")
    missing = [n for n in cfg.packages if not installed(BY_NAME[n], cfg.prefix)]
    present = [BY_NAME[n] for n in cfg.packages if n not in missing]
    if missing:
        log.warning("recordings: not installed: %s (%s)", ", ".join(missing), apt_command(missing))
    sources = [s for p in present for s in list_sources(p, cfg.prefix)]
    mapper = pool.imap if pool is not None else map
    from tqdm import tqdm

    if cfg.decode_all:
        stats = list(tqdm(mapper(_analyse_job, [(s, cfg.quiet_dbfs) for s in sources]), total=len(sources),
                          desc="recordings", unit="track", disable=None, leave=False))
    else:  # durations from the headers; the quiet and duplicate rules need every track decoded
        stats = [{"seconds": fr / sr, "quiet": 0.0, "fp": None} for fr, sr in (s.info() for s in sources)]
    dropped: Dict[str, Dict] = {}
    candidates = []
    for s, st in zip(sources, stats):
        name = os.path.basename(s.track)
        if st["seconds"] < cfg.min_track_seconds:
            dropped[s.key] = {"rule": "jingle", "seconds": round(st["seconds"], 1)}
        elif AMBIENCE_NAME.search(name):
            dropped[s.key] = {"rule": "ambience (name)", "seconds": round(st["seconds"], 1)}
        elif st["quiet"] > cfg.max_quiet_fraction:
            dropped[s.key] = {"rule": f"ambience (quiet: {st['quiet']:.0%} of seconds below {cfg.quiet_dbfs:g} dBFS)",
                              "seconds": round(st["seconds"], 1)}
        else:
            candidates.append((s, st))
    order = {p.name: i for i, p in enumerate(PACKAGES)}
    candidates.sort(key=lambda c: (order[c[0].package], -c[1]["seconds"], c[0].track))
    found = duplicates([c[1]["fp"] for c in candidates], cfg.duplicate_corr) if cfg.decode_all else {}
    for i, (j, corr) in found.items():
        s, st = candidates[i]
        dropped[s.key] = {"rule": f"duplicate of {candidates[j][0].key} (correlation {corr:.2f})",
                          "seconds": round(st["seconds"], 1)}
    kept = [(s, st) for s, st in candidates if s.key not in dropped]
    split: Dict[str, str] = {}
    for p in present:
        mine = [s for s, _ in kept if s.package == p.name]
        mine.sort(key=lambda s: hashlib.sha256(f"{seed}\0{s.package}\0{s.track}".encode()).hexdigest())
        n_eval = min(cfg.eval_tracks, int(cfg.max_eval_fraction * len(mine)))
        if len(mine) >= 5:
            n_eval = max(n_eval, 3)
        for k, s in enumerate(mine):
            split[s.key] = "eval" if k < n_eval else "pretrain"
    return {"present": present, "missing": missing, "kept": kept, "dropped": dropped, "split": split}


def _analyse_job(args) -> Dict:
    import torch

    torch.set_num_threads(1)
    src, dbfs = args
    return analyse(src, dbfs)


def clip_starts(seconds: float, clip: float, k: int) -> List[float]:
    """``k`` clip starts evenly spaced so that the clips lie between 5% and 95% of the track."""
    lo, hi = 0.05 * seconds, max(0.05 * seconds, 0.95 * seconds - clip)
    if k == 1:
        return [round((lo + hi) / 2, 3)]
    return [round(lo + (hi - lo) * j / (k - 1), 3) for j in range(k)]


def write_wav(path: str, x: np.ndarray) -> None:
    """16 kHz mono PCM-16, written atomically (the folder made as needed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, x, SR, subtype="PCM_16", format="WAV")


def _write_job(args) -> Tuple[str, List[str]]:
    """One kept track: its pretraining file (the whole track decoded) or its evaluation clips (only the clips
    decoded, each with resampler context)."""
    import torch

    torch.set_num_threads(1)
    src, role, root, cfg = args
    name = slug(src.track)
    if role == "pretrain":
        path = os.path.join(root, "pretrain", "recorded", src.game, name + ".wav")
        write_wav(path, to_16k_mono(*src.read()))
        return src.key, [path]
    frames, sr = src.info()
    starts = clip_starts(frames / sr, cfg.clip_seconds, cfg.clips_per_track)
    paths = []
    for j, clip in enumerate(src.segments(starts, cfg.clip_seconds)):
        path = os.path.join(root, "raw", "soundtrack", src.game, f"{name}_{j}.wav")
        write_wav(path, clip)
        paths.append(path)
    return src.key, paths


def heareval_splits(tracks: Sequence[str], seed: int) -> Dict[str, str]:
    """train / valid / test by track for the HEAR task (about 60/20/20, at least one track each)."""
    order = sorted(tracks, key=lambda t: hashlib.sha256(f"{seed}\0split\0{t}".encode()).hexdigest())
    n = len(order)
    n_valid = max(1, round(0.2 * n))
    n_test = max(1, round(0.2 * n))
    return {t: "valid" if k < n_valid else "test" if k < n_valid + n_test else "train" for k, t in enumerate(order)}


def build(root: str, cfg: RecordingsConfig, seed: int, pool=None, workers: int = 1) -> Dict:
    """Write the recordings part of a data folder under ``root`` (a staging folder); -> manifest section."""
    from mart_upstream.tasks.covers import Track, write_manifest
    from tqdm import tqdm

    from mart_upstream.adapters.hear.tasks.sources import MULTICLASS_METRICS
    from mart_upstream.adapters.hear.tasks.taskfolder import Item, TaskSpec, build_task

    sel = select(cfg, seed, pool)
    if not sel["present"]:
        raise TaskError("recordings: none of the packages is installed; " + apt_command(cfg.packages))
    jobs = [(s, sel["split"][s.key], root, cfg) for s, _ in sel["kept"]
            if sel["split"][s.key] == "eval" or cfg.pretrain]
    mapper = pool.imap if pool is not None else map
    written = dict(tqdm(mapper(_write_job, jobs), total=len(jobs), desc="recordings (write)", unit="track",
                        disable=None, leave=False))
    items, tracks = [], []
    games = sorted({s.game for s, _ in sel["kept"] if sel["split"][s.key] == "eval"})
    eval_keys = [s.key for s, _ in sel["kept"] if sel["split"][s.key] == "eval"]
    hsplit = {}
    for g in games:
        hsplit.update(heareval_splits([s.key for s, _ in sel["kept"] if s.game == g and s.key in eval_keys], seed))
    for s, _ in sel["kept"]:
        if sel["split"][s.key] != "eval":
            continue
        work = f"{s.game}.{slug(s.track)}"
        for j, path in enumerate(written[s.key]):
            items.append(Item(path, f"{work}_{j}", [s.game], hsplit[s.key]))
            tracks.append(Track(work, f"c{j}", path))
    if len(games) < 2:
        raise TaskError(f"recordings: the soundtrack task needs two games with evaluation tracks, got {games}")
    spec = TaskSpec("soundtrack", "1.0.0", "multiclass", "trainvaltest", cfg.clip_seconds, MULTICLASS_METRICS, games)
    task, bad = build_task(spec, items, os.path.join(root, "tasks"), [SR], workers=workers)
    if bad:
        raise TaskError(f"soundtrack task: {len(bad)} clips could not be read back: {bad[:3]}")
    write_manifest(tracks, os.path.join(root, "recordings", "tracks.csv"))
    packages = {}
    for p in sel["present"]:
        mine = [(s, st) for s, st in sel["kept"] if s.package == p.name]
        hours = {r: sum(st["seconds"] for s, st in mine if sel["split"][s.key] == r) / 3600 for r in ("pretrain", "eval")}
        packages[p.name] = {
            "game": p.game, "version": package_version(p.name, cfg.prefix),
            **package_licences(p.name, [s for s, _ in mine], cfg.prefix),
            "music_only": p.music_only, "download_mb": p.download_mb,
            "tracks": {r: sum(sel["split"][s.key] == r for s, _ in mine) for r in ("pretrain", "eval")},
            "hours": {r: round(h, 3) for r, h in hours.items()},
            "dropped": {k: v for k, v in sorted(sel["dropped"].items()) if k.startswith(p.name + ":")}}
    pre_h = sum(v["hours"]["pretrain"] for v in packages.values())
    return {"task": os.path.relpath(task, root), "retrieval": "recordings/tracks.csv",
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "packages": packages, "missing": sel["missing"],
            "pretrain_folder": "pretrain/recorded" if cfg.pretrain else None,
            "pretrain_hours": round(pre_h, 3) if cfg.pretrain else 0.0,  # the split's hours, written or not, per package
            "eval_tracks": len(eval_keys), "eval_clips": len(items),
            "split": {k: sel["split"][k] for k in sorted(sel["split"])},
            "pretrain_files": sorted(os.path.relpath(p, os.path.join(root, "pretrain"))
                                     for k, ps in written.items() if sel["split"][k] == "pretrain" for p in ps)}


def licences_md(section: Dict) -> str:
    """LICENSES.md lines for the recorded music used."""
    lines = ["", "## Recorded music (`pretrain/recorded`, `raw/soundtrack`, `tasks/soundtrack-*`)", "",
             "| package | version | licence (Debian copyright file) | tracks pretrain / eval | hours pretrain / eval |",
             "|---|---|---|---:|---:|"]
    for name, p in section["packages"].items():
        lines.append(f"| {name} | {p['version']} | {p['licence']} | {p['tracks']['pretrain']} / {p['tracks']['eval']} | "
                     f"{p['hours']['pretrain']:.2f} / {p['hours']['eval']:.2f} |")
    return "\n".join(lines) + "\n"
