"""Run-time fixes that let s3prl 0.4.18 import and run on torchaudio >= 2.9 and torch >= 2.6.

Every fix only fills in what is missing; nothing in s3prl's installed files is changed.

* ``torchaudio.set_audio_backend`` (removed in 2.9): s3prl calls it at import time and in
  ``run_downstream.main``; backends are gone, so it becomes a no-op.
* ``torchaudio.sox_effects`` (removed in 2.9): imported by a few s3prl upstreams at import time;
  a stand-in module whose functions raise a clear error if anything actually calls them.
* ``torchaudio.load`` / ``save`` / ``info`` (need torchcodec since 2.9): s3prl's HEAR problems resample
  their corpus with them; without torchcodec they read and write through soundfile.
* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and s3prl's resume (``-e``) loads a
  checkpoint holding its ``argparse.Namespace``: Namespace is allow-listed for the safe loader, so
  resuming works without turning safe loading off.
* ``torch.utils.tensorboard`` needs the ``tensorboard`` package, which s3prl's problem runner imports
  but does not declare; when it is absent, tensorboardX's ``SummaryWriter`` (same API, already
  needed by ``run_downstream``) stands in.
* ``editdistance``: imported at the top of s3prl's metrics (used for ASR error rates) but not
  declared; when it is absent, a pure-Python Levenshtein distance stands in.
* ``USE_TF=0`` (unless set): s3prl imports transformers, which would import TensorFlow (installed for
  HEAR) and add about ten seconds to every start.
"""
from __future__ import annotations

import argparse
import os
import sys
import types
from typing import Any, List, Tuple

_APPLIED: List[str] = []


def _no_backend(*args: Any, **kwargs: Any) -> None:
    """torchaudio >= 2.9 has no audio backends to choose from."""


def _no_sox(*args: Any, **kwargs: Any):
    raise RuntimeError("torchaudio.sox_effects was removed in torchaudio 2.9; "
                       "this s3prl feature needs an older torchaudio")


def _version(text: str) -> Tuple[int, int]:
    major, minor = (text.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _torchcodec_available() -> bool:
    try:
        import torchcodec  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken: either way torchaudio's I/O cannot work
        return False
    return True


def sf_load(path, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
            channels_first: bool = True, **kwargs: Any) -> Tuple["torch.Tensor", int]:
    """``torchaudio.load`` through soundfile: float32 [C, T] (or [T, C]) and the sample rate."""
    import soundfile as sf
    import torch

    stop = None if num_frames is None or num_frames < 0 else frame_offset + num_frames
    data, sr = sf.read(str(path), start=frame_offset, stop=stop, dtype="float32", always_2d=True)
    wav = torch.from_numpy(data)  # [T, C]
    return (wav.t().contiguous() if channels_first else wav), sr


def sf_save(path, src, sample_rate: int, channels_first: bool = True, **kwargs: Any) -> None:
    """``torchaudio.save`` through soundfile (16-bit PCM for .wav, the format's default otherwise)."""
    import soundfile as sf

    from ...fileio import atomic_path

    data = src.detach().cpu().float()
    if data.dim() == 1:
        data = data.unsqueeze(0 if channels_first else 1)
    data = data.t() if channels_first else data
    path = str(path)
    ext = os.path.splitext(path)[1]
    with atomic_path(path, suffix=ext) as tmp:
        sf.write(tmp, data.numpy(), int(sample_rate), subtype="PCM_16" if ext.lower() == ".wav" else None)


class _Info(types.SimpleNamespace):
    pass


def sf_info(path, **kwargs: Any) -> _Info:
    """``torchaudio.info`` through soundfile."""
    import soundfile as sf

    i = sf.info(str(path))
    bits = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "PCM_U8": 8, "PCM_S8": 8, "FLOAT": 32, "DOUBLE": 64}
    return _Info(sample_rate=i.samplerate, num_frames=i.frames, num_channels=i.channels,
                 bits_per_sample=bits.get(i.subtype, 0), encoding=i.subtype)


def apply() -> List[str]:
    """Apply the fixes this environment needs (idempotent); returns the names of those applied."""
    if _APPLIED:
        return list(_APPLIED)
    os.environ.setdefault("USE_TF", "0")
    import torch
    import torchaudio

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _no_backend
        _APPLIED.append("torchaudio.set_audio_backend")
    try:
        import torchaudio.sox_effects  # noqa: F401
    except Exception:  # noqa: BLE001 - removed, or present but unusable without the extension
        mod = types.ModuleType("torchaudio.sox_effects")
        mod.apply_effects_tensor = mod.apply_effects_file = mod.effect_names = _no_sox
        sys.modules["torchaudio.sox_effects"] = mod
        torchaudio.sox_effects = mod
        _APPLIED.append("torchaudio.sox_effects")
    if _version(torchaudio.__version__) >= (2, 9) and not _torchcodec_available():
        torchaudio.load, torchaudio.save, torchaudio.info = sf_load, sf_save, sf_info
        _APPLIED.append("torchaudio.load/save/info")
    add_safe = getattr(getattr(torch, "serialization", None), "add_safe_globals", None)
    if add_safe is not None:
        add_safe([argparse.Namespace])
        _APPLIED.append("torch.load: argparse.Namespace")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        _tensorboard_from_tensorboardx()
        _APPLIED.append("torch.utils.tensorboard")
    try:
        import editdistance  # noqa: F401
    except ImportError:
        mod = types.ModuleType("editdistance")
        mod.eval = mod.distance = levenshtein
        sys.modules["editdistance"] = mod
        _APPLIED.append("editdistance")
    return list(_APPLIED)


def levenshtein(a, b) -> int:
    """Edit distance between two sequences (insertions, deletions, substitutions of one item)."""
    a, b = list(a), list(b)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _tensorboard_from_tensorboardx() -> None:
    from tensorboardX import SummaryWriter

    pkg = types.ModuleType("torch.utils.tensorboard")
    writer = types.ModuleType("torch.utils.tensorboard.writer")
    pkg.SummaryWriter = writer.SummaryWriter = SummaryWriter
    pkg.writer = writer
    pkg.__path__ = []  # a package, so ``torch.utils.tensorboard.writer`` can be imported
    sys.modules["torch.utils.tensorboard"] = pkg
    sys.modules["torch.utils.tensorboard.writer"] = writer
