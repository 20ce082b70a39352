"""MTAT top-50 tagging: mean-pooled features -> linear or MLP probe, binary cross-entropy per tag.

Dev/test scores are computed once over the whole split in ``log_records``: macro ROC-AUC and macro
PR-AUC (average precision), scikit-learn, over the tags that have both positive and negative clips
in the split (``n_tags`` says how many). They go to ``EXPDIR/{split}-scores.json`` and TensorBoard;
a better dev ``best_metric`` (ROC-AUC by default) saves ``dev-best.ckpt``.
"""
from __future__ import annotations

from mart_upstream.adapters.s3prl.downstream.common import TaggingExpert, tagging_scores

from .dataset import TASK, MtatDataset

__all__ = ["DownstreamExpert", "tagging_scores"]


class DownstreamExpert(TaggingExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, MtatDataset, upstream_dim, downstream_expert, expdir, **kwargs)
