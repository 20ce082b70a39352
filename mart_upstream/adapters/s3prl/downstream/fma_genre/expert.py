"""FMA-small genre classification: mean-pooled features -> linear or MLP probe over the 8 genres."""
from __future__ import annotations

from mart_upstream.adapters.s3prl.downstream.common import SingleLabelExpert
from mart_upstream.tasks.fma import GENRES

from .dataset import TASK, FmaDataset


class DownstreamExpert(SingleLabelExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, GENRES, FmaDataset, upstream_dim, downstream_expert, expdir, **kwargs)
