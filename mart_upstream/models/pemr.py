"""PEMR: contrastive learning with a positive-negative frame mask.

Paper: ``../shared/papers/001_*`` (Yao et al., WWW'22), §3.3-3.6 and §4.1.3.
Two augmented crops of one track give log-mels F' and F''. A predicting module (a transformer over
frames with a learnable [CLS]) learns frame context by masked-frame prediction (eq. 6-7); its last
layer's [CLS] queries of both views against the frame keys of F'' score every frame of F'' (eq. 4);
the lowest-scored ratio r of frames is removed by the positive mask and kept alone by the negative
mask (eq. 5). F', F''_pos and F''_neg go through the shared FCN-4 + projection head and are
trained with Barlow Twins (eq. 8) and the negative term (eq. 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders import FCNConfig, fcn4_config
from ..errors import ConfigError
from ..frontend import FrontendConfig
from ..layers import TransformerBlock, sinusoidal_positions
from ..losses import barlow_twins, negative_decorrelation
from .base import SSLModel

FRAME_MASKS = ("none", "positive", "positive_negative")
MASK_FILLS = ("mean", "floor", "zero")


@dataclass
class PemrConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)  # hop 128 (PEMR §4.1.3)
    encoder: FCNConfig = field(default_factory=fcn4_config)  # FCN-4, 512-d (PEMR §3.5)
    clip_samples: int = 59049  # crop length as CLMR (3^10 samples, 3.7 s at 16 kHz)
    d_model: int = 192  # frame-token width of the predicting module
    layers: int = 3  # PEMR §4.1.3: 3 transformer layers
    heads: int = 3  # ... with 3 attention heads
    head_dim: int = 64
    ff_mult: int = 4
    dropout: float = 0.1
    mask_prob: float = 0.15  # BERT protocol: 15% of frames selected,
    mask_replace: float = 0.8  # of which 80% replaced by the [MASK] frame,
    mask_random: float = 0.1  # 10% by a random frame of the batch, 10% left unchanged
    frame_mask: str = "positive_negative"  # "none" | "positive" | "positive_negative"
    mask_ratio: float = 0.1  # r (PEMR §3.4, default 10%)
    # Value of masked log-mel frames. PEMR §3.4 multiplies the frames by the mask ("zero"), but 0 is a
    # loud value in log-mel (median about -6, silence log(1e-6) = -13.8). "mean": each clip's mean
    # log-mel per band (no information about the removed frames); "floor": silence, the log floor.
    mask_fill: str = "mean"
    bt_lambda: float = 5e-3  # λ of eq. (8), the Barlow-Twins off-diagonal weight
    neg_lambda: float = 5e-3  # λ of eq. (9) ("the same λ" trades L_neg off against eq. (8)'s second term)
    w_pred: float = 1.0
    w_pos: float = 1.0
    w_neg: float = 1.0
    proj_hidden: int = 512
    proj_dim: int = 256  # D_p = 256


class PredictingModule(nn.Module):
    """Transformer over log-mel frames with a learnable [CLS] and a frame predictor (PEMR §3.3)."""

    def __init__(self, cfg: PemrConfig, n_mels: int):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(n_mels, cfg.d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.mask_frame = nn.Parameter(torch.zeros(n_mels))  # the [MASK] input frame
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.heads, cfg.head_dim, cfg.ff_mult, cfg.dropout)
            for _ in range(cfg.layers)
        )
        self.predict = nn.Sequential(  # FFN predicting the masked frames (eq. 6)
            nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.LayerNorm(cfg.d_model), nn.Linear(cfg.d_model, n_mels)
        )
        nn.init.normal_(self.cls, std=0.02)

    def encode(self, frames: torch.Tensor, return_qk: bool = False):
        """frames [B, T, F] -> hidden [B, 1+T, d] (index 0 is [CLS]) and the last layer's (Q, K)."""
        b, t, _ = frames.shape
        x = self.inp(frames) + sinusoidal_positions(t, self.cfg.d_model, frames.device)
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        qk = None
        for i, layer in enumerate(self.layers):
            if return_qk and i == len(self.layers) - 1:
                x, qk = layer(x, return_qk=True)  # q, k: [B, H, 1+T, d_h]
            else:
                x = layer(x)
        return x, qk

    def bert_mask(self, frames: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """BERT protocol on frames [B, T, F] -> (corrupted frames, selected [B, T] bool)."""
        c = self.cfg
        b, t, f = frames.shape
        u = torch.rand(b, t, device=frames.device)
        selected = u < c.mask_prob
        action = torch.rand(b, t, device=frames.device)
        replace = selected & (action < c.mask_replace)
        randomise = selected & (action >= c.mask_replace) & (action < c.mask_replace + c.mask_random)
        out = torch.where(replace[..., None], self.mask_frame.to(frames.dtype).expand(b, t, f), frames)
        donors = frames.reshape(b * t, f)[torch.randint(0, b * t, (b, t), device=frames.device)]
        out = torch.where(randomise[..., None], donors, out)
        return out, selected

    def prediction_loss(self, frames: torch.Tensor) -> torch.Tensor:
        """PEMR eq. (6)-(7): smooth-L1 between predicted and original masked frames."""
        corrupted, selected = self.bert_mask(frames)
        hidden, _ = self.encode(corrupted)
        pred = self.predict(hidden[:, 1:])
        if not selected.any():
            return pred.sum() * 0.0
        return F.smooth_l1_loss(pred[selected].float(), frames[selected].float(), beta=1.0)


def frame_scores(q1: torch.Tensor, q2: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """PEMR eq. (4): s = Σ_h softmax(CLS'_h^Q F''_h^K / √d) + softmax(CLS''_h^Q F''_h^K / √d).

    q1, q2: last-layer queries [B, H, 1+T, d] of view 1 and view 2; k2: keys of view 2.
    Returns per-frame scores of view 2, [B, T].
    """
    keys = k2[:, :, 1:]  # frames only, [B, H, T, d]
    scale = 1.0 / math.sqrt(keys.shape[-1])
    s = 0
    for q in (q1, q2):
        cls_q = q[:, :, :1]  # [B, H, 1, d]
        s = s + torch.softmax((cls_q @ keys.transpose(-1, -2)).squeeze(2) * scale, dim=-1)
    return s.sum(dim=1)


def positive_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """PEMR eq. (5): 0 for the round(r*T) lowest-scored frames, 1 for the rest. [B, T] float."""
    b, t = scores.shape
    k = int(round(ratio * t))
    mask = torch.ones_like(scores)
    if k > 0:
        low = scores.topk(k, dim=1, largest=False).indices
        mask.scatter_(1, low, 0.0)
    return mask


class Pemr(SSLModel):
    tiny_config = {"clip_samples": 4000, "encoder": {"channels": [8, 8, 8, 16]}, "d_model": 24, "head_dim": 8,
                   "proj_hidden": 16, "proj_dim": 8}

    @classmethod
    def upgrade_v1_config(cls, config: dict) -> dict:
        """Format 1 stored ``mask_fill`` as the number masked frames were multiplied to: 0.0 is "zero"."""
        fill = config.get("mask_fill", "zero")
        if isinstance(fill, str):
            return config
        if float(fill) != 0.0:
            raise ConfigError(f"pemr checkpoint with mask_fill={fill} cannot be upgraded")
        return dict(config, mask_fill="zero")

    def __init__(self, config: PemrConfig):
        if config.mask_fill not in MASK_FILLS:
            raise ValueError(f"PemrConfig.mask_fill must be one of {MASK_FILLS}, got {config.mask_fill!r}")
        if config.frame_mask not in FRAME_MASKS:
            raise ValueError(f"PemrConfig.frame_mask must be one of {FRAME_MASKS}, got {config.frame_mask!r}")
        if not 0.0 <= config.mask_ratio < 1.0:
            raise ValueError(f"PemrConfig.mask_ratio must be in [0, 1), got {config.mask_ratio}")
        super().__init__(config)
        self.predicting = PredictingModule(config, config.frontend.n_mels)

    def frame_masks(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """Positive mask of view 2's frames from the predicting module (no gradient: it is discrete)."""
        with torch.no_grad():
            _, (q1, _) = self.predicting.encode(f1.transpose(1, 2), return_qk=True)
            _, (q2, k2) = self.predicting.encode(f2.transpose(1, 2), return_qk=True)
            return positive_mask(frame_scores(q1, q2, k2).float(), self.config.mask_ratio)

    def apply_mask(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Keep frames where mask is 1; the others get ``mask_fill`` (spec [B, F, T], mask [B, T])."""
        m = mask[:, None, :].to(spec.dtype)  # [B, 1, T]
        fill = self.config.mask_fill
        if fill == "zero":
            return spec * m  # PEMR §3.4 literally
        if fill == "floor":
            value = torch.full_like(spec[:, :, :1], math.log(self.config.frontend.log_offset))
        else:
            value = spec.mean(dim=2, keepdim=True)
        return spec * m + value * (1 - m)

    def forward(self, views: torch.Tensor) -> Dict[str, torch.Tensor]:
        c = self.config
        self.check_views(views, 2, c.clip_samples)
        b = views.shape[0]
        specs = self.frontend(views.flatten(0, 1)).view(b, 2, c.frontend.n_mels, -1)
        f1, f2 = specs[:, 0], specs[:, 1]  # F', F'' [B, F, T]
        l_pred = self.predicting.prediction_loss(torch.cat([f1, f2]).transpose(1, 2))
        out: Dict[str, torch.Tensor] = {"pred": l_pred.detach()}
        loss = c.w_pred * l_pred
        if c.frame_mask == "none":
            batch = torch.cat([f1, f2])
        else:
            pos = self.frame_masks(f1, f2)
            batch = [f1, self.apply_mask(f2, pos)]
            if c.frame_mask == "positive_negative":
                batch.append(self.apply_mask(f2, 1 - pos))
            batch = torch.cat(batch)
        h = self.encoder(batch)
        z = self.head(h).view(-1, b, c.proj_dim)  # [V, B, Dp]
        l_pos = barlow_twins(z[0], z[1], c.bt_lambda)
        loss = loss + c.w_pos * l_pos
        out["pos"] = l_pos.detach()
        if c.frame_mask == "positive_negative":
            l_neg = negative_decorrelation(z[0], z[2], c.neg_lambda)  # eq. (9)
            loss = loss + c.w_neg * l_neg
            out["neg"] = l_neg.detach()
        out["loss"] = loss
        out.update(emb=h[:b].detach(), z1=z[0].detach(), z2=z[1].detach())
        return out
