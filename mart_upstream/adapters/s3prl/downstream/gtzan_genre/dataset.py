"""GTZAN genre classification on the fault-filtered split, read by ``mart_upstream.tasks.gtzan``:
``genres/<genre>/<genre>.000NN.wav`` (22.05 kHz), 443 train / 197 dev (valid) / 290 test clips. Listed
clips missing from the dataset folder are reported in one warning; a split with none found is an error.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from torch.utils.data import Dataset

from mart_upstream.adapters.s3prl.downstream.common import check_audio_files, check_root, check_split, load_audio
from mart_upstream.errors import TaskError
from mart_upstream.tasks.gtzan import GENRES, SAMPLE_RATE, genres_dir, split_list

TASK = "gtzan_genre"
log = logging.getLogger(__name__)


class GtzanDataset(Dataset):
    """Items: (16 kHz mono waveform [T] float32, genre index, relative path)."""

    def __init__(self, root: str, split: str, sample_rate: Optional[int] = SAMPLE_RATE,
                 skip_unreadable: bool = False, **unused):
        self.split = check_split(split)
        self.dir = genres_dir(check_root(TASK, root, "GTZAN with genres/<genre>/<genre>.000NN.wav"))
        listed = split_list(split)
        found = [p for p in listed if os.path.exists(os.path.join(self.dir, p))]
        if not found:
            raise TaskError(f"{TASK}: none of the {len(listed)} fault-filtered {split} clips "
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
