"""A small music-like audio set the project generates itself (demo job and tests).

Each track: a random key and tempo, a melody and a bass line of harmonic notes with a random timbre
(number and decay of harmonics) and an attack/release envelope, and a noise-burst percussion track.
"""
from __future__ import annotations

import os
from typing import List

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..fileio import atomic_path

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def _voice(n: int, sr: int, rng: np.random.Generator, midi_lo: int, scale: np.ndarray, tonic: int,
           beat: int, gain: float) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    harmonics = rng.integers(2, 9)
    weights = rng.uniform(0.3, 0.9) ** np.arange(harmonics)
    pos = 0
    while pos < n:
        dur = int(beat * rng.choice([0.5, 1, 1, 2]))
        seg = min(dur, n - pos)
        degree = rng.integers(0, len(scale) * 2)
        midi = midi_lo + tonic + scale[degree % len(scale)] + 12 * (degree // len(scale))
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        t = np.arange(seg) / sr
        k = np.arange(1, harmonics + 1)[:, None]
        ok = (k[:, 0] * f0) < sr / 2
        tone = (weights[ok, None] * np.sin(2 * np.pi * f0 * k[ok] * t)).sum(0)
        env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.0, 6.0))
        out[pos : pos + seg] += gain * tone * env
        pos += dur
    return out


def render_synthetic_clip(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like mono float32 signal, peak 0.5."""
    n = int(round(seconds * sample_rate))
    tonic = int(rng.integers(0, 12))
    scale = MAJOR if rng.random() < 0.5 else MINOR
    beat = int(sample_rate * 60.0 / rng.uniform(70, 160))
    x = _voice(n, sample_rate, rng, 60, scale, tonic, beat, 1.0)
    x += _voice(n, sample_rate, rng, 36, scale, tonic, 2 * beat, 0.7)
    if rng.random() < 0.7:  # percussion: decaying noise bursts on the beat
        burst = int(0.05 * sample_rate)
        env = np.exp(-np.arange(burst) / (0.01 * sample_rate))
        for start in range(0, n, beat):
            seg = min(burst, n - start)
            x[start : start + seg] += 0.3 * rng.standard_normal(seg) * env[:seg]
    peak = np.abs(x).max()
    return (0.5 * x / peak if peak > 0 else x).astype(np.float32)


def make_synthetic_dataset(out_dir: str, n_files: int = 16, seconds: float = 12.0, sample_rate: int = 16000,
                           seed: int = 0, progress: bool = True) -> List[str]:
    """Write ``n_files`` 16-bit wav tracks ``out_dir/track_000.wav``...; the same seed gives the same bytes."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in tqdm(range(n_files), desc="synthesising audio", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, i])
        x = render_synthetic_clip(seconds, sample_rate, rng)
        path = os.path.join(out_dir, f"track_{i:03d}.wav")
        with atomic_path(path, suffix=".wav") as tmp:
            sf.write(tmp, x, sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths
