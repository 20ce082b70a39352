"""What the music downstreams share: checked audio loading, the pooled probe, loaders, score files.

Audio is read with soundfile (wav, flac, mp3 with libsndfile >= 1.1), mixed to mono and resampled to
s3prl's 16 kHz. Each dataset states the sample rate its files have (MTAT 16 kHz, GTZAN 22.05 kHz); a
file at another rate is an error naming it, found when the dataset is built, before training.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import soundfile as sf
from sklearn.metrics import average_precision_score, roc_auc_score
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import is_initialized
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mart_upstream.adapters.s3prl import PluginError
from mart_upstream.audio import load_audio as load_file
from mart_upstream.errors import AudioError, TaskError
from mart_upstream.fileio import atomic_path
from mart_upstream.tasks import SPLITS

SAMPLE_RATE = 16000
log = logging.getLogger(__name__)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise PluginError(f"unknown split {split!r}; the music downstreams have {', '.join(SPLITS)}")
    return split


def check_root(task: str, root: Optional[str], what: str) -> str:
    if not root or not os.path.isdir(os.path.expanduser(str(root))):
        raise TaskError(
            f"{task}: dataset folder {root} does not exist ({what}); "
            f"set it with -o config.downstream_expert.datarc.root=PATH"
        )
    return os.path.expanduser(str(root))


def check_audio_files(task: str, paths: Sequence[str], sample_rate: Optional[int],
                      skip_unreadable: bool) -> List[int]:
    """Indices of ``paths`` that can be read; an error for a file at the wrong sample rate, and for a
    missing or unreadable file unless ``skip_unreadable`` (then a warning with the count)."""
    keep, bad = [], []
    for i, path in enumerate(paths):
        try:
            info = sf.info(path)
        except Exception as e:  # noqa: BLE001 - libsndfile's errors name no single class
            if not skip_unreadable:
                reason = "missing" if not os.path.exists(path) else f"unreadable ({e})"
                raise AudioError(f"{task}: audio file {path} is {reason}; "
                                 "set datarc.skip_unreadable=True to skip such files") from None
            bad.append(path)
            continue
        if sample_rate and info.samplerate != sample_rate:
            raise AudioError(f"{task}: {path} has sample rate {info.samplerate} Hz; this dataset's files are "
                             f"{sample_rate} Hz (set datarc.sample_rate=null to accept and resample any rate)")
        if info.frames == 0:
            bad.append(path)
            continue
        keep.append(i)
    if bad:
        log.warning("%s: skipping %d missing, empty or unreadable files, e.g. %s", task, len(bad), bad[0])
    return keep


def load_audio(path: str, crop_samples: Optional[int] = None,
               rng: Optional[random.Random] = None) -> np.ndarray:
    """File -> float32 mono at 16 kHz, [T], through the one loader (``mart_upstream.audio``)."""
    return load_file(path, SAMPLE_RATE, crop_samples=crop_samples, rng=rng).numpy()


def collate(batch: List[tuple]) -> tuple:
    """[(wav, label, name), ...] -> ([wav, ...], [label, ...], [name, ...]): s3prl's (wavs, *others)."""
    return tuple(list(x) for x in zip(*batch))


class PooledProbe(nn.Module):
    """Frame features -> mean over each clip's valid frames -> linear, or MLP with one hidden layer."""

    def __init__(self, in_dim: int, out_dim: int, probe: str = "linear", hidden_dim: int = 512,
                 dropout: float = 0.0):
        super().__init__()
        if probe == "linear":
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
        elif probe == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(hidden_dim, out_dim))
        else:
            raise PluginError(f"modelrc.probe must be 'linear' or 'mlp', got {probe!r}")

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        pooled = torch.stack([f.mean(dim=0) for f in features])  # [B, D]
        return self.net(pooled)


class MusicExpert(nn.Module):
    """What the three DownstreamExperts share: the experiment folder, s3prl's seed, the best dev score
    (a buffer, so it survives ``-e``) and how scores are reported."""

    def __init__(self, task: str, expdir: str, seed: int = 1337, mode: str = "train",
                 init_ckpt: Optional[str] = None, **unused):
        super().__init__()
        self.task, self.expdir, self.seed = task, expdir, int(seed)
        # ``-m evaluate -e EXPDIR/dev-best.ckpt``: scores go to {split}-scores-dev-best.json
        evaluating = mode == "evaluate" and init_ckpt
        self.eval_tag = os.path.splitext(os.path.basename(init_ckpt))[0] if evaluating else None
        self.register_buffer("best_score", torch.full((1,), -float("inf")))

    def report(self, split: str, step: int, scores: Dict[str, float], logger,
               best_key: Optional[str] = None) -> List[str]:
        """Log ``scores`` to TensorBoard; for dev/test also print them and write ``EXPDIR/{split}-scores.json``
        (atomically, NaN as null). Returns ``["dev-best.ckpt"]`` when dev's ``best_key`` improved."""
        for k, v in scores.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                logger.add_scalar(f"{self.task}/{split}-{k}", float(v), global_step=step)
        if split == "train":
            return []
        name = f"{split}-scores.json" if self.eval_tag is None else f"{split}-scores-{self.eval_tag}.json"
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in scores.items()}
        with atomic_path(os.path.join(self.expdir, name), suffix=".json") as tmp:
            with open(tmp, "w") as f:
                json.dump({"split": split, "step": int(step), **clean}, f, indent=1)
        print(f"[{self.task}] {split} step {step}: " + ", ".join(f"{k}={v}" for k, v in scores.items()))
        value = float(scores[best_key]) if best_key and scores.get(best_key) is not None else float("nan")
        if split == "dev" and self.eval_tag is None and math.isfinite(value) and value > float(self.best_score):
            self.best_score.fill_(value)
            return ["dev-best.ckpt"]
        return []

    def loader(self, dataset: Dataset, batch_size: int, split: str, num_workers: int, epoch: int = 0,
               batch_sampler=None) -> DataLoader:
        """Training order: shuffled from (s3prl's --seed, epoch), so a run is reproducible."""
        train = split == "train"
        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate)
        sampler = None
        if train and is_initialized():
            sampler = DistributedSampler(dataset, seed=self.seed)
            sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch) if train else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                          generator=generator, num_workers=num_workers, collate_fn=collate)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def cross_entropy(logits: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    return F.cross_entropy(logits, torch.as_tensor(list(labels), device=logits.device, dtype=torch.long))


def seeded_subset(n: int, fraction: float, seed: int) -> List[int]:
    """A deterministic subset of ``range(n)`` holding ``fraction`` of it (at least one item), sorted."""
    if not 0 < fraction <= 1:
        raise PluginError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or n == 0:
        return list(range(n))
    k = max(1, int(round(n * fraction)))
    return sorted(np.random.RandomState(seed).permutation(n)[:k].tolist())


class LabelledClips(Dataset):
    """Labelled clips of one split: items (16 kHz mono waveform [T] float32, label, name), the label a class
    index (single-label) or a multi-hot float32 vector (:class:`TaggedClips`). Missing or unreadable files
    are an error, or with ``skip_unreadable`` left out with one warning."""

    def __init__(self, task: str, paths: Sequence[str], names: Sequence[str], labels: Sequence,
                 sample_rate: Optional[int], skip_unreadable: bool):
        keep = check_audio_files(task, paths, sample_rate, skip_unreadable)
        self.paths = [paths[i] for i in keep]
        self.names = [names[i] for i in keep]
        self.labels = [labels[i] for i in keep]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return load_audio(self.paths[i]), self.labels[i], self.names[i]


class TaggedClips(LabelledClips):
    """Multi-label clips: items (waveform, multi-hot float32 [len(tags)], name)."""

    def __init__(self, task: str, tags: Sequence[str], paths: Sequence[str], names: Sequence[str],
                 vectors: Sequence[np.ndarray], sample_rate: Optional[int], skip_unreadable: bool):
        super().__init__(task, paths, names, [np.asarray(v, dtype=np.float32) for v in vectors], sample_rate,
                         skip_unreadable)
        self.tags = list(tags)


class ProbeExpert(MusicExpert):
    """A probe downstream: ``make_dataset(split=..., **datarc)`` gives each split's dataset, and a
    :class:`PooledProbe` maps mean-pooled features to ``classes`` (``None``: the training set's ``tags``)."""

    def __init__(self, task: str, classes: Optional[Sequence[str]], make_dataset, upstream_dim: int,
                 downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(task, expdir, **kwargs)
        self.datarc = dict(downstream_expert["datarc"])
        self.datasets = {s: make_dataset(split=s, **self.datarc) for s in SPLITS}
        self.classes = list(self.datasets["train"].tags if classes is None else classes)
        self.probe = PooledProbe(upstream_dim, len(self.classes), **dict(downstream_expert.get("modelrc", {})))

    def get_dataloader(self, split: str, epoch: int = 0):
        size = self.datarc["train_batch_size" if split == "train" else "eval_batch_size"]
        return self.loader(self.datasets[split], size, split, self.datarc.get("num_workers", 0), epoch)


class SingleLabelExpert(ProbeExpert):
    """A single-label classification downstream: mean-pooled features -> linear or MLP probe, cross-entropy
    over ``classes``; accuracy over the whole dev/test split, the best dev accuracy saves ``dev-best.ckpt``.
    Each split's dataset is a :class:`LabelledClips`."""

    def forward(self, split: str, features: List[torch.Tensor], labels, names, records, **kwargs):
        logits = self.probe(features)
        loss = cross_entropy(logits, labels)
        records["loss"].append(loss.item())
        records["correct"] += (logits.argmax(dim=-1).cpu() == torch.as_tensor(labels)).tolist()
        return loss

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        scores = {"loss": mean(records["loss"]), "accuracy": mean(records["correct"])}
        if split != "train":
            scores["n_clips"] = len(records["correct"])
        return self.report(split, global_step, scores, logger, "accuracy")


def tagging_scores(probs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Macro ROC-AUC and PR-AUC over the tags with both classes present; NaN when there are none."""
    pos = labels.sum(axis=0)
    cols = np.flatnonzero((pos > 0) & (pos < labels.shape[0]))
    if cols.size == 0:
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), "n_tags": 0}
    y, p = labels[:, cols], probs[:, cols]
    return {
        "roc_auc": float(roc_auc_score(y, p, average="macro")),
        "pr_auc": float(average_precision_score(y, p, average="macro")),
        "n_tags": int(cols.size),
    }


class TaggingExpert(ProbeExpert):
    """A multi-label tagging downstream: mean-pooled features -> linear or MLP probe, binary cross-entropy per
    tag (the training set's ``tags``). Dev/test scores are computed once over the whole split in
    ``log_records`` (:func:`tagging_scores`); a better dev ``best_metric`` (ROC-AUC by default) saves
    ``dev-best.ckpt``."""

    def __init__(self, task: str, make_dataset, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(task, None, make_dataset, upstream_dim, downstream_expert, expdir, **kwargs)
        self.best_metric = downstream_expert.get("best_metric", "roc_auc")
        self.tags = self.classes

    def forward(self, split: str, features: List[torch.Tensor], labels, names, records, **kwargs):
        logits = self.probe(features)  # [B, n_tags]
        target = torch.as_tensor(np.stack(labels), device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        records["loss"].append(loss.item())
        if split != "train":
            records["probs"].append(torch.sigmoid(logits).detach().cpu().numpy())
            records["labels"].append(target.cpu().numpy())
        return loss

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        scores = {"loss": mean(records["loss"])}
        if split != "train":
            probs, labels = np.concatenate(records["probs"]), np.concatenate(records["labels"])
            scores.update(tagging_scores(probs, labels), n_clips=len(labels))
        return self.report(split, global_step, scores, logger, self.best_metric)
