"""Constants and helpers shared by the tests (conftest.py builds its fixtures on them): the repository
root, the tiny model configs, untrained checkpoints, and the tone generators the tests write audio with."""
import hashlib
import math
import os
import sys

import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mart_upstream.models import model_names, tiny_config  # noqa: E402

# Tiny model configs: the real architectures, narrowed and shortened so CPU tests stay fast (each
# model states its own: ``tiny_config`` on its class).
TINY = {name: tiny_config(name) for name in model_names()}


def tree_hashes(root):
    """sha256 of every file under ``root``, by relative path (same seed, same bytes)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def write_checkpoint(path, name, config=None, seed=0):
    """An untrained ``name`` checkpoint at step 0 (``config``: a model config dict, default the tiny one),
    its weights drawn after ``torch.manual_seed(seed)``; -> ``path`` as a string."""
    import torch

    from mart_upstream.checkpoint import save_checkpoint
    from mart_upstream.models import build_model

    torch.manual_seed(seed)
    save_checkpoint(str(path), build_model(name, TINY[name] if config is None else config), name, step=0)
    return str(path)


def tiny_overrides(name):
    """TINY[name] as ``model.key=value`` CLI overrides."""
    out = []
    for k, v in TINY[name].items():
        if isinstance(v, dict):
            out += [f"model.{k}.{kk}={vv}" for kk, vv in v.items()]
        else:
            out.append(f"model.{k}={v}")
    return out


# -- tones -----------------------------------------------------------------------------------------
def tone(seconds, freq=440.0, sr=16000, amplitude=0.3):
    """``amplitude * sin(2 pi freq t)`` over ``int(seconds * sr)`` samples at ``sr``: computed in float64,
    returned as float32."""
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path, x, sr, format=None, subtype=None):
    """``x`` to ``path`` with soundfile (its parent folder made if missing); -> ``path`` as a string."""
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sf.write(path, x, sr, format=format, subtype=subtype)
    return path


def write_tone(path, seconds, freq=440.0, sr=16000, amplitude=0.3, channels=1, format=None, subtype=None):
    """``tone(seconds, freq, sr, amplitude)`` to ``path``, the same in each of ``channels`` channels
    (``format``/``subtype``: soundfile's, its defaults for the file's extension if None)."""
    x = tone(seconds, freq, sr, amplitude)
    return write_audio(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, format, subtype)


def tone_tensor(samples, freq=440.0, sr=16000, amplitude=1.0):
    """``amplitude * sin(2 pi freq t)`` over ``samples`` samples at ``sr`` as a float32 torch tensor
    (computed in float32)."""
    import torch

    t = torch.arange(samples, dtype=torch.float32) / sr
    return amplitude * torch.sin(2 * math.pi * freq * t)
