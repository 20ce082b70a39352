"""Cover-song identification: mean-pooled features -> MLP embedding, trained on the training works with
a classification head (cross-entropy over works) or a batch-hard triplet loss; dev/test are scored as
retrieval: every version queries all other versions of its split by cosine similarity of the
embeddings, with MAP, precision@10 and MR1 (mean rank of the first correct answer) from
``mart_upstream.tasks.metrics``. Scores go to ``EXPDIR/{split}-scores.json``; a better dev MAP
saves ``dev-best.ckpt``.
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mart_upstream.adapters.s3prl import PluginError
from mart_upstream.adapters.s3prl.downstream.common import SPLITS, MusicExpert, PooledProbe, cross_entropy, mean
from mart_upstream.tasks.metrics import cosine_similarity, retrieval_metrics

from .dataset import TASK, CoverSongDataset, WorkBatchSampler


def batch_hard_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors with a positive of relu(d(a, hardest positive) - d(a, hardest negative) + margin)."""
    d = torch.cdist(emb, emb)  # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not valid.any():
        return emb.sum() * 0.0  # no anchor has both a positive and a negative in this batch
    hardest_pos = d.masked_fill(~pos, float("-inf")).max(dim=1).values
    hardest_neg = d.masked_fill(~neg, float("inf")).min(dim=1).values
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class DownstreamExpert(MusicExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, expdir, **kwargs)
        self.datarc = dict(downstream_expert["datarc"])
        modelrc = dict(downstream_expert.get("modelrc", {}))
        self.loss_name = modelrc.pop("head", "classification")
        if self.loss_name not in ("classification", "triplet"):
            raise PluginError(f"{TASK}: modelrc.head must be classification or triplet, got {self.loss_name!r}")
        self.margin = float(modelrc.pop("margin", 0.3))
        emb_dim = int(modelrc.pop("embedding_dim", 256))
        self.datasets = {s: CoverSongDataset(split=s, **self.datarc) for s in SPLITS}
        n_works = len(self.datasets["train"].train_works)
        self.embed = PooledProbe(upstream_dim, emb_dim, probe="mlp", **modelrc)
        self.classifier = nn.Linear(emb_dim, n_works) if self.loss_name == "classification" else None

    def get_dataloader(self, split: str, epoch: int = 0):
        ds, workers = self.datasets[split], self.datarc.get("num_workers", 0)
        if split != "train":
            return self.loader(ds, self.datarc["eval_batch_size"], split, workers)
        ds.epoch = epoch
        sampler = WorkBatchSampler(ds.labels, self.datarc.get("works_per_batch", 8),
                                   self.datarc.get("versions_per_work", 4), self.seed, epoch)
        return self.loader(ds, 0, split, workers, batch_sampler=sampler)

    def forward(self, split: str, features: List[torch.Tensor], labels, names, records, **kwargs):
        emb = self.embed(features)  # [B, E]
        if split != "train":
            records["emb"].append(emb.detach().cpu().numpy())
            records["work"] += list(labels)
            return emb.new_zeros(())
        if self.classifier is not None:
            loss = cross_entropy(self.classifier(emb), labels)
        else:
            target = torch.as_tensor(list(labels), device=emb.device)
            loss = batch_hard_triplet(F.normalize(emb, dim=-1), target, self.margin)
        records["loss"].append(loss.item())
        return loss

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        if split == "train":
            return self.report(split, global_step, {"loss": mean(records["loss"])}, logger)
        scores = retrieval_metrics(cosine_similarity(np.concatenate(records["emb"])), records["work"], k=10)
        scores["n_versions"] = len(records["work"])
        return self.report(split, global_step, scores, logger, "map")
