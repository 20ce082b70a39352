"""Transformer building blocks shared by MART's part-whole transformer and PEMR's predicting module."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate query and key/value inputs.

    ``d_model`` need not be divisible by the head count: each head has ``head_dim`` channels
    (Q, K, V in R^{H x head_dim}) and the heads are projected back to ``d_model``.
    """

    def __init__(self, d_model: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q = nn.Linear(d_model, inner)
        self.k = nn.Linear(d_model, inner)
        self.v = nn.Linear(d_model, inner)
        self.out = nn.Linear(inner, d_model)
        self.dropout = dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, N, d]

    def forward(
        self, xq: torch.Tensor, xkv: torch.Tensor, return_qk: bool = False
    ) -> Tuple[torch.Tensor, Optional[Tuple[torch.Tensor, torch.Tensor]]]:
        q, k, v = self.split(self.q(xq)), self.split(self.k(xkv)), self.split(self.v(xkv))
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        o = o.transpose(1, 2).reshape(xq.shape[0], xq.shape[1], -1)  # [B, Nq, H*d]
        return self.out(o), ((q, k) if return_qk else None)


class TransformerBlock(nn.Module):
    """Post-LN transformer encoder layer (Vaswani et al.) whose residual stream is the query input:
    h = LN(xq + MHA(xq, xkv)); out = LN(h + FFN(h)).  With xkv = xq it is ordinary self-attention."""

    def __init__(self, d_model: int, heads: int, head_dim: int, ff_mult: int = 4, dropout: float = 0.1,
                 attn_dropout: float = 0.0):
        super().__init__()
        # Dropout on the attention probabilities is off by default: on long frame sequences it costs
        # more than the attention itself on a CPU; residual and feed-forward dropout stay.
        self.attn = MultiHeadAttention(d_model, heads, head_dim, attn_dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * d_model, d_model),
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, xq: torch.Tensor, xkv: Optional[torch.Tensor] = None, return_qk: bool = False):
        a, qk = self.attn(xq, xq if xkv is None else xkv, return_qk)
        h = self.norm1(xq + self.drop(a))
        out = self.norm2(h + self.drop(self.ff(h)))
        return (out, qk) if return_qk else out


def sinusoidal_positions(n: int, d: int, device=None) -> torch.Tensor:
    """[n, d] sinusoidal position embedding (Vaswani et al. 2017)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
    angle = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(n, d, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d // 2])
    return pe


class ProjectionHead(nn.Module):
    """Linear(512)-ReLU-Linear(256) (MART §3.1, PEMR §3.5)."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = 512, out_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
