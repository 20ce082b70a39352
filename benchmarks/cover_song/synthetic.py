"""A generated cover set: several works, each rendered as versions that differ in timbre, key and tempo.

A work is a melody and a bass line (scale degrees and durations in beats, a mode and a tonic); a
version renders it with its own harmonic timbres, a transposition of up to ±``max_transpose``
semitones, a tempo factor in ``tempo_range`` and, at random, percussion. Same seed, same bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import soundfile as sf

from mart_upstream.fileio import atomic_path

from mart_upstream.tasks.covers import Track, write_manifest

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


@dataclass
class CoverSetConfig:
    works: int = 8
    versions: int = 4
    seconds: float = 8.0
    sample_rate: int = 16000
    max_transpose: int = 3
    tempo_range: Tuple[float, float] = (0.8, 1.2)
    base_bpm: Tuple[float, float] = (80.0, 130.0)


def _line(rng: np.random.Generator, beats: float, choices=(0.5, 1.0, 1.0, 2.0)) -> List[Tuple[int, float]]:
    notes, t = [], 0.0
    while t < beats:
        d = float(rng.choice(choices))
        notes.append((int(rng.integers(0, 14)), d))
        t += d
    return notes


def _render(notes, midi_lo, scale, tonic, beat_s, sr, n, timbre, gain) -> np.ndarray:
    harmonics, decay, env_rate = timbre
    out = np.zeros(n)
    w = decay ** np.arange(harmonics)
    pos = 0
    for degree, dur in notes:
        seg = min(int(dur * beat_s * sr), n - pos)
        if seg <= 0:
            break
        midi = midi_lo + tonic + scale[degree % 7] + 12 * (degree // 7)
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        t = np.arange(seg) / sr
        k = np.arange(1, harmonics + 1)
        ok = k * f0 < sr / 2
        tone = (w[ok, None] * np.sin(2 * np.pi * f0 * k[ok, None] * t)).sum(0)
        out[pos : pos + seg] += gain * tone * np.minimum(1.0, t / 0.01) * np.exp(-t * env_rate)
        pos += seg
    return out


def render_version(work_seed: int, version_seed: int, cfg: CoverSetConfig) -> np.ndarray:
    wr = np.random.default_rng([work_seed])
    scale = MAJOR if wr.random() < 0.5 else MINOR
    tonic = int(wr.integers(0, 12))
    bpm = wr.uniform(*cfg.base_bpm)
    beats = cfg.seconds * cfg.tempo_range[1] * bpm / 60 + 2
    melody, bass = _line(wr, beats), _line(wr, beats, (1.0, 2.0))
    vr = np.random.default_rng([work_seed, version_seed, 1])
    shift = int(vr.integers(-cfg.max_transpose, cfg.max_transpose + 1))
    beat_s = 60.0 / (bpm * vr.uniform(*cfg.tempo_range))
    sr, n = cfg.sample_rate, int(cfg.seconds * cfg.sample_rate)

    def timbre():
        return int(vr.integers(1, 9)), float(vr.uniform(0.3, 0.9)), float(vr.uniform(0.5, 6.0))

    x = _render(melody, 60, scale, tonic + shift, beat_s, sr, n, timbre(), 1.0)
    x += _render(bass, 36, scale, tonic + shift, beat_s, sr, n, timbre(), 0.6)
    if vr.random() < 0.5:
        burst = int(0.05 * sr)
        env = np.exp(-np.arange(burst) / (0.01 * sr))
        for s in range(0, n, int(beat_s * sr)):
            seg = min(burst, n - s)
            x[s : s + seg] += 0.3 * vr.standard_normal(seg) * env[:seg]
    return (0.5 * x / max(np.abs(x).max(), 1e-9)).astype(np.float32)


def make_cover_set(out_dir: str, cfg: CoverSetConfig = CoverSetConfig(), seed: int = 0) -> str:
    """Write ``out_dir/audio/w<i>/v<j>.wav`` and ``out_dir/manifest.csv``; returns the manifest path."""
    tracks = []
    for i in range(cfg.works):
        for j in range(cfg.versions):
            path = os.path.join(out_dir, "audio", f"w{i:03d}", f"v{j}.wav")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_path(path, suffix=".wav") as tmp:
                sf.write(tmp, render_version(seed * 100003 + i, j, cfg), cfg.sample_rate, subtype="PCM_16")
            tracks.append(Track(f"w{i:03d}", f"v{j}", path))
    manifest = os.path.join(out_dir, "manifest.csv")
    write_manifest(tracks, manifest)
    return manifest
