"""``mart-bench data``: render the offline real-music benchmark sets, deterministically.

    mart-bench data --out bench_data [--profile full|small|multi] [--seed 0] [--workers 2] [--no-recorded]
                    [--pretrain-renderings K]

* style: classes from different corpora (``scores.STYLE_CORPORA``), clips of ``clip_seconds`` with GM
  programs drawn per part from one shared pool (timbre carries no label), split train/valid/test by
  work (corpus file) -> HEAR task ``tasks/music_style-1.0.0-full``; the clips also stay in ``raw/style``;
* covers: works x versions (soundfont, program set, transposition within ±3 semitones, tempo
  x0.8-1.2, the same excerpt) -> ``covers/audio/<work>/<version>.wav`` and ``covers/manifest.csv``;
* playlists: ``playlists`` playlists of ``playlist_tracks`` style clips, each drawn from the clips of
  works that share corpus, key mode (major / minor, estimated from the notes) and ensemble (solo,
  2-3 or 4+ parts) -> ``playlists.jsonl`` (``mart_upstream.tasks.playlists``' layout; track ids are
  the style task's clip names); where no group has enough clips, none are written. The manifest's
  ``playlists.tracks`` gives every clip's grouping keys;
* recordings (``.recordings``): game soundtracks packaged by Debian, decoded, deduplicated and split
  by track -> the soundtrack identification task ``tasks/soundtrack-1.0.0-full`` (clips of the
  evaluation tracks), the same-track retrieval collection ``recordings/tracks.csv`` and, with
  ``recorded``, the pretraining tracks in ``pretrain/recorded/<game>/``. ``--game-data`` adds the music
  of the game data packages (opt-in downloads of 145-381 MB each);
* pretrain: clips of other works (and the recordings' pretraining tracks) -> ``pretrain/rendered``
  and ``pretrain/recorded`` for ``mart-pretrain --data``. With
  ``pretrain_renderings`` K > 1 every work is rendered K times as cover versions are (the same
  excerpt; soundfont, program set, transposition and tempo drawn per rendering; the soundfont
  alternates and every part changes program from one rendering to the next) ->
  ``pretrain/rendered/<work>/r<k>.wav``, so that a positive pair can cross renderings.
  ``pretrain/groups.csv`` (``path,group``, paths relative to ``pretrain/``) names the work of every
  file; each recording, and each rendered clip when K == 1, is its own group.

A work shorter than its excerpt is played again from the top, as tunes are. No work is in two
splits or two sets. Same seed and package versions -> the same bytes: works are
drawn by seeded shuffles of sorted corpus paths, and every clip has its own seeded generator and a
fresh synth, so neither ``--workers`` nor scheduling changes the output. Everything is built in a temp
folder beside ``--out`` and renamed into place, so a killed build leaves no partial output.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from mart_upstream.errors import TaskError, UsageError, command
from mart_upstream.fileio import replace_dir, sha256_file, staging_dir, write_json, write_text

from . import recordings
from .recordings import write_wav
from .render import PROGRAM_POOL, SOUNDFONT_DIR, SOUNDFONTS, Performance, check_renderer, render, versions
from .scores import STYLE_CORPORA, Note, Work, list_works, parse_notes, span

log = logging.getLogger("mart-bench.data")
SR = 16000
SPLITS = ("train", "valid", "test")
PLAYLIST_KEYS = ("corpus", "mode", "ensemble")  # the clips of one playlist share these
# Krumhansl and Kessler's (1982) probe-tone profiles of C major and C minor
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class DataConfig:
    clip_seconds: float = 15.0  # style and cover clips (10-30 s)
    clips_per_class: int = 40
    clips_per_work: int = 2  # style clips per work (different excerpts); sets the number of works
    split: Tuple[float, float, float] = (0.7, 0.15, 0.15)  # train / valid / test share of each class's works
    cover_works: int = 60
    cover_versions: int = 4
    max_transpose: int = 3  # semitones, either way
    tempo_range: Tuple[float, float] = (0.8, 1.2)  # cover versions' tempo factor
    bpm_range: Tuple[float, float] = (72.0, 132.0)  # quarter notes per minute of a rendering
    pretrain_clips: int = 240
    pretrain_seconds: float = 20.0
    pretrain_renderings: int = 1  # renderings of each pretraining work (K > 1: rendered/<work>/r<k>.wav)
    recorded: bool = True  # add the recordings' pretraining tracks to the pretraining pool
    soundtrack: bool = True  # the evaluation on recordings (soundtrack identification, same-track retrieval)
    game_data: bool = False  # recordings from the game data packages too (recordings.GAME_DATA)
    soundtrack_eval_tracks: int = 8  # evaluation tracks per game
    soundtrack_clips_per_track: int = 6  # clips of 10 s per evaluation track
    min_beats: float = 16.0  # works shorter than this are not used
    parse_timeout_s: int = 60  # a score taking longer to parse is skipped
    playlists: int = 40  # drawn from style clips of works sharing PLAYLIST_KEYS
    playlist_tracks: Tuple[int, int] = (6, 10)  # tracks per playlist (3 queries + at least one to find)


PROFILES = {
    "full": DataConfig(),
    "small": DataConfig(clip_seconds=10.0, clips_per_class=6, clips_per_work=1, cover_works=12,
                        pretrain_clips=16, pretrain_seconds=10.0, recorded=False, soundtrack=False, playlists=12,
                        playlist_tracks=(4, 6)),
    "multi": DataConfig(pretrain_renderings=3),  # full, with 3 renderings of each pretraining work
    # `mart-bench run --quick`: small, with 2 renderings of each pretraining work of 12 s (MelCPC's crop,
    # the longest of every model's); the soundtrack task on the music-only packages, 3 clips per track
    "quick": DataConfig(clip_seconds=8.0, clips_per_class=16, clips_per_work=1, cover_works=12,
                        pretrain_clips=16, pretrain_seconds=12.0, recorded=False, pretrain_renderings=2,
                        soundtrack_clips_per_track=3),
}
LICENCES = {"FluidR3_GM": "MIT", "TimGM6mb": "GPL-2"}
LICENSES_MD = """# Licences of the rendered benchmark data

- Scores: the music21 corpus (https://www.music21.org). Its files come from many sources with their
  own terms; not all of them are free for commercial use (see music21's corpus documentation).
- Soundfonts: FluidR3_GM (Debian fluid-soundfont-gm; MIT licence) and TimGM6mb (Debian
  timgm6mb-soundfont; GPL-2).
- Recorded music (pretrain/recorded, raw/soundtrack, tasks/soundtrack-*, when present): game
  soundtracks from Debian packages (wesnoth-1.16-music: GPL-2; ufoai-music, warzone2100-music and,
  with --game-data, hedgewars-data, supertux-data, widelands-data, freedroidrpg-data), each track under
  the licence its package's Debian copyright file names (the table below, when the data has them).

The rendered audio is for research benchmarking; check these terms before redistributing it.
"""


@dataclass
class Chosen:
    work: Work
    tune: Optional[int]
    notes: List[Note]


def _slug(path: str) -> str:
    base = os.path.splitext(path)[0].replace(os.sep, "_").replace("/", "_")
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in base)


def _worker_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(signum, frame):
    raise SystemExit(128 + signum)  # run the clean-up of the temp folder


class _Pool:
    """``map`` in order over a fork pool (``workers`` > 1) or in process."""

    def __init__(self, workers: int):
        self.pool = mp.get_context("fork").Pool(workers, initializer=_worker_signals) if workers > 1 else None

    def imap(self, fn, items):
        return self.pool.imap(fn, items) if self.pool else map(fn, items)

    def close(self):
        if self.pool:
            self.pool.terminate()
            self.pool.join()


# --------------------------------------------------------------------------- work selection

@functools.lru_cache(maxsize=None)
def _works(label: str, seed: int) -> Tuple[Work, ...]:
    return tuple(list_works(label, seed))


def _interleaved(seed: int, salt: str, used: set) -> List[Work]:
    """Unused works of every corpus, each corpus in its own seeded order, taken in turn (balanced sets)."""
    lists = []
    for label in sorted(STYLE_CORPORA):
        works = [w for w in _works(label, seed) if w.id not in used]
        random.Random(f"{seed}-{salt}-{label}").shuffle(works)
        lists.append(works)
    return [w for group in itertools.zip_longest(*lists) for w in group if w is not None]


def _parse(args) -> Tuple[Optional[List[Note]], Optional[int], str]:
    import warnings

    work, cfg = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21's notes on overfull measures and the like
        return parse_notes(work, cfg.min_beats, cfg.parse_timeout_s)


def _take(candidates: List[Work], n: int, used: set, cfg: DataConfig, pool: _Pool, desc: str,
          skipped: Dict[str, str]) -> List[Chosen]:
    """The first ``n`` usable works of ``candidates`` (in order) not used or skipped; marks them used."""
    out: List[Chosen] = []
    pending = [w for w in candidates if w.id not in used and w.id not in skipped]
    i = 0
    with tqdm(total=n, desc=desc, unit="work", disable=None, leave=False) as bar:
        while len(out) < n and i < len(pending):
            need = n - len(out)
            batch = pending[i : i + need + max(2, need // 8)]  # a few spares for unusable works
            i += len(batch)
            for w, (notes, tune, reason) in zip(batch, pool.imap(_parse, [(w, cfg) for w in batch])):
                if notes is None:
                    log.warning("skipped %s: %s", w.id, reason)
                    skipped[w.id] = reason
                elif len(out) < n:
                    out.append(Chosen(w, tune, notes))
                    used.add(w.id)
                    bar.update(1)
    return out


# --------------------------------------------------------------------------- rendering

def _looped(notes: List[Note], until: float) -> List[Note]:
    """The work played again from the top (as tunes are) until beat ``until``."""
    length = span(notes)
    repeats = int(np.ceil(until / length)) if until > length else 1
    return [(p, o + r * length, d, k) for r in range(repeats) for p, o, d, k in notes]


def _perf(notes, rng: np.random.Generator, cfg: DataConfig, start: float, seconds: float, transpose: int = 0,
          bpm: Optional[float] = None) -> Performance:
    """A seeded performance: tempo (unless given), one GM program per part from the shared pool, soundfont."""
    bpm = bpm or float(rng.uniform(*cfg.bpm_range))
    n_parts = 1 + max(p for p, *_ in notes)
    return Performance(_looped(notes, start + seconds * bpm / 60), start, bpm, transpose,
                       [int(rng.choice(PROGRAM_POOL)) for _ in range(n_parts)],
                       str(rng.choice(sorted(SOUNDFONTS))))


def _starts(notes, k: int, beats: float, rng: np.random.Generator) -> List[float]:
    """``k`` excerpt starts (in beats), one drawn in each of ``k`` equal stretches of the work."""
    last = max(0.0, span(notes) - beats)
    return [float(rng.uniform(last * j / k, last * (j + 1) / k)) if last > 0 else 0.0 for j in range(k)]


def _render_job(job) -> str:
    perf, seconds, path, soundfont_dir = job
    write_wav(path, render(perf, seconds, SR, soundfont_dir))
    return path


def _render_all(jobs, pool: _Pool, desc: str) -> None:
    for _ in tqdm(pool.imap(_render_job, jobs), total=len(jobs), desc=desc, unit="clip", disable=None,
                  leave=False):
        pass


def _tunes(chosen: List[Chosen]) -> Dict[str, int]:
    return {c.work.id: c.tune for c in chosen if c.tune is not None}


# --------------------------------------------------------------------------- the three sets

def build_style(root: str, cfg: DataConfig, seed: int, used: set, pool: _Pool, workers: int, sf_dir: str,
                skipped: Dict[str, str]) -> Dict:
    from mart_upstream.adapters.hear.tasks.sources import MULTICLASS_METRICS
    from mart_upstream.adapters.hear.tasks.taskfolder import Item, TaskSpec, build_task

    items, jobs, info, tracks = [], [], {}, {}
    n_works = -(-cfg.clips_per_class // max(1, cfg.clips_per_work))
    beats = cfg.clip_seconds * cfg.bpm_range[1] / 60
    for ci, label in enumerate(sorted(STYLE_CORPORA)):
        cands = list(_works(label, seed))
        random.Random(f"{seed}-{label}").shuffle(cands)
        chosen = _take(cands, n_works, used, cfg, pool, f"style {label}", skipped)
        if len(chosen) < 3:
            raise TaskError(f"style class {label}: only {len(chosen)} usable works (3 needed for the splits)")
        n_val = max(1, round(len(chosen) * cfg.split[1]))
        n_test = max(1, round(len(chosen) * cfg.split[2]))
        splits = ["train"] * (len(chosen) - n_val - n_test) + ["valid"] * n_val + ["test"] * n_test
        per_split = dict.fromkeys(SPLITS, 0)
        for wi, (c, split) in enumerate(zip(chosen, splits)):
            k = cfg.clips_per_class // len(chosen) + (wi < cfg.clips_per_class % len(chosen))
            rng = np.random.default_rng([seed, 1, ci, wi])
            keys = {"corpus": label, "work": c.work.id, "mode": key_mode(c.notes), "ensemble": ensemble(c.notes)}
            for j, start in enumerate(_starts(c.notes, k, beats, rng)):
                name = f"{_slug(c.work.path)}_{j}"
                path = os.path.join(root, "raw", "style", label, name + ".wav")
                jobs.append((_perf(c.notes, rng, cfg, start, cfg.clip_seconds), cfg.clip_seconds, path, sf_dir))
                items.append(Item(path, f"{label}.{name}", [label], split))
                tracks[f"{label}.{name}"] = keys
                per_split[split] += 1
        info[label] = {"corpora": list(STYLE_CORPORA[label][0]), "clips": sum(per_split.values()),
                       "clips_per_split": per_split, "tunes": _tunes(chosen),
                       "works": {s: sorted(c.work.id for c, sp in zip(chosen, splits) if sp == s) for s in SPLITS}}
    _render_all(jobs, pool, "style clips")
    spec = TaskSpec("music_style", "1.0.0", "multiclass", "trainvaltest", cfg.clip_seconds, MULTICLASS_METRICS,
                    sorted(STYLE_CORPORA))
    path, bad = build_task(spec, items, os.path.join(root, "tasks"), [SR], workers=workers)
    if bad:
        raise TaskError(f"style task: {len(bad)} rendered clips could not be read back: {bad[:3]}")
    return {"task": os.path.relpath(path, root), "raw": "raw/style", "clips": len(items), "classes": info,
            "split_sizes": {s: sum(it.split == s for it in items) for s in SPLITS}, "tracks": tracks}


def key_mode(notes: List[Note]) -> str:
    """"major" or "minor": the mode of the key whose Krumhansl-Kessler profile correlates best with the
    work's duration-weighted pitch-class histogram (the Krumhansl-Schmuckler key finding)."""
    hist = np.zeros(12)
    np.add.at(hist, [p % 12 for _, _, _, p in notes], [d for _, _, d, _ in notes])
    profiles = np.stack([np.roll(prof, tonic) for prof in (KK_MAJOR, KK_MINOR) for tonic in range(12)])  # [24, 12]
    h, pr = hist - hist.mean(), profiles - profiles.mean(axis=1, keepdims=True)
    r = pr @ h / (np.linalg.norm(pr, axis=1) * max(np.linalg.norm(h), 1e-12))  # Pearson r with each key
    return "major" if int(np.argmax(r)) < 12 else "minor"


def ensemble(notes: List[Note]) -> str:
    """The work's scoring by its number of parts with notes: solo, 2-3 parts or 4+ parts."""
    parts = len({p for p, *_ in notes})
    return "solo" if parts == 1 else "2-3 parts" if parts <= 3 else "4+ parts"


def draw_playlists(tracks: Dict[str, Dict[str, str]], n: int, sizes: Tuple[int, int], seed: int) -> List:
    """``n`` playlists, in turn from each group of tracks sharing ``PLAYLIST_KEYS`` that holds at least
    ``sizes[0]`` tracks, each of a seeded size within ``sizes`` (at most the group's size), its tracks
    drawn without replacement in a seeded order; none when no group is large enough."""
    from mart_upstream.tasks.playlists import Playlist

    lo, hi = sizes
    if lo < 4 or hi < lo:
        raise UsageError(f"playlist sizes must be at least 4 (3 queries and 1 to find) and ordered, got {sizes}")
    groups: Dict[Tuple[str, ...], List[str]] = {}
    for tid in sorted(tracks):
        groups.setdefault(tuple(tracks[tid][k] for k in PLAYLIST_KEYS), []).append(tid)
    eligible = sorted(k for k, members in groups.items() if len(members) >= lo)
    rng = np.random.default_rng([seed, 4])
    out = []
    for i in range(n if eligible else 0):
        key = eligible[i % len(eligible)]
        members = groups[key]
        picked = [members[j] for j in rng.choice(len(members), int(rng.integers(lo, min(hi, len(members)) + 1)),
                                                  replace=False)]
        out.append(Playlist(f"p{i:03d}", picked, "/".join(key),
                            {t: (tracks[t]["corpus"], tracks[t]["work"]) for t in picked}))
    return out


def build_playlists(root: str, cfg: DataConfig, seed: int, tracks: Dict[str, Dict[str, str]]) -> Dict:
    from mart_upstream.tasks.playlists import PLAYLIST_FILES, write_playlists

    playlists = draw_playlists(tracks, cfg.playlists, cfg.playlist_tracks, seed)
    info = {"file": PLAYLIST_FILES[0] if playlists else None, "playlists": len(playlists),
            "keys": list(PLAYLIST_KEYS), "groups": len({p.category for p in playlists}),
            "tracks_per_playlist": [len(p.tracks) for p in playlists], "tracks": tracks}
    if playlists:
        write_playlists(playlists, os.path.join(root, PLAYLIST_FILES[0]))
    elif cfg.playlists:
        log.warning("no playlists: no group of style clips sharing %s holds %d clips", ", ".join(PLAYLIST_KEYS),
                    cfg.playlist_tracks[0])
    return info


def build_covers(root: str, cfg: DataConfig, seed: int, used: set, pool: _Pool, sf_dir: str,
                 skipped: Dict[str, str]) -> Dict:
    from mart_upstream.tasks.covers import Track, write_manifest

    chosen = _take(_interleaved(seed, "covers", used), cfg.cover_works, used, cfg, pool, "cover works", skipped)
    if len(chosen) < cfg.cover_works:
        raise TaskError(f"covers: only {len(chosen)} usable works left, {cfg.cover_works} asked for")
    tracks, jobs = [], []
    for wi, c in enumerate(chosen):
        base = np.random.default_rng([seed, 2, wi])
        bpm = float(base.uniform(*cfg.bpm_range))
        start = _starts(c.notes, 1, cfg.clip_seconds * bpm * cfg.tempo_range[1] / 60, base)[0]
        for v in range(cfg.cover_versions):
            rng = np.random.default_rng([seed, 2, wi, v])
            shift = int(rng.integers(-cfg.max_transpose, cfg.max_transpose + 1))
            tempo = bpm * float(rng.uniform(*cfg.tempo_range))
            perf = _perf(c.notes, rng, cfg, start, cfg.clip_seconds, shift, tempo)
            path = os.path.join(root, "covers", "audio", _slug(c.work.path), f"v{v}.wav")
            jobs.append((perf, cfg.clip_seconds, path, sf_dir))
            tracks.append(Track(_slug(c.work.path), f"v{v}", path))
    _render_all(jobs, pool, "cover versions")
    write_manifest(tracks, os.path.join(root, "covers", "manifest.csv"))
    return {"manifest": "covers/manifest.csv", "works": len(chosen), "versions": cfg.cover_versions,
            "tracks": len(tracks), "work_ids": [c.work.id for c in chosen], "tunes": _tunes(chosen),
            "works_per_corpus": _per_corpus(chosen)}


def _per_corpus(chosen: List[Chosen]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for c in chosen:
        counts[c.work.label] = counts.get(c.work.label, 0) + 1
    return dict(sorted(counts.items()))


def _renderings(notes, cfg: DataConfig, seed: int, wi: int, seconds: float) -> List[Performance]:
    """``cfg.pretrain_renderings`` performances of one excerpt of a work, drawn as cover versions are.

    The base generator (seed, work) draws the tempo and the excerpt; the generator of rendering r
    (seed, work, r) its transposition, tempo factor and programs. The soundfont alternates from a drawn
    first one, and each part gets a program it had in none of the earlier renderings (while the pool
    has one), so no two renderings of a work share their instruments.
    """
    base = np.random.default_rng([seed, 3, wi])
    bpm = float(base.uniform(*cfg.bpm_range))
    start = _starts(notes, 1, seconds * bpm * cfg.tempo_range[1] / 60, base)[0]
    fonts = sorted(SOUNDFONTS)
    first = int(base.integers(len(fonts)))
    n_parts = 1 + max(p for p, *_ in notes)
    had: List[set] = [set() for _ in range(n_parts)]
    out = []
    for r in range(cfg.pretrain_renderings):
        rng = np.random.default_rng([seed, 3, wi, r])
        shift = int(rng.integers(-cfg.max_transpose, cfg.max_transpose + 1))
        tempo = bpm * float(rng.uniform(*cfg.tempo_range))
        programs = []
        for part in range(n_parts):
            free = [p for p in PROGRAM_POOL if p not in had[part]] or list(PROGRAM_POOL)
            programs.append(int(rng.choice(free)))
            had[part].add(programs[-1])
        out.append(Performance(_looped(notes, start + seconds * tempo / 60), start, tempo, shift, programs,
                               fonts[(first + r) % len(fonts)]))
    return out


def _write_groups(path: str, rows: List[Tuple[str, str]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "group"])
    w.writerows(sorted(rows))
    write_text(path, buf.getvalue())


def build_pretrain(root: str, cfg: DataConfig, seed: int, used: set, pool: _Pool, sf_dir: str,
                   skipped: Dict[str, str]) -> Dict:
    chosen = _take(_interleaved(seed, "pretrain", used), cfg.pretrain_clips, used, cfg, pool, "pretraining works",
                   skipped)
    folder = os.path.join(root, "pretrain")
    jobs, groups = [], []
    for wi, c in enumerate(chosen):
        slug = _slug(c.work.path)
        if cfg.pretrain_renderings == 1:  # the layout and bytes of the single-rendering pool
            rng = np.random.default_rng([seed, 3, wi])
            start = _starts(c.notes, 1, cfg.pretrain_seconds * cfg.bpm_range[1] / 60, rng)[0]
            perfs = {f"rendered/{slug}.wav": _perf(c.notes, rng, cfg, start, cfg.pretrain_seconds)}
        else:
            perfs = {f"rendered/{slug}/r{r}.wav": perf
                     for r, perf in enumerate(_renderings(c.notes, cfg, seed, wi, cfg.pretrain_seconds))}
        for rel, perf in perfs.items():
            jobs.append((perf, cfg.pretrain_seconds, os.path.join(folder, *rel.split("/")), sf_dir))
            groups.append((rel, slug))
    if len(chosen) < cfg.pretrain_clips:
        log.warning("pretraining: only %d usable works left, %d asked for", len(chosen), cfg.pretrain_clips)
    _render_all(jobs, pool, "pretraining clips")
    _write_groups(os.path.join(folder, "groups.csv"), groups)  # build() adds the recordings' rows
    return {"folder": "pretrain", "rendered_clips": len(jobs), "rendered_works": len(chosen),
            "renderings": cfg.pretrain_renderings, "groups": "pretrain/groups.csv", "group_rows": groups,
            "work_ids": [c.work.id for c in chosen], "tunes": _tunes(chosen), "works_per_corpus": _per_corpus(chosen)}


# --------------------------------------------------------------------------- the whole build

def _check_out(out: str, overwrite: bool) -> None:
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out) and not overwrite):
        raise UsageError(f"{out} exists and is not an empty folder; remove it or pass --overwrite")


def recordings_config(cfg: DataConfig, prefix: str = "/") -> "recordings.RecordingsConfig":
    packages = recordings.MUSIC_ONLY + (recordings.GAME_DATA if cfg.game_data else ())
    # without pretraining audio nothing can leak into it: the quiet and duplicate rules, which decode every
    # track, are left out (the quick profile)
    return recordings.RecordingsConfig(packages=packages, eval_tracks=cfg.soundtrack_eval_tracks,
                                       clips_per_track=cfg.soundtrack_clips_per_track, pretrain=cfg.recorded,
                                       decode_all=cfg.recorded, prefix=prefix)


def build(out: str, cfg: DataConfig, seed: int, workers: int, overwrite: bool, profile: str,
          soundfont_dir: str = SOUNDFONT_DIR, recordings_prefix: str = "/") -> Dict:
    check_renderer(soundfont_dir)
    _check_out(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = staging_dir(parent, f".tmp-{os.path.basename(os.path.abspath(out))}-")
    pool = _Pool(workers)
    try:
        used: set = set()
        skipped: Dict[str, str] = {}
        manifest = {
            "seed": seed, "profile": profile, "config": dataclasses.asdict(cfg), "sample_rate": SR,
            "versions": versions(),
            "soundfonts": {k: {"file": v, "sha256": sha256_file(os.path.join(soundfont_dir, v)), "licence": LICENCES[k]}
                           for k, v in SOUNDFONTS.items()},
            "program_pool": list(PROGRAM_POOL),
            "style": build_style(tmp, cfg, seed, used, pool, workers, soundfont_dir, skipped),
            "covers": build_covers(tmp, cfg, seed, used, pool, soundfont_dir, skipped),
            "pretrain": build_pretrain(tmp, cfg, seed, used, pool, soundfont_dir, skipped),
        }
        groups = manifest["pretrain"].pop("group_rows")
        recorded: List[str] = []
        rcfg = recordings_config(cfg, recordings_prefix)
        have = [n for n in rcfg.packages if recordings.installed(recordings.BY_NAME[n], rcfg.prefix)]
        if (cfg.soundtrack or cfg.recorded) and not have:
            log.warning("no recorded music: none of %s is installed (%s); the data has no recordings tasks",
                        ", ".join(rcfg.packages), recordings.apt_command(rcfg.packages))
        elif cfg.soundtrack or cfg.recorded:
            rec = manifest["recordings"] = recordings.build(tmp, rcfg, seed, pool, workers)
            recorded = rec.pop("pretrain_files")
            groups += [(f, os.path.splitext(f)[0]) for f in recorded]  # each recording is its own group
        manifest["pretrain"]["recorded_tracks"] = recorded
        if recorded:
            _write_groups(os.path.join(tmp, "pretrain", "groups.csv"), groups)
        manifest["playlists"] = build_playlists(tmp, cfg, seed, manifest["style"].pop("tracks"))
        manifest["skipped_works"] = dict(sorted(skipped.items()))
        write_json(os.path.join(tmp, "manifest.json"), manifest)
        write_text(os.path.join(tmp, "LICENSES.md"), LICENSES_MD + (recordings.licences_md(manifest["recordings"])
                                                                   if "recordings" in manifest else ""))
        pool.close()
        _check_out(out, overwrite)  # nothing appeared there while building
        replace_dir(tmp, out)
    except BaseException:
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output folder (built beside it, renamed into place)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="full",
                   help="full: 8 x 40 style clips, 60 x 4 covers, 240 pretraining clips; small: a tiny demo; quick: `mart-bench run --quick`; "
                        "multi: full with 3 renderings of each pretraining work")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes parsing and rendering (default 2)")
    p.add_argument("--clips-per-class", type=int, help="override the profile")
    p.add_argument("--cover-works", type=int, help="override the profile")
    p.add_argument("--pretrain-clips", type=int, help="override the profile")
    p.add_argument("--pretrain-renderings", type=int, metavar="K",
                   help="override the profile: render each pretraining work K times (soundfont, programs, "
                        "transposition, tempo), the same excerpt, as rendered/<work>/r<k>.wav")
    p.add_argument("--clips-per-work", type=int, help="override the profile (style clips cut from one work)")
    p.add_argument("--clip-seconds", type=float, help="override the profile (style and cover clips)")
    p.add_argument("--no-recorded", action="store_true", help="leave the recorded music out of the pretraining pool")
    p.add_argument("--no-soundtrack", action="store_true",
                   help="build no evaluation on recordings (soundtrack identification, same-track retrieval)")
    p.add_argument("--game-data", action="store_true",
                   help="recordings from the game data packages too (" + ", ".join(recordings.GAME_DATA) +
                        "; 145-381 MB downloads each: " + recordings.apt_command(recordings.GAME_DATA) + ")")
    p.add_argument("--recordings-root", default="/", dest="recordings_prefix",
                   help="read the packages' music under this folder instead of / (e.g. after `apt-get download "
                        "PKG && dpkg -x PKG.deb ROOT` without root)")
    p.add_argument("--soundfont-dir", default=SOUNDFONT_DIR, help=f"folder holding {', '.join(SOUNDFONTS.values())}")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def _config(args) -> DataConfig:
    over = {k: getattr(args, k) for k in ("clips_per_class", "clips_per_work", "cover_works", "pretrain_clips",
                                          "pretrain_renderings", "clip_seconds") if getattr(args, k) is not None}
    for k in ("clips_per_class", "clips_per_work", "cover_works", "pretrain_renderings"):
        if k in over and over[k] < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be at least 1")
    if "pretrain_clips" in over and over["pretrain_clips"] < 0:
        raise UsageError("--pretrain-clips must not be negative")
    if "clip_seconds" in over and not 1.0 <= over["clip_seconds"] <= 60.0:
        raise UsageError("--clip-seconds must be within 1-60")
    if args.no_recorded:
        over["recorded"] = False
    if args.no_soundtrack:
        over["soundtrack"] = False
    if args.game_data:
        over["game_data"] = True
    cfg = dataclasses.replace(PROFILES[args.profile], **over)
    if cfg.clips_per_class < 3:
        raise UsageError("--clips-per-class must be at least 3 (one work in each of train, valid and test)")
    if cfg.clips_per_class < 3 * cfg.clips_per_work:  # at least one work per split
        cfg = dataclasses.replace(cfg, clips_per_work=cfg.clips_per_class // 3)
    return cfg


@command("mart-bench data")
def run(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _stop)
    t0 = time.time()
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    cfg = _config(args)
    m = build(args.out, cfg, args.seed, args.workers, args.overwrite, args.profile, args.soundfont_dir,
              args.recordings_prefix)
    s = m["style"]
    print(f"wrote {args.out} in {time.time() - t0:.0f} s: style {len(s['classes'])} classes, clips {s['split_sizes']}; "
          f"covers {m['covers']['works']} works x {m['covers']['versions']} versions; pretraining "
          f"{m['pretrain']['rendered_works']} works x {m['pretrain']['renderings']} renderings + "
          f"{len(m['pretrain']['recorded_tracks'])} recordings; {m['playlists']['playlists']} playlists"
          + (f"; soundtrack task {m['recordings']['eval_clips']} clips of {m['recordings']['eval_tracks']} tracks, "
             + (f"{m['recordings']['pretrain_hours']:.1f} h of recordings for pretraining" if m["recordings"]["pretrain_hours"]
                else "no recordings for pretraining") if "recordings" in m else ""))
    return 0
