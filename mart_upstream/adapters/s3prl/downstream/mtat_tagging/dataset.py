"""MagnaTagATune (MTAT) as distributed: ``annotations_final.csv`` and mp3 clips in folders ``0/`` ... ``f/``.

``annotations_final.csv`` is tab separated (fields in double quotes): ``clip_id``, the 188 tags (0/1),
``mp3_path`` (e.g. ``f/artist-album-01-title-30-59.mp3``). The split is the one CLMR and MARBLE use,
by the first hex digit of the clip's folder: ``0``-``b`` train, ``c`` dev (valid), ``d``-``f`` test. The
vocabulary is the ``top_k`` (50) most frequent tags over the whole file (ties: file order), and clips
with none of them are dropped (``drop_untagged``), as in the MARBLE/sota-music-tagging split.
``label_fraction`` keeps a seeded random fraction of the training clips (the papers' 1 % / 10 %
semi-supervised protocol); dev and test are always whole.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from mart_upstream.adapters.s3prl import PluginError
from mart_upstream.adapters.s3prl.downstream.common import (check_audio_files, check_root, check_split,
                                                          load_audio, seeded_subset)

TASK = "mtat_tagging"
ANNOTATIONS = "annotations_final.csv"
SPLIT_FOLDERS = {"train": set("0123456789ab"), "dev": {"c"}, "test": set("def")}


def read_annotations(root: str, top_k: int = 50):
    """-> (DataFrame with clip_id, mp3_path and the top-k tag columns, the top-k tag names)."""
    path = os.path.join(root, ANNOTATIONS)
    if not os.path.isfile(path):
        raise PluginError(f"{TASK}: {ANNOTATIONS} not found in {root} (expected MagnaTagATune's "
                          f"{ANNOTATIONS} next to the mp3 folders 0/ ... f/)")
    try:
        df = pd.read_csv(path, sep="\t", dtype={"clip_id": str, "mp3_path": str})
    except Exception as e:  # noqa: BLE001 - pandas raises several parser errors
        raise PluginError(f"{TASK}: cannot read {path}: {e}") from None
    cols = list(df.columns)
    if len(cols) < 3 or cols[0] != "clip_id" or cols[-1] != "mp3_path":
        raise PluginError(f"{TASK}: {path} is not MTAT's annotation file: expected tab-separated columns "
                          f"clip_id, <tags>, mp3_path; got {cols[:2]} ... {cols[-1:]}")
    tags = cols[1:-1]
    if top_k > len(tags):
        raise PluginError(f"{TASK}: top_k={top_k} but {path} has only {len(tags)} tags")
    try:
        counts = df[tags].astype(int).sum(axis=0).to_numpy()
    except ValueError as e:
        raise PluginError(f"{TASK}: tag columns of {path} must hold 0/1: {e}") from None
    top = [tags[i] for i in sorted(range(len(tags)), key=lambda i: (-counts[i], i))[:top_k]]
    df = df[["clip_id", "mp3_path"] + top].copy()
    df["mp3_path"] = df["mp3_path"].fillna("").astype(str).str.strip()
    return df, top


class MtatDataset(Dataset):
    """Items: (16 kHz mono waveform [T] float32, top-k multi-hot float32 [k], clip path)."""

    def __init__(self, root: str, split: str, top_k: int = 50, drop_untagged: bool = True,
                 label_fraction: float = 1.0, seed: int = 0, sample_rate: Optional[int] = 16000,
                 skip_unreadable: bool = True, **unused):
        self.split = check_split(split)
        self.root = check_root(TASK, root, "MagnaTagATune with annotations_final.csv and mp3 folders 0/ ... f/")
        df, self.tags = read_annotations(self.root, top_k)
        first = df["mp3_path"].str.slice(0, 1).str.lower()
        df = df[(df["mp3_path"] != "") & first.isin(SPLIT_FOLDERS[split])]
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
            raise PluginError(f"{TASK}: no readable {split} clips under {self.root} (split by the first hex "
                              f"digit of mp3_path: {''.join(sorted(SPLIT_FOLDERS[split]))})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return load_audio(self.paths[i]), self.labels[i], os.path.relpath(self.paths[i], self.root)
