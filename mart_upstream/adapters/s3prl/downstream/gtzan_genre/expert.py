"""GTZAN genre classification: mean-pooled features -> linear or MLP probe, cross-entropy over 10 genres.

Dev/test accuracy over the whole split goes to ``EXPDIR/{split}-scores.json`` and TensorBoard; a better
dev accuracy saves ``dev-best.ckpt``.
"""
from __future__ import annotations

from mart_upstream.adapters.s3prl.downstream.common import SingleLabelExpert
from mart_upstream.tasks.gtzan import GENRES

from .dataset import TASK, GtzanDataset


def _dataset(split: str, **datarc) -> GtzanDataset:
    return GtzanDataset(split=split, **datarc)


class DownstreamExpert(SingleLabelExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, GENRES, _dataset, upstream_dim, downstream_expert, expdir, **kwargs)
