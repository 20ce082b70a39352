"""Cover-song collections from a manifest CSV: ``work_id,version_id,path[,split]``, read by
``mart_upstream.tasks.covers`` (paths absolute or relative to the manifest; repeated rows counted once;
works, not versions, split into train / dev / test by the ``split`` column or a seeded shuffle giving
``dev_fraction`` and ``test_fraction`` of the works to dev and test). Dev and test need at least one
work with two versions (a query with an answer).
"""
from __future__ import annotations

import os
import random
from collections import Counter
from typing import Dict, Iterator, List, Optional

import numpy as np
from torch.utils.data import Dataset, Sampler

from mart_upstream.adapters.s3prl.downstream.common import SAMPLE_RATE, check_audio_files, check_split, load_audio
from mart_upstream.errors import AudioError, TaskError
from mart_upstream.tasks import covers

TASK = "cover_song"
MANIFEST_HINT = ("set it with -o config.downstream_expert.datarc.manifest=PATH "
                 "(CSV: work_id,version_id,path[,split])")


class CoverSongDataset(Dataset):
    """Items: (16 kHz mono waveform [T] float32, label, version_id). The label is the index of the
    version's work among the training works (train) or its work_id (dev/test)."""

    def __init__(self, manifest: str, split: str, dev_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0, sample_rate: Optional[int] = None, max_seconds: Optional[float] = None,
                 skip_unreadable: bool = False, **unused):
        self.split = check_split(split)
        collection = covers.read_manifest(manifest, hint=MANIFEST_HINT)
        if collection.missing and not skip_unreadable:
            raise AudioError(f"{TASK}: audio file {collection.missing[0]} is missing ({len(collection.missing)} "
                             "listed files missing); set datarc.skip_unreadable=True to skip such files")
        where = covers.assign_splits(collection.tracks, dev_fraction, test_fraction, seed)
        tracks = [t for t in collection.tracks if where[t.work] == split]
        keep = check_audio_files(TASK, [t.path for t in tracks], sample_rate, skip_unreadable)
        tracks = [tracks[i] for i in keep]
        if not tracks:
            raise TaskError(f"{TASK}: no {split} versions in {manifest}")
        self.paths = [t.path for t in tracks]
        self.versions = [t.version or os.path.basename(t.path) for t in tracks]
        self.works = [t.work for t in tracks]
        self.train_works = sorted(set(self.works)) if split == "train" else []
        index = {w: i for i, w in enumerate(self.train_works)}
        self.labels = [index[w] for w in self.works] if split == "train" else list(self.works)
        if split != "train" and max(Counter(self.works).values()) < 2:
            raise TaskError(f"{TASK}: no {split} work of {manifest} has two versions: nothing to retrieve")
        self.crop = None if not max_seconds else int(max_seconds * SAMPLE_RATE)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # training crops are drawn from a seed per (epoch, item): reproducible, different every epoch
        rng = random.Random(self.epoch * 1_000_003 + i) if self.split == "train" else None
        return load_audio(self.paths[i], self.crop, rng), self.labels[i], self.versions[i]


class WorkBatchSampler(Sampler):
    """Training batches of ``works_per_batch`` works with up to ``versions_per_work`` versions each,
    so every batch holds positives for the triplet loss; the order is seeded by (seed, epoch)."""

    def __init__(self, labels: List[int], works_per_batch: int, versions_per_work: int, seed: int, epoch: int):
        self.by_work: Dict[int, List[int]] = {}
        for i, w in enumerate(labels):
            self.by_work.setdefault(w, []).append(i)
        self.p, self.k = max(1, works_per_batch), max(1, versions_per_work)
        self.rng = np.random.RandomState(seed * 100_003 + epoch)
        self.batches = self._batches()

    def _batches(self) -> List[List[int]]:
        works = list(self.by_work)
        self.rng.shuffle(works)
        out = []
        for b in range(0, len(works), self.p):
            batch = []
            for w in works[b : b + self.p]:
                idx = list(self.by_work[w])
                self.rng.shuffle(idx)
                batch += idx[: self.k]
            out.append(batch)
        return out

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
