"""MTAT top-50 tagging: mean-pooled features -> linear or MLP probe, binary cross-entropy per tag.

Dev/test scores are computed once over the whole split in ``log_records``: macro ROC-AUC and macro
PR-AUC (average precision), scikit-learn, over the tags that have both positive and negative clips
in the split (``n_tags`` says how many). They go to ``EXPDIR/{split}-scores.json`` and TensorBoard;
a better dev ``best_metric`` (ROC-AUC by default) saves ``dev-best.ckpt``.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from mart_upstream.adapters.s3prl.downstream.common import SPLITS, MusicExpert, PooledProbe, mean

from .dataset import TASK, MtatDataset


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


class DownstreamExpert(MusicExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, expdir, **kwargs)
        self.datarc = dict(downstream_expert["datarc"])
        self.best_metric = downstream_expert.get("best_metric", "roc_auc")
        self.datasets = {s: MtatDataset(split=s, **self.datarc) for s in SPLITS}
        self.tags = self.datasets["train"].tags
        self.probe = PooledProbe(upstream_dim, len(self.tags), **dict(downstream_expert.get("modelrc", {})))

    def get_dataloader(self, split: str, epoch: int = 0):
        size = self.datarc["train_batch_size" if split == "train" else "eval_batch_size"]
        return self.loader(self.datasets[split], size, split, self.datarc.get("num_workers", 0), epoch)

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
