"""Note lists -> 16 kHz mono audio with fluidsynth (pyfluidsynth, in process, no audio driver).

Each clip is rendered by a fresh synth with reverb and chorus off, so its samples depend only on
its own notes, programs and soundfont (bit-identical across runs and processes; a reused synth
carries its state from one clip to the next). An idle synth per soundfont is
kept loaded in each process so that fluidsynth's sample cache makes the fresh synths' loads cheap.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from mart_upstream.errors import MartError

from .scores import Note

SOUNDFONT_DIR = "/usr/share/sounds/sf2"
SOUNDFONTS = {"FluidR3_GM": "FluidR3_GM.sf2", "TimGM6mb": "TimGM6mb.sf2"}
INSTALL_HINT = ("apt-get install fluidsynth libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont "
                "&& pip install pyfluidsynth music21")
# GM programs shared by every class, so timbre carries no label
PROGRAM_POOL = (0, 4, 6, 19, 21, 24, 40, 41, 42, 46, 48, 52, 56, 60, 68, 70, 71, 73)


class RenderError(MartError):
    """fluidsynth, music21 or a soundfont is missing or cannot be loaded: one line naming what to install."""


def soundfont_path(name: str, folder: str = SOUNDFONT_DIR) -> str:
    path = os.path.join(folder, SOUNDFONTS[name])
    if not os.path.isfile(path):
        raise RenderError(f"soundfont {path} is missing; install it: {INSTALL_HINT}")
    return path


def check_renderer(folder: str = SOUNDFONT_DIR) -> None:
    """Raise RenderError naming what to install when pyfluidsynth, music21 or a soundfont is missing."""
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth)
    except Exception as e:  # noqa: BLE001 - ImportError or a missing libfluidsynth
        raise RenderError(f"pyfluidsynth / libfluidsynth cannot be loaded ({e}); install: {INSTALL_HINT}") from None
    try:
        import music21  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise RenderError(f"music21 cannot be imported ({e}); install: pip install music21") from None
    for name in SOUNDFONTS:
        soundfont_path(name, folder)


def versions() -> Dict[str, str]:
    """Versions the rendered bytes depend on: music21, pyfluidsynth and the fluidsynth library."""
    import ctypes
    from importlib import metadata

    import fluidsynth
    import music21

    try:
        fn = fluidsynth._fl.fluid_version_str
        fn.restype = ctypes.c_char_p
        lib = fn().decode()
    except Exception:  # noqa: BLE001 - an old library without fluid_version_str
        lib = "unknown"
    return {"music21": music21.__version__, "pyfluidsynth": metadata.version("pyfluidsynth"),
            "libfluidsynth": lib, "numpy": np.__version__}


@dataclass
class Performance:
    notes: List[Note]
    start_beat: float
    bpm: float
    transpose: int
    programs: Sequence[int]  # one per part (cycled)
    soundfont: str  # key of SOUNDFONTS


_KEEP_LOADED: Dict[str, object] = {}  # soundfont path -> idle synth holding it in the sample cache


def _keep_loaded(path: str) -> None:
    import fluidsynth

    if path not in _KEEP_LOADED:
        holder = fluidsynth.Synth(samplerate=16000.0)
        if holder.sfload(path) < 0:
            holder.delete()
            raise RenderError(f"fluidsynth could not load {path}")
        _KEEP_LOADED[path] = holder


def render(perf: Performance, seconds: float, sample_rate: int = 16000, folder: str = SOUNDFONT_DIR) -> np.ndarray:
    """-> float32 [seconds * sample_rate], peak-normalised to 0.5 (silence stays zero)."""
    import fluidsynth

    n_total = int(round(seconds * sample_rate))
    beat = 60.0 / perf.bpm
    events = []  # (sample, kind 0=off 1=on, channel, key)
    for part, onset, dur, pitch in perf.notes:
        t = (onset - perf.start_beat) * beat
        if t < 0 or t >= seconds:
            continue
        key = pitch + perf.transpose
        if not 0 <= key < 128:
            continue
        ch = part % 16 if part % 16 != 9 else 10  # channel 10 (index 9) is percussion in GM
        on = int(round(t * sample_rate))
        off = min(n_total, int(round((t + dur * beat) * sample_rate)))
        events += [(on, 1, ch, key), (max(off, on + 1), 0, ch, key)]
    events.sort()
    path = soundfont_path(perf.soundfont, folder)
    _keep_loaded(path)
    fs = fluidsynth.Synth(samplerate=float(sample_rate), gain=0.4)
    try:
        fs.setting("synth.reverb.active", 0)
        fs.setting("synth.chorus.active", 0)
        sfid = fs.sfload(path)
        if sfid < 0:
            raise RenderError(f"fluidsynth could not load {perf.soundfont}")
        for ch in range(16):
            if ch != 9:
                fs.program_select(ch, sfid, 0, int(perf.programs[ch % len(perf.programs)]))
        out, pos = [], 0
        for sample, kind, ch, key in events + [(n_total, -1, 0, 0)]:
            if sample > pos:
                out.append(np.asarray(fs.get_samples(sample - pos), dtype=np.float32))
                pos = sample
            if kind == 1:
                fs.noteon(ch, key, 90)
            elif kind == 0:
                fs.noteoff(ch, key)
    finally:
        fs.delete()
    stereo = np.concatenate(out) if out else np.zeros(2 * n_total, np.float32)
    x = stereo.reshape(-1, 2).mean(axis=1)[:n_total]
    x = np.pad(x, (0, n_total - len(x)))
    peak = np.abs(x).max()
    return (0.5 * x / peak).astype(np.float32) if peak > 0 else x.astype(np.float32)
