"""GTZAN as distributed: ``genres/<genre>/<genre>.000NN.wav`` (22.05 kHz), 10 genres x 100 clips.

Split: the fault-filtered split of Kereliuk, Sturm and Larsen (2015), as used by jukemir and MARBLE:
443 train / 197 valid (dev) / 290 test clips, no artist shared between splits, repeated and
mislabelled clips removed. The lists ship in ``splits/{train,valid,test}_filtered.txt``. Listed
clips missing from the dataset folder are reported in one warning; a split with none found is an error.
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional

from torch.utils.data import Dataset

from mart_upstream.adapters.s3prl import PluginError
from mart_upstream.adapters.s3prl.downstream.common import check_audio_files, check_root, check_split, load_audio

TASK = "gtzan_genre"
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
SPLIT_FILES = {"train": "train_filtered.txt", "dev": "valid_filtered.txt", "test": "test_filtered.txt"}
SPLIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")
log = logging.getLogger(__name__)


def split_list(split: str) -> List[str]:
    """Relative paths ``<genre>/<genre>.000NN.wav`` of the fault-filtered ``split``."""
    with open(os.path.join(SPLIT_DIR, SPLIT_FILES[check_split(split)])) as f:
        return [line.strip() for line in f if line.strip()]


def genres_dir(root: str) -> str:
    """``ROOT/genres`` (the archive's layout) or ROOT itself when it holds the genre folders."""
    for d in (os.path.join(root, "genres"), root):
        if any(os.path.isdir(os.path.join(d, g)) for g in GENRES):
            return d
    raise PluginError(f"{TASK}: no genre folders ({', '.join(GENRES[:3])}, ...) in {root} or {root}/genres "
                      f"(expected genres/<genre>/<genre>.000NN.wav)")


class GtzanDataset(Dataset):
    """Items: (16 kHz mono waveform [T] float32, genre index, relative path)."""

    def __init__(self, root: str, split: str, sample_rate: Optional[int] = 22050,
                 skip_unreadable: bool = False, **unused):
        self.split = check_split(split)
        self.dir = genres_dir(check_root(TASK, root, "GTZAN with genres/<genre>/<genre>.000NN.wav"))
        listed = split_list(split)
        found = [p for p in listed if os.path.exists(os.path.join(self.dir, p))]
        if not found:
            raise PluginError(f"{TASK}: none of the {len(listed)} fault-filtered {split} clips "
                              f"(e.g. {listed[0]}) is in {self.dir}")
        if len(found) < len(listed):
            log.warning("%s: %d of the %d fault-filtered %s clips are missing from %s; using the %d found",
                        TASK, len(listed) - len(found), len(listed), split, self.dir, len(found))
        paths = [os.path.join(self.dir, p) for p in found]
        keep = check_audio_files(TASK, paths, sample_rate, skip_unreadable)
        self.names = [found[i] for i in keep]
        self.labels = [GENRES.index(n.split("/")[0]) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        return load_audio(os.path.join(self.dir, self.names[i])), self.labels[i], self.names[i]
