"""IRMAS predominant-instrument classification, the training data as distributed (Bosch et al., ISMIR 2012;
strategies paper §4.3, after Kim et al. 2020):

    ROOT/IRMAS-TrainingData/<inst>/<name>.wav    6,705 excerpts of 3 s, 44.1 kHz stereo

with ``<inst>`` one of the 11 instruments (``INSTRUMENTS``: cel cla flu gac gel org pia sax tru vio voi)
and ``[<inst>]`` in the file name (e.g. ``[cel][cla]0001__1.wav``, ``008__[cel][nod][cla]0058__2.wav``:
the predominant instrument, then annotations such as drums and genre). The label is the folder; a file
whose name lacks ``[<folder>]`` is a :class:`mart_upstream.errors.TaskError`.

IRMAS publishes no split of its training data, and the strategies paper does not give its own. The
excerpts ``...NNNN__1`` , ``__2``, ``__3`` are consecutive pieces of one recording, so ``recording_of``
groups them and ``split_of`` draws a split by recording (80/10/10 train/dev/test, seeded by a hash of the
recording's name: the same files get the same split everywhere), so no recording is in two splits.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import List

from mart_upstream.errors import TaskError

log = logging.getLogger(__name__)
INSTRUMENTS = ("cel", "cla", "flu", "gac", "gel", "org", "pia", "sax", "tru", "vio", "voi")
TRAINING_DIR = "IRMAS-TrainingData"
SAMPLE_RATE = 44100
SECONDS = 3.0
SPLIT_FRACTIONS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
_EXCERPT = re.compile(r"__\d+$")


@dataclass
class Excerpt:
    path: str
    name: str  # <inst>/<file stem>
    instrument: str
    recording: str
    split: str


def recording_of(stem: str) -> str:
    """The recording an excerpt comes from: its file stem without the trailing ``__<k>``."""
    return _EXCERPT.sub("", stem)


def split_of(recording: str, seed: int = 0) -> str:
    """train / dev / test for a recording: 80/10/10 by a hash of (seed, recording)."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{recording}".encode()).digest()[:8], "big") / 2.0 ** 64
    total = 0.0
    for split, fraction in SPLIT_FRACTIONS:
        total += fraction
        if u < total:
            return split
    return SPLIT_FRACTIONS[-1][0]


def training_dir(root: str) -> str:
    """``ROOT/IRMAS-TrainingData`` (the archive's layout) or ROOT itself when it holds the instrument folders."""
    for d in (os.path.join(root, TRAINING_DIR), root):
        if any(os.path.isdir(os.path.join(d, i)) for i in INSTRUMENTS):
            return d
    raise TaskError(f"IRMAS: no instrument folders ({', '.join(INSTRUMENTS[:3])}, ...) in {root} or "
                    f"{root}/{TRAINING_DIR} (expected {TRAINING_DIR}/<inst>/[<inst>]...wav)")


def irmas_training(root: str, seed: int = 0) -> List[Excerpt]:
    """Every excerpt of IRMAS' training data under ``root``, labelled by its folder, split by recording."""
    base = training_dir(root)
    out = []
    for inst in INSTRUMENTS:
        folder = os.path.join(base, inst)
        if not os.path.isdir(folder):
            continue
        for f in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(f)
            if ext.lower() != ".wav":
                continue
            if f"[{inst}]" not in f:
                raise TaskError(f"IRMAS: {os.path.join(folder, f)} is in the {inst} folder but its name lacks "
                                f"[{inst}] (IRMAS names the predominant instrument in brackets)")
            rec = f"{inst}/{recording_of(stem)}"
            out.append(Excerpt(os.path.join(folder, f), f"{inst}/{stem}", inst, rec, split_of(rec, seed)))
    if not out:
        raise TaskError(f"IRMAS: no .wav files in the instrument folders of {base}")
    log.info("IRMAS training data: %d excerpts of %d recordings in %d instruments", len(out),
             len({e.recording for e in out}), len({e.instrument for e in out}))
    return out
