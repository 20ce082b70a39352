"""``mart-bench data``: render the offline real-music benchmark sets, deterministically.

    mart-bench data --out bench_data [--profile full|small] [--seed 0] [--workers 2]

* style: ``N`` classes from different corpora (``scores.STYLE_CORPORA``), clips of ``clip_seconds``
  with GM programs drawn per part from one shared pool (timbre carries no label), split
  train/valid/test by work -> HEAR task ``tasks/music_style-1.0.0-full`` (``mart-hear-task`` format);
* covers: works x versions (soundfont, program set, transposition within ±3 semitones, tempo
  x0.8-1.2, the same excerpt) -> ``covers/manifest.csv`` for ``mart-cover-song``;
* pretrain: clips of other works (no overlap with the two sets above), plus, when installed, the
  recorded wesnoth music tracks resampled to 16 kHz -> ``pretrain/`` for ``mart-pretrain --data``.

Same seed and package versions -> the same bytes (every clip has its own seeded generator and a
fresh synth). Everything is built in a temp folder beside ``--out`` and renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .render import PROGRAM_POOL, SOUNDFONT_DIR, SOUNDFONTS, Performance, RenderError, check_renderer, render
from .scores import STYLE_CORPORA, Work, list_works, parse_notes, span

SR = 16000
RECORDED_DIR = "/usr/share/games/wesnoth/1.16/data/core/music"


@dataclass
class DataConfig:
    clip_seconds: float = 15.0  # style and cover clips (10-30 s)
    clips_per_class: int = 40
    clips_per_work: int = 2  # style clips cut from one work (different excerpts)
    split: Tuple[float, float, float] = (0.7, 0.15, 0.15)  # train / valid / test works
    cover_works: int = 60
    cover_versions: int = 4
    max_transpose: int = 3
    tempo_range: Tuple[float, float] = (0.8, 1.2)
    bpm_range: Tuple[float, float] = (72.0, 132.0)
    pretrain_clips: int = 240
    pretrain_seconds: float = 20.0
    recorded: bool = True  # add the wesnoth recordings to the pretraining pool when installed
    min_beats: float = 16.0  # works shorter than this are not used


PROFILES = {
    "full": DataConfig(),
    "small": DataConfig(clip_seconds=10.0, clips_per_class=6, clips_per_work=1, cover_works=12,
                        pretrain_clips=16, pretrain_seconds=10.0, recorded=False),
}


class DataBuildError(RuntimeError):
    pass


def _slug(work: Work) -> str:
    base = os.path.splitext(work.path)[0].replace(os.sep, "_").replace("/", "_")
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in base)
    return base + (f"_{work.number}" if work.number is not None else "")


def _write_wav(path: str, x: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x, SR, subtype="PCM_16")


def _parse_many(works: List[Work], workers: int) -> List[Optional[list]]:
    if workers <= 1:
        return [parse_notes(w) for w in works]
    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(parse_notes, works, chunksize=4)


def _take(candidates: List[Work], n: int, used: set, min_beats: float, workers: int, desc: str):
    """The first ``n`` usable works of ``candidates`` (in order) not in ``used`` -> [(work, notes)]."""
    out, i = [], 0
    pending = [w for w in candidates if w.id not in used]
    with tqdm(total=n, desc=desc, unit="work", disable=None, leave=False) as bar:
        while len(out) < n and i < len(pending):
            batch = pending[i : i + max(8, 2 * (n - len(out)))]
            i += len(batch)
            for w, notes in zip(batch, _parse_many(batch, workers)):
                if notes and span(notes) >= min_beats and len(out) < n:
                    out.append((w, notes))
                    used.add(w.id)
                    bar.update(1)
    return out


def _perf(notes, rng: np.random.Generator, cfg: DataConfig, start: float, transpose: int = 0,
          bpm: Optional[float] = None) -> Performance:
    n_parts = 1 + max(p for p, *_ in notes)
    return Performance(notes, start, bpm or float(rng.uniform(*cfg.bpm_range)), transpose,
                       [int(rng.choice(PROGRAM_POOL)) for _ in range(n_parts)],
                       str(rng.choice(sorted(SOUNDFONTS))))


def _starts(notes, k: int, beats: float, rng: np.random.Generator) -> List[float]:
    last = max(0.0, span(notes) - beats)
    return sorted(float(x) for x in rng.uniform(0, last, size=k)) if last > 0 else [0.0] * k


def build_style(root: str, cfg: DataConfig, seed: int, used: set, workers: int) -> Dict:
    from benchmarks.hear_tasks.sources import MULTICLASS_METRICS
    from benchmarks.hear_tasks.taskfolder import Item, TaskSpec, build_task

    items, info = [], {}
    n_works = -(-cfg.clips_per_class // cfg.clips_per_work)
    for ci, label in enumerate(sorted(STYLE_CORPORA)):
        cands = list_works(label)
        random.Random(f"{seed}-{label}").shuffle(cands)
        chosen = _take(cands, n_works, used, cfg.min_beats, workers, f"style {label}")
        if len(chosen) < 3:
            raise DataBuildError(f"style class {label}: only {len(chosen)} usable works")
        n_val = max(1, round(len(chosen) * cfg.split[1]))
        n_test = max(1, round(len(chosen) * cfg.split[2]))
        splits = ["train"] * (len(chosen) - n_val - n_test) + ["valid"] * n_val + ["test"] * n_test
        clips = 0
        for wi, ((work, notes), split) in enumerate(zip(chosen, splits)):
            rng = np.random.default_rng([seed, 1, ci, wi])
            k = min(cfg.clips_per_work, cfg.clips_per_class - clips)
            for j, start in enumerate(_starts(notes, k, cfg.clip_seconds * cfg.bpm_range[1] / 60, rng)):
                path = os.path.join(root, "raw", "style", label, f"{_slug(work)}_{j}.wav")
                _write_wav(path, render(_perf(notes, rng, cfg, start), cfg.clip_seconds, SR))
                items.append(Item(path, f"{label}.{_slug(work)}_{j}", [label], split))
                clips += 1
        info[label] = {"works": {s: sorted(w.id for (w, _), sp in zip(chosen, splits) if sp == s)
                                 for s in ("train", "valid", "test")}, "clips": clips}
    spec = TaskSpec("music_style", "1.0.0", "multiclass", "trainvaltest", cfg.clip_seconds, MULTICLASS_METRICS,
                    sorted(STYLE_CORPORA))
    path, skipped = build_task(spec, items, os.path.join(root, "tasks"), [SR], workers=1)
    if skipped:
        raise DataBuildError(f"style task: {len(skipped)} rendered clips could not be read back: {skipped[:3]}")
    return {"task": os.path.relpath(path, root), "classes": info,
            "split_sizes": {s: sum(it.split == s for it in items) for s in ("train", "valid", "test")}}


def _pool_works(seed: int, salt: str) -> List[Work]:
    works = [w for label in sorted(STYLE_CORPORA) for w in list_works(label)]
    random.Random(f"{seed}-{salt}").shuffle(works)
    return works


def build_covers(root: str, cfg: DataConfig, seed: int, used: set, workers: int) -> Dict:
    from benchmarks.cover_song.datasets import Track, write_manifest

    chosen = _take(_pool_works(seed, "covers"), cfg.cover_works, used, cfg.min_beats, workers, "cover works")
    tracks = []
    for wi, (work, notes) in enumerate(tqdm(chosen, desc="cover versions", disable=None, leave=False)):
        base = np.random.default_rng([seed, 2, wi])
        bpm = float(base.uniform(*cfg.bpm_range))
        start = _starts(notes, 1, cfg.clip_seconds * bpm * cfg.tempo_range[1] / 60, base)[0]
        for v in range(cfg.cover_versions):
            rng = np.random.default_rng([seed, 2, wi, v])
            shift = int(rng.integers(-cfg.max_transpose, cfg.max_transpose + 1))
            perf = _perf(notes, rng, cfg, start, shift, bpm * float(rng.uniform(*cfg.tempo_range)))
            path = os.path.join(root, "covers", "audio", _slug(work), f"v{v}.wav")
            _write_wav(path, render(perf, cfg.clip_seconds, SR))
            tracks.append(Track(_slug(work), f"v{v}", path))
    write_manifest(tracks, os.path.join(root, "covers", "manifest.csv"))
    return {"manifest": "covers/manifest.csv", "works": len(chosen), "versions": cfg.cover_versions,
            "work_ids": [w.id for w, _ in chosen]}


def build_pretrain(root: str, cfg: DataConfig, seed: int, used: set, workers: int) -> Dict:
    chosen = _take(_pool_works(seed, "pretrain"), cfg.pretrain_clips, used, cfg.min_beats, workers, "pretraining works")
    for wi, (work, notes) in enumerate(tqdm(chosen, desc="pretraining clips", disable=None, leave=False)):
        rng = np.random.default_rng([seed, 3, wi])
        start = _starts(notes, 1, cfg.pretrain_seconds * cfg.bpm_range[1] / 60, rng)[0]
        _write_wav(os.path.join(root, "pretrain", "rendered", f"{_slug(work)}.wav"),
                   render(_perf(notes, rng, cfg, start), cfg.pretrain_seconds, SR))
    recorded = []
    if cfg.recorded and os.path.isdir(RECORDED_DIR):
        import torch
        import torchaudio.functional as AF

        for f in tqdm(sorted(os.listdir(RECORDED_DIR)), desc="recorded music", disable=None, leave=False):
            if not f.endswith(".ogg"):
                continue
            x, sr = sf.read(os.path.join(RECORDED_DIR, f), dtype="float32", always_2d=True)
            y = AF.resample(torch.from_numpy(x.mean(axis=1)), sr, SR).numpy()
            _write_wav(os.path.join(root, "pretrain", "recorded", os.path.splitext(f)[0] + ".wav"), y)
            recorded.append(f)
    return {"folder": "pretrain", "rendered_clips": len(chosen), "recorded_tracks": recorded,
            "work_ids": [w.id for w, _ in chosen]}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


LICENSES = """# Licences of the rendered benchmark data

- Scores: the music21 corpus (https://www.music21.org). Its files come from many sources with their
  own terms; not all of them are free for commercial use (see music21's corpus documentation).
- Soundfonts: FluidR3_GM (Debian fluid-soundfont-gm; MIT licence) and TimGM6mb (Debian
  timgm6mb-soundfont; GPL-2).
- Recorded music in pretrain/recorded (when present): Battle for Wesnoth music (Debian
  wesnoth-1.16-music; GPL-2).
The rendered audio is for research benchmarking; check these terms before redistributing it.
"""


def build(out: str, cfg: DataConfig, seed: int, workers: int, overwrite: bool, profile: str,
          soundfont_dir: str = SOUNDFONT_DIR) -> Dict:
    check_renderer(soundfont_dir)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise DataBuildError(f"{out} exists and is not empty; remove it or pass --overwrite")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-bench-data-", dir=parent)
    try:
        used: set = set()
        import fluidsynth
        import music21

        manifest = {
            "seed": seed, "profile": profile, "config": dataclasses.asdict(cfg), "sample_rate": SR,
            "versions": {"music21": music21.__version__, "pyfluidsynth": getattr(fluidsynth, "__version__", "?")},
            "soundfonts": {k: {"file": v, "sha256": _sha256(os.path.join(soundfont_dir, v)),
                               "licence": "MIT" if k == "FluidR3_GM" else "GPL-2"} for k, v in SOUNDFONTS.items()},
            "style": build_style(tmp, cfg, seed, used, workers),
            "covers": build_covers(tmp, cfg, seed, used, workers),
            "pretrain": build_pretrain(tmp, cfg, seed, used, workers),
        }
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        with open(os.path.join(tmp, "LICENSES.md"), "w") as f:
            f.write(LICENSES)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output folder (built beside it, renamed into place)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes parsing scores")
    p.add_argument("--clips-per-class", type=int, help="override the profile")
    p.add_argument("--cover-works", type=int, help="override the profile")
    p.add_argument("--pretrain-clips", type=int, help="override the profile")
    p.add_argument("--clip-seconds", type=float, help="override the profile")
    p.add_argument("--no-recorded", action="store_true", help="leave the recorded music out of the pretraining pool")
    p.add_argument("--soundfont-dir", default=SOUNDFONT_DIR)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> int:
    cfg = PROFILES[args.profile]
    over = {k: getattr(args, k) for k in ("clips_per_class", "cover_works", "pretrain_clips", "clip_seconds")
            if getattr(args, k) is not None}
    if args.no_recorded:
        over["recorded"] = False
    cfg = dataclasses.replace(cfg, **over)
    if over.get("clips_per_class", cfg.clips_per_class) < cfg.clips_per_work:
        cfg = dataclasses.replace(cfg, clips_per_work=1)
    try:
        m = build(args.out, cfg, args.seed, args.workers, args.overwrite, args.profile, args.soundfont_dir)
    except (DataBuildError, RenderError) as e:
        print(f"mart-bench data: error: {e}", file=sys.stderr)
        return 2
    s = m["style"]
    print(f"wrote {args.out}: style {len(s['classes'])} classes, clips {s['split_sizes']}; covers "
          f"{m['covers']['works']} works x {m['covers']['versions']} versions; pretraining "
          f"{m['pretrain']['rendered_clips']} rendered clips + {len(m['pretrain']['recorded_tracks'])} recordings")
    return 0
