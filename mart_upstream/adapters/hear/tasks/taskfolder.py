"""Write a HEAR 2021 task folder, the layout heareval reads (as hear-preprocess writes it).

    <tasks_dir>/<task_name>-<version>-<mode>/
        task_metadata.json        task_name, version, mode, embedding_type, prediction_type,
                                  split_mode, splits, nfolds, sample_duration, evaluation
        labelvocabulary.csv       idx,label (labels sorted)
        <split>.json              {"<stem>.wav": [label, ...]} per split or fold
        <sample_rate>/<split>/<stem>.wav   mono 16-bit PCM, trimmed / zero padded to sample_duration

Audio that cannot be decoded (or holds no samples, or NaN) is reported and left out; each wav is
written to a temp name and renamed, and the whole folder is built beside the target and renamed
into place at the end, so an interrupted build leaves no partial task.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

from mart_upstream.audio import load_audio
from mart_upstream.errors import TaskError
from mart_upstream.fileio import atomic_path, replace_dir, staging_dir

log = logging.getLogger(__name__)

HEAR_SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)
KFOLD_SEED_RETRIES = 1000


@dataclass
class Item:
    source: str  # audio file to read
    name: str  # unique file stem in the task
    labels: List[str]
    split: Optional[str] = None  # given for presplit tasks; assigned for new k-fold splits


@dataclass
class TaskSpec:
    task_name: str
    version: str
    prediction_type: str  # "multiclass" | "multilabel"
    split_mode: str  # "trainvaltest" | "new_split_kfold"
    sample_duration: float
    evaluation: List[str]
    labels: Sequence[str]  # the vocabulary
    nfolds: Optional[int] = None
    mode: str = "full"
    extra: Dict[str, object] = field(default_factory=dict)  # more task_metadata.json keys

    @property
    def folder_name(self) -> str:
        return f"{self.task_name}-{self.version}-{self.mode}"

    def splits(self) -> List[str]:
        if self.split_mode == "trainvaltest":
            return ["train", "valid", "test"]
        return [f"fold{i:02d}" for i in range(self.nfolds)]


def _convert(args: Tuple[str, Sequence[int], int]) -> Tuple[Optional[Dict[int, np.ndarray]], Optional[str]]:
    """source -> ({rate: int16 samples of exactly duration}, None) or (None, reason)."""
    source, rates, duration_ms = args
    out = {}
    for sr in rates:
        try:
            x = load_audio(source, sr)
        except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file
            return None, str(e).splitlines()[0]
        if x.numel() == 0:
            return None, "no audio samples"
        if not torch.isfinite(x).all():
            return None, "NaN or Inf samples"
        n = int(round(duration_ms * sr / 1000))
        x = torch.nn.functional.pad(x[:n], (0, max(0, n - x.shape[0])))
        out[sr] = (x.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).numpy()
    return out, None


def _init_worker() -> None:
    torch.set_num_threads(1)


def assign_kfolds(items: List[Item], nfolds: int) -> None:
    """Deterministic k folds over the sorted names (hear-preprocess' procedure): shuffle with a named
    seed, cut into k near-equal folds; retry further named seeds until every fold holds every label."""
    names = sorted(it.name for it in items)
    labels_of = {it.name: it.labels for it in items}
    all_labels = {label for it in items for label in it.labels}
    seeds = ["split_k_folds"] + [f"split_k_folds_retry_{i}" for i in range(KFOLD_SEED_RETRIES - 1)]
    first = None
    for seed in seeds:
        order = list(names)
        random.Random(seed).shuffle(order)
        fold_of = {n: f"fold{j:02d}" for j, part in enumerate(np.array_split(order, nfolds)) for n in part}
        first = first or fold_of
        seen: Dict[str, set] = {}
        for n, f in fold_of.items():
            seen.setdefault(f, set()).update(labels_of[n])
        if all(s == all_labels for s in seen.values()):
            break
    else:
        log.warning("no seed puts every label in each of the %d folds (too few clips per label); "
                    "using the first split", nfolds)
        fold_of = first
    for it in items:
        it.split = fold_of[it.name]


def _write_json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def build_task(spec: TaskSpec, items: List[Item], tasks_dir: str, sample_rates: Sequence[int] = (16000,),
               overwrite: bool = False, workers: int = 1) -> Tuple[str, List[Tuple[str, str]]]:
    """Decode, resample, trim/pad and write every item; -> (task folder, [(skipped file, reason)])."""
    rates = sorted({int(r) for r in sample_rates})
    for r in rates:
        if r not in HEAR_SAMPLE_RATES:
            raise TaskError(f"sample rate {r} is not one of HEAR's {HEAR_SAMPLE_RATES}")
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise TaskError(f"{spec.task_name}: file names must be unique in a task, repeated: {dup}")
    if not spec.sample_duration or spec.sample_duration <= 0:
        raise TaskError(f"sample duration must be positive, got {spec.sample_duration}")
    target = os.path.join(tasks_dir, spec.folder_name)
    if os.path.exists(target) and not overwrite:
        raise TaskError(f"{target} exists; remove it or pass --overwrite")
    os.makedirs(tasks_dir, exist_ok=True)
    tmp = staging_dir(tasks_dir, f".tmp-{spec.folder_name}-")
    try:
        kept, skipped = _write_audio(spec, items, tmp, rates, workers)
        if spec.split_mode == "new_split_kfold":
            if len(kept) < spec.nfolds:
                raise TaskError(f"{spec.task_name}: {len(kept)} readable clips cannot fill {spec.nfolds} folds")
            assign_kfolds(kept, spec.nfolds)
        splits = spec.splits()
        for split in splits:
            members = [it for it in kept if it.split == split]
            if not members:
                raise TaskError(f"{spec.task_name}: split {split} has no readable clips")
            for r in rates:
                os.makedirs(os.path.join(tmp, str(r), split))
                for it in members:
                    os.rename(os.path.join(tmp, str(r), "_all", it.name + ".wav"),
                              os.path.join(tmp, str(r), split, it.name + ".wav"))
            _write_json(os.path.join(tmp, f"{split}.json"), {it.name + ".wav": sorted(it.labels) for it in members})
        for r in rates:
            os.rmdir(os.path.join(tmp, str(r), "_all"))
        with open(os.path.join(tmp, "labelvocabulary.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["idx", "label"])
            w.writerows(enumerate(sorted(spec.labels)))
        metadata = {
            "task_name": spec.task_name, "version": spec.version, "mode": spec.mode,
            "embedding_type": "scene", "prediction_type": spec.prediction_type,
            "split_mode": spec.split_mode, "splits": splits, "sample_duration": spec.sample_duration,
            "evaluation": list(spec.evaluation), "sample_rates": rates, **spec.extra,
        }
        if spec.nfolds:
            metadata["nfolds"] = spec.nfolds
        _write_json(os.path.join(tmp, "task_metadata.json"), metadata)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, skipped


def _write_audio(spec: TaskSpec, items: List[Item], tmp: str, rates: List[int], workers: int):
    for r in rates:
        os.makedirs(os.path.join(tmp, str(r), "_all"))
    duration_ms = int(round(spec.sample_duration * 1000))
    jobs = [(it.source, rates, duration_ms) for it in items]
    kept, skipped = [], []
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            results = pool.map(_convert, jobs, chunksize=8)
            _collect(items, results, tmp, kept, skipped)
    else:
        _collect(items, map(_convert, jobs), tmp, kept, skipped)
    for path, reason in skipped:
        log.warning("skipped unreadable audio %s: %s", path, reason)
    return kept, skipped


def _collect(items, results, tmp, kept, skipped) -> None:
    for it, (audio, reason) in zip(items, results):
        if audio is None:
            skipped.append((it.source, reason))
            continue
        for r, x in audio.items():
            path = os.path.join(tmp, str(r), "_all", it.name + ".wav")
            with atomic_path(path, suffix=".wav") as t:
                sf.write(t, x, r, subtype="PCM_16", format="WAV")
        kept.append(it)
