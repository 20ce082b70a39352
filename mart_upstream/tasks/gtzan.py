"""GTZAN as distributed: ``genres/<genre>/<genre>.000NN.wav`` (22.05 kHz), 10 genres x 100 clips.

* ``GENRES``: the ten genre folders, in the order of the labels;
* ``genres_dir``: where the genre folders are: ``ROOT/genres`` (the archive's layout) or ROOT itself;
* ``split_list``: the fault-filtered split of Kereliuk, Sturm and Larsen (2015), as used by jukemir and
  MARBLE: 443 train / 197 valid (dev) / 290 test clips, no artist shared between splits, repeated and
  mislabelled clips removed. The lists ship in ``gtzan_splits/{train,valid,test}_filtered.txt``.
"""
from __future__ import annotations

import os
from typing import List

from mart_upstream.errors import TaskError

from . import PUBLISHED_SPLIT_NAMES, SPLITS

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
SAMPLE_RATE = 22050
SPLIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gtzan_splits")


def split_list(split: str) -> List[str]:
    """Relative paths ``<genre>/<genre>.000NN.wav`` of the fault-filtered ``split`` (train, dev or test)."""
    if split not in SPLITS:
        raise TaskError(f"GTZAN: unknown split {split!r}; the fault-filtered split has {', '.join(SPLITS)}")
    with open(os.path.join(SPLIT_DIR, f"{PUBLISHED_SPLIT_NAMES[split]}_filtered.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def genres_dir(root: str) -> str:
    """``ROOT/genres`` (the archive's layout) or ROOT itself when it holds the genre folders."""
    for d in (os.path.join(root, "genres"), root):
        if any(os.path.isdir(os.path.join(d, g)) for g in GENRES):
            return d
    raise TaskError(f"GTZAN: no genre folders ({', '.join(GENRES[:3])}, ...) in {root} or {root}/genres "
                    f"(expected genres/<genre>/<genre>.000NN.wav)")
