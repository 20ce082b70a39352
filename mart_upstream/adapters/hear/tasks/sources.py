"""Datasets as they are distributed -> (TaskSpec, items) for ``taskfolder.build_task``.

* GTZAN (``genres/<genre>/*.wav``, or the original ``*.au``; folders found by ``mart_upstream.tasks.gtzan``):
  HEAR's ``tfds_gtzan-1.0.0-full``: scene, multiclass, 10 new folds, 30 s, top1_acc first.
* MagnaTagATune (``annotations_final.csv`` + mp3 folders ``0/`` ... ``f/``, read by
  ``mart_upstream.tasks.mtat``, as the S3PRL ``mtat_tagging`` downstream reads it): top-50 tags, the
  split by the first hex digit of the folder (``0``-``b`` train, ``c`` valid, ``d``-``f`` test; untagged
  clips dropped), multilabel, aucroc then mAP.
* NSynth (``nsynth-{train,valid,test}/examples.json`` + ``audio/<note_str>.wav``, read by
  ``mart_upstream.tasks.nsynth``): instrument family (11 labels), NSynth's own train/valid/test
  split, 4 s notes, top1_acc first; ``per_class`` subsamples each family in each split.
* FMA-small (``fma_metadata/tracks.csv`` + ``fma_small/NNN/NNNNNN.mp3``, read by ``mart_upstream.tasks.fma``):
  genre (8 labels), FMA's official training/validation/test split, 30 s, top1_acc first (strategies §4.2).
* IRMAS training data (``IRMAS-TrainingData/<inst>/*.wav``, read by ``mart_upstream.tasks.irmas``):
  predominant instrument (11 labels), split 80/10/10 by recording (IRMAS publishes none), 3 s
  (strategies §4.3).
* MSD (the split files of ``MSD_split/`` + the 7digital clips ``D/E/<7digital ID>.clip.mp3``, read by
  ``mart_upstream.tasks.msd``): top-50 last.fm tags, the published split (201,680 / 11,774 / 28,435), 29.1 s,
  multilabel, aucroc then mAP (strategies §4.1); tracks without a clip are counted.
* any ``<label>/<audio files>`` tree: multiclass with new k folds.

Input that cannot make a task is a :class:`mart_upstream.errors.TaskError`.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np
import soundfile as sf

from mart_upstream.audio import AUDIO_EXTENSIONS, is_audio_name
from mart_upstream.errors import TaskError
from mart_upstream.tasks import PUBLISHED_SPLIT_NAMES
from mart_upstream.tasks import fma, irmas, msd
from mart_upstream.tasks import nsynth as nsynth_set  # the module; nsynth() below is the task builder
from mart_upstream.tasks.gtzan import genres_dir
from mart_upstream.tasks.mtat import read_annotations, split_of

from .taskfolder import Item, TaskSpec

MULTICLASS_METRICS = ["top1_acc", "mAP", "d_prime", "aucroc"]


def _label_folders(root: str, what: str) -> List[Item]:
    if not os.path.isdir(root):
        raise TaskError(f"{root} is not a folder ({what})")
    items = []
    for label in sorted(os.listdir(root)):
        folder = os.path.join(root, label)
        if not os.path.isdir(folder) or label.startswith("."):
            continue
        for f in sorted(os.listdir(folder)):
            if is_audio_name(f):
                items.append(Item(os.path.join(folder, f), os.path.splitext(f)[0], [label]))
    if not items:
        raise TaskError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in label folders under {root} ({what})")
    stems = [it.name for it in items]
    if len(set(stems)) != len(stems):  # same file name under two labels: prefix the label
        for it in items:
            it.name = f"{it.labels[0]}.{it.name}"
    return items


def gtzan(root: str, nfolds: int = 10, duration: float = 30.0) -> Tuple[TaskSpec, List[Item]]:
    items = _label_folders(genres_dir(root), "GTZAN: genres/<genre>/*.wav")
    labels = sorted({it.labels[0] for it in items})
    spec = TaskSpec("tfds_gtzan", "1.0.0", "multiclass", "new_split_kfold", duration, MULTICLASS_METRICS,
                    labels, nfolds=nfolds)
    return spec, items


def folder(root: str, name: Optional[str] = None, nfolds: int = 5,
           duration: Optional[float] = None) -> Tuple[TaskSpec, List[Item]]:
    items = _label_folders(root, "<label>/<audio files>")
    labels = sorted({it.labels[0] for it in items})
    if len(labels) < 2:
        raise TaskError(f"{root}: a classification task needs at least 2 label folders, found {labels}")
    if duration is None:
        duration = _p95_duration(items)
    name = name or os.path.basename(os.path.normpath(root))
    spec = TaskSpec(name, "1.0.0", "multiclass", "new_split_kfold", duration, MULTICLASS_METRICS, labels,
                    nfolds=nfolds)
    return spec, items


def _p95_duration(items: List[Item]) -> float:
    """95th percentile of the readable files' durations (HEAR's choice of sample_duration), in s."""
    seconds = []
    for it in items:
        try:
            info = sf.info(it.source)
            seconds.append(info.frames / info.samplerate)
        except Exception:  # noqa: BLE001 - unreadable files are reported when converted
            pass
    if not seconds:
        raise TaskError("none of the audio files can be read")
    return float(np.ceil(np.percentile(seconds, 95) * 100) / 100)


def mtat(root: str, top_k: int = 50, duration: float = 29.1) -> Tuple[TaskSpec, List[Item]]:
    df, tags = read_annotations(root, top_k)
    items = []
    for row in df.itertuples(index=False):
        path = getattr(row, "mp3_path")
        split = split_of(path)
        labels = [t for t, v in zip(tags, row[2:]) if int(v)]
        if not path or split is None or not labels:  # no file, not in a split folder, or untagged
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        items.append(Item(os.path.join(root, path), f"{row.clip_id}-{stem}", labels, PUBLISHED_SPLIT_NAMES[split]))
    if not items:
        raise TaskError(f"{root}: no tagged clips with an mp3_path in folders 0/ ... f/")
    spec = TaskSpec("mtat_top50" if top_k == 50 else f"mtat_top{top_k}", "1.0.0", "multilabel", "trainvaltest",
                    duration, ["aucroc", "mAP"], tags)
    return spec, items


def nsynth(root: str, per_class: Optional[int] = None, seed: int = 0,
           duration: float = nsynth_set.SECONDS) -> Tuple[TaskSpec, List[Item]]:
    found = nsynth_set.nsynth(root, per_class, seed)
    items = [Item(n.path, n.name, [n.family], PUBLISHED_SPLIT_NAMES[n.split]) for n in found.notes]
    mode = "full" if per_class is None else f"{per_class}perclass"
    spec = TaskSpec("nsynth_instrument_family", "2.2.3", "multiclass", "trainvaltest", duration, MULTICLASS_METRICS,
                    list(nsynth_set.FAMILIES), mode=mode,
                    extra={"per_class": per_class, "subsample_seed": seed, "missing_audio": len(found.missing)})
    return spec, items


def fma_small(root: str, duration: float = fma.SECONDS) -> Tuple[TaskSpec, List[Item]]:
    found = fma.fma_small(root)
    items = [Item(t.path, t.name, [t.genre], PUBLISHED_SPLIT_NAMES[t.split]) for t in found.tracks]
    spec = TaskSpec("fma_small_genre", "1.0.0", "multiclass", "trainvaltest", duration, MULTICLASS_METRICS,
                    list(fma.GENRES), extra={"missing_audio": len(found.missing)})
    return spec, items


def irmas_training(root: str, seed: int = 0, duration: float = irmas.SECONDS) -> Tuple[TaskSpec, List[Item]]:
    found = irmas.irmas_training(root, seed)
    items = [Item(e.path, e.name.replace("/", "."), [e.instrument], PUBLISHED_SPLIT_NAMES[e.split]) for e in found]
    spec = TaskSpec("irmas_instrument", "1.0.0", "multiclass", "trainvaltest", duration, MULTICLASS_METRICS,
                    list(irmas.INSTRUMENTS), extra={"split": "80/10/10 by recording", "split_seed": seed})
    return spec, items


def msd_tagging(root: str, audio_dir: Optional[str] = None, valid_from: int = msd.TRAIN_SIZE,
                duration: float = msd.SECONDS) -> Tuple[TaskSpec, List[Item]]:
    found = msd.msd_tagging(root, audio_dir, valid_from)
    items = [Item(t.path, t.name, found.tag_names(t), PUBLISHED_SPLIT_NAMES[t.split]) for t in found.tracks]
    spec = TaskSpec("msd_top50", "1.0.0", "multilabel", "trainvaltest", duration, ["aucroc", "mAP"], found.tags,
                    extra={"missing_audio": len(found.missing), "valid_from": valid_from})
    return spec, items
