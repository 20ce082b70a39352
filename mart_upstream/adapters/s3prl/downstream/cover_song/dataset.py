"""Cover-song collections from a manifest CSV: ``work_id,version_id,path[,split]``.

``path`` is absolute or relative to the manifest's folder. Works, not versions, are split, so no work
is both trained on and searched for: by the ``split`` column (train/dev/test) when the manifest has
one, else a seeded shuffle of the works gives ``dev_fraction`` and ``test_fraction`` of them to dev
and test. Dev and test need at least one work with two versions (a query with an answer).
"""
from __future__ import annotations

import csv
import os
import random
from collections import Counter
from typing import Dict, Iterator, List, Optional

import numpy as np
from torch.utils.data import Dataset, Sampler

from mart_upstream.adapters.s3prl import PluginError
from mart_upstream.adapters.s3prl.downstream.common import SAMPLE_RATE, check_audio_files, check_split, load_audio

TASK = "cover_song"
COLUMNS = ("work_id", "version_id", "path")


def read_manifest(manifest: str) -> List[Dict[str, str]]:
    if not manifest or not os.path.isfile(os.path.expanduser(str(manifest))):
        raise PluginError(f"{TASK}: manifest {manifest} not found; set it with "
                          "-o config.downstream_expert.datarc.manifest=PATH (CSV: work_id,version_id,path)")
    manifest = os.path.expanduser(str(manifest))
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PluginError(f"{TASK}: {manifest} lacks column(s) {', '.join(missing)}; "
                              f"expected a header with {', '.join(COLUMNS)} (and optionally split)")
        rows = [{k: (v or "").strip() for k, v in r.items() if k} for r in reader]
    if not rows:
        raise PluginError(f"{TASK}: {manifest} lists no versions")
    base = os.path.dirname(os.path.abspath(manifest))
    for i, r in enumerate(rows):
        if not r["work_id"] or not r["path"]:
            raise PluginError(f"{TASK}: {manifest} row {i + 2} has an empty work_id or path")
        r["path"] = os.path.join(base, os.path.expanduser(r["path"]))
    return rows


def assign_splits(rows: List[Dict[str, str]], dev_fraction: float, test_fraction: float,
                  seed: int) -> Dict[str, str]:
    """work_id -> split: the manifest's ``split`` column, else a seeded shuffle of the works."""
    if "split" in rows[0]:
        out: Dict[str, str] = {}
        for r in rows:
            s = {"valid": "dev", "validation": "dev"}.get(r["split"], r["split"])
            if s not in ("train", "dev", "test"):
                raise PluginError(f"{TASK}: split {r['split']!r} of version {r['version_id']} "
                                  "is not train, dev or test")
            if out.setdefault(r["work_id"], s) != s:
                raise PluginError(f"{TASK}: work {r['work_id']} has versions in both "
                                  f"{out[r['work_id']]} and {s}")
        return out
    works = sorted({r["work_id"] for r in rows})
    random.Random(seed).shuffle(works)
    n_test = int(round(len(works) * test_fraction)) if test_fraction > 0 else 0
    n_dev = int(round(len(works) * dev_fraction)) if dev_fraction > 0 else 0
    n_test, n_dev = max(n_test, test_fraction > 0), max(n_dev, dev_fraction > 0)
    return {w: "test" if i < n_test else "dev" if i < n_test + n_dev else "train" for i, w in enumerate(works)}


class CoverSongDataset(Dataset):
    """Items: (16 kHz mono waveform [T] float32, label, version_id). The label is the index of the
    version's work among the training works (train) or its work_id (dev/test)."""

    def __init__(self, manifest: str, split: str, dev_fraction: float = 0.1, test_fraction: float = 0.1,
                 seed: int = 0, sample_rate: Optional[int] = None, max_seconds: Optional[float] = None,
                 skip_unreadable: bool = False, **unused):
        self.split = check_split(split)
        rows = read_manifest(manifest)
        where = assign_splits(rows, dev_fraction, test_fraction, seed)
        rows = [r for r in rows if where[r["work_id"]] == split]
        keep = check_audio_files(TASK, [r["path"] for r in rows], sample_rate, skip_unreadable)
        rows = [rows[i] for i in keep]
        if not rows:
            raise PluginError(f"{TASK}: no {split} versions in {manifest}")
        self.paths = [r["path"] for r in rows]
        self.versions = [r["version_id"] or os.path.basename(r["path"]) for r in rows]
        self.works = [r["work_id"] for r in rows]
        self.train_works = sorted(set(self.works)) if split == "train" else []
        index = {w: i for i, w in enumerate(self.train_works)}
        self.labels = [index[w] for w in self.works] if split == "train" else list(self.works)
        if split != "train" and max(Counter(self.works).values()) < 2:
            raise PluginError(f"{TASK}: no {split} work of {manifest} has two versions: nothing to retrieve")
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
