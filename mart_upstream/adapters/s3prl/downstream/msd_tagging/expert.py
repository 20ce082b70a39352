"""MSD top-50 tagging: mean-pooled features -> linear or MLP probe, binary cross-entropy per tag; macro
ROC-AUC and PR-AUC over the whole dev/test split, as ``mtat_tagging``."""
from __future__ import annotations

from mart_upstream.adapters.s3prl.downstream.common import TaggingExpert

from .dataset import TASK, MsdDataset


class DownstreamExpert(TaggingExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, MsdDataset, upstream_dim, downstream_expert, expdir, **kwargs)
