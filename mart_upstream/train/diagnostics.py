"""Learning diagnostics logged beside the loss: is the pretext task learned, and is the
representation collapsing?

* ``pos_cos``: mean cosine between the two views' projections of each example (rises as the
  positive pairs are pulled together).
* ``pair_top1``: in-batch retrieval: the fraction of view-1 projections whose nearest view-2
  projection (cosine) is their own pair (chance = 1 / batch).
* ``emb_rank``: effective rank (Roy & Vetterli 2007: exp of the entropy of the normalised singular
  values) of the centred downstream representations of the batch; at most the batch size - 1.
  Dimensional collapse shows here first.
* ``emb_std``: mean per-dimension standard deviation of the L2-normalised representations (0 when
  every example maps to one point).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def effective_rank(x: torch.Tensor, eps: float = 1e-12) -> float:
    """Effective rank of [N, D] rows after centring."""
    x = x.double() - x.double().mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    if float(s.sum()) <= eps:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p + eps)).sum()))


@torch.no_grad()
def learning_diagnostics(z1: torch.Tensor, z2: torch.Tensor, emb: torch.Tensor) -> Dict[str, float]:
    """z1, z2: [B, Dp] projections of the positive pairs; emb: [B, D] representations."""
    a, b = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    sim = a @ b.t()
    target = torch.arange(a.shape[0], device=a.device)
    return {
        "pos_cos": float(sim.diagonal().mean()),
        "pair_top1": float((sim.argmax(dim=1) == target).float().mean()),
        "emb_rank": effective_rank(emb.float()),
        "emb_std": float(F.normalize(emb.float(), dim=-1).std(dim=0).mean()),
    }
