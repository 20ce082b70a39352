"""The one way audio files are found and read: extensions, listing, whole files, crops and segments.

soundfile (libsndfile) decodes, channels are averaged to mono, torchaudio resamples. Every problem is an
:class:`AudioError` that names the file.
"""
from __future__ import annotations

import logging
import math
import os
import random
import stat
from typing import List, Optional

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import AudioError

log = logging.getLogger(__name__)

# what libsndfile (>= 1.1) decodes; m4a/aac are not among them: convert those first (e.g. with ffmpeg)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")


def is_audio_name(name: str) -> bool:
    """An audio file's name; hidden files (``._x.wav`` resource forks and the like) are not audio."""
    return name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith(".")


def is_regular(path: str) -> bool:
    """Only regular files (or links to them) are opened: a FIFO or device named ``*.wav`` would block."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def find_audio_files(root: str) -> List[str]:
    """Regular audio files under ``root``, recursively, sorted; unlistable folders and FIFOs are warned about."""

    def unlistable(e: OSError) -> None:
        log.warning("%s: cannot be listed (%s); its files are skipped", e.filename, e.strerror)

    found = []
    for d, _, names in os.walk(root, onerror=unlistable):
        for n in names:
            if not is_audio_name(n):
                continue
            p = os.path.join(d, n)
            if is_regular(p):
                found.append(p)
            else:
                log.warning("%s: not a regular file (a pipe, device or broken link); skipped", p)
    return sorted(found)


def to_mono(data: np.ndarray) -> torch.Tensor:
    """[frames, channels] -> mono float32 [frames]."""
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))


def _crop(x, n: int, rng: Optional[random.Random]):
    if len(x) <= n:
        return x
    start = rng.randint(0, len(x) - n) if rng is not None else (len(x) - n) // 2
    return x[start : start + n]


def load_audio(path: str, sample_rate: int = 16000, max_seconds: Optional[float] = None,
               crop_samples: Optional[int] = None, rng: Optional[random.Random] = None) -> torch.Tensor:
    """A file -> mono float32 [T] at ``sample_rate``.

    ``max_seconds``: read only the first seconds. ``crop_samples``: at most that many samples (at
    ``sample_rate``), from a random offset drawn with ``rng``, or from the middle when ``rng`` is None;
    the crop is taken before resampling, so long files cost little. An empty file, or one holding NaN
    or Inf samples, is an AudioError.
    """
    try:
        src = os.fsencode(path) if isinstance(path, str) else path  # a name that is not UTF-8 opens too
        info = sf.info(src)
        frames = -1 if max_seconds is None else max(1, int(max_seconds * info.samplerate))
        data, sr = sf.read(src, frames=frames, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(f"cannot read {path}: {e}") from None
    if crop_samples is not None and sr != sample_rate:  # crop before resampling to save work
        data = _crop(data, int(math.ceil(crop_samples * sr / sample_rate)) + 1, rng)
    if data.shape[0] == 0:
        raise AudioError(f"{path} holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path} holds NaN or Inf samples")
    wav = to_mono(data)
    if sr != sample_rate:
        wav = AF.resample(wav, sr, sample_rate)
    if crop_samples is not None:
        wav = _crop(wav, crop_samples, rng).contiguous()
    return wav


def load_segment(path: str, file_rate: int, start_seconds: float, num_samples: int,
                 sample_rate: int = 16000) -> torch.Tensor:
    """Read only [start, start + num_samples / sample_rate) of a file (at ``file_rate``) as mono float32 at
    ``sample_rate``, zero-padded at the end."""
    sr = file_rate
    # resampler context on each side: a whole number of samples at both rates, at least 64
    unit = sr // math.gcd(sr, sample_rate)
    margin = unit * -(-64 // unit) if sr != sample_rate else 0
    start = max(0, int(round(start_seconds * sr)))
    need = int(np.ceil(num_samples * sr / sample_rate))
    lo = max(0, start - margin)
    try:
        data, _ = sf.read(path, start=lo, frames=need + (start - lo) + margin, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"cannot read {path}: {e}") from e
    x = to_mono(data)
    if sr != sample_rate:
        x = AF.resample(x, sr, sample_rate)
        skip = int(round((start - lo) * sample_rate / sr))
        x = x[skip:]
    x = x[:num_samples]
    return torch.nn.functional.pad(x, (0, num_samples - x.shape[0]))
