"""MagnaTagATune (MTAT) tagging, read by ``mart_upstream.tasks.mtat``: ``annotations_final.csv`` and mp3
clips in folders ``0/`` ... ``f/``, split by the first hex digit of the clip's folder (``0``-``b`` train,
``c`` dev, ``d``-``f`` test), the ``top_k`` (50) most frequent tags. Clips with none of them are dropped
(``drop_untagged``), as in the MARBLE/sota-music-tagging split. ``label_fraction`` keeps a seeded random
fraction of the training clips (the papers' 1 % / 10 % semi-supervised protocol); dev and test are
always whole.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
from torch.utils.data import Dataset

from mart_upstream.adapters.s3prl.downstream.common import (check_audio_files, check_root, check_split,
                                                          load_audio, seeded_subset)
from mart_upstream.errors import TaskError
from mart_upstream.tasks.mtat import SAMPLE_RATE, SPLIT_FOLDERS, read_annotations, split_of

TASK = "mtat_tagging"


class MtatDataset(Dataset):
    """Items: (16 kHz mono waveform [T] float32, top-k multi-hot float32 [k], clip path)."""

    def __init__(self, root: str, split: str, top_k: int = 50, drop_untagged: bool = True,
                 label_fraction: float = 1.0, seed: int = 0, sample_rate: Optional[int] = SAMPLE_RATE,
                 skip_unreadable: bool = True, **unused):
        self.split = check_split(split)
        self.root = check_root(TASK, root, "MagnaTagATune with annotations_final.csv and mp3 folders 0/ ... f/")
        df, self.tags = read_annotations(self.root, top_k)
        df = df[df["mp3_path"].map(split_of) == split]
        labels = df[self.tags].astype(np.float32).to_numpy()
        if drop_untagged:
            has_tag = labels.sum(axis=1) > 0
            df, labels = df[has_tag], labels[has_tag]
        paths = [os.path.join(self.root, p) for p in df["mp3_path"]]
        if split == "train":
            keep = seeded_subset(len(paths), label_fraction, seed)
            paths, labels = [paths[i] for i in keep], labels[keep]
        keep = check_audio_files(TASK, paths, sample_rate, skip_unreadable)
        self.paths: List[str] = [paths[i] for i in keep]
        self.labels = labels[keep]
        if not self.paths:
            raise TaskError(f"{TASK}: no readable {split} clips under {self.root} (split by the first hex "
                            f"digit of mp3_path: {''.join(sorted(SPLIT_FOLDERS[split]))})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return load_audio(self.paths[i]), self.labels[i], os.path.relpath(self.paths[i], self.root)
