"""GTZAN genre classification: mean-pooled features -> linear or MLP probe, cross-entropy over 10 genres.

Dev/test accuracy over the whole split goes to ``EXPDIR/{split}-scores.json`` and TensorBoard; a better
dev accuracy saves ``dev-best.ckpt``.
"""
from __future__ import annotations

from typing import List

import torch

from mart_upstream.adapters.s3prl.downstream.common import SPLITS, MusicExpert, PooledProbe, cross_entropy, mean
from mart_upstream.tasks.gtzan import GENRES

from .dataset import TASK, GtzanDataset


class DownstreamExpert(MusicExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, expdir, **kwargs)
        self.datarc = dict(downstream_expert["datarc"])
        self.datasets = {s: GtzanDataset(split=s, **self.datarc) for s in SPLITS}
        self.probe = PooledProbe(upstream_dim, len(GENRES), **dict(downstream_expert.get("modelrc", {})))

    def get_dataloader(self, split: str, epoch: int = 0):
        size = self.datarc["train_batch_size" if split == "train" else "eval_batch_size"]
        return self.loader(self.datasets[split], size, split, self.datarc.get("num_workers", 0), epoch)

    def forward(self, split: str, features: List[torch.Tensor], labels, names, records, **kwargs):
        logits = self.probe(features)  # [B, 10]
        loss = cross_entropy(logits, labels)
        records["loss"].append(loss.item())
        records["correct"] += (logits.argmax(dim=-1).cpu() == torch.as_tensor(labels)).tolist()
        return loss

    def log_records(self, split: str, records, logger, global_step: int, **kwargs):
        scores = {"loss": mean(records["loss"]), "accuracy": mean(records["correct"])}
        if split != "train":
            scores["n_clips"] = len(records["correct"])
        return self.report(split, global_step, scores, logger, "accuracy")
