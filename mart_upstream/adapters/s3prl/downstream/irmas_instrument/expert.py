"""IRMAS instrument classification: mean-pooled features -> linear or MLP probe over the 11 instruments."""
from __future__ import annotations

from mart_upstream.adapters.s3prl.downstream.common import SingleLabelExpert
from mart_upstream.tasks.irmas import INSTRUMENTS

from .dataset import TASK, IrmasDataset


class DownstreamExpert(SingleLabelExpert):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__(TASK, INSTRUMENTS, IrmasDataset, upstream_dim, downstream_expert, expdir, **kwargs)
