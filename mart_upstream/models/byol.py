"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent") on the shared FCN-4 encoder, one of PEMR's
baselines (PEMR Table 2: BYOL on FCN-4, 370 K parameters).

An online network (encoder f_θ, projector g_θ, predictor q_θ) predicts the target network's projection
of the other view; the target (f_ξ, g_ξ) is an exponential moving average of the online encoder and
projector, never optimised (BYOL §3.1):

    ξ ← τ ξ + (1 − τ) θ,   τ = 1 − (1 − τ_base) (cos(π k / K) + 1) / 2   (BYOL §3.2)

    L = ‖q̄_θ(z_θ) − z̄'_ξ‖² + the same with the views swapped   (BYOL eq. 2, symmetric)

The target's weights are buffers (``momentum.momentum_copy``): they reach neither the optimizer nor DDP's
gradient reduction, and checkpoints keep them. Its BatchNorm layers run in training mode, on batch
statistics, as in BYOL. The downstream representation is the online encoder's output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..encoders import FCNConfig, fcn4_config
from ..frontend import FrontendConfig
from ..layers import ProjectionHead
from ..losses import byol_loss
from .momentum import MomentumModel


def byol_tau(k: int, total: int, base: float) -> float:
    """BYOL §3.2: τ at update k of ``total``, raised from ``base`` (k = 0) to 1 (k = total) by a cosine."""
    if total <= 0:
        return base
    k = min(max(k, 0), total)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


def mlp(in_dim: int, hidden: int, out_dim: int, batchnorm: bool) -> nn.Module:
    """BYOL §3.3's MLP: Linear(hidden) - BatchNorm - ReLU - Linear(out); without BatchNorm the
    project's ProjectionHead (Linear - ReLU - Linear)."""
    if not batchnorm:
        return ProjectionHead(in_dim, hidden, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


# PEMR §4.1.3: the methods of its Table 2 train with Adam, lr 3e-4, weight decay 1e-6, batch 48 (the shared
# defaults, stated so they stay the baselines' settings).
PEMR_BASELINE_TRAINING = {"optim": {"lr": 3e-4, "weight_decay": 1e-6}, "run": {"batch_size": 48}}
# the tiny FCN-4 of the PEMR baselines' tests and smoke runs (``tiny_config``)
PEMR_BASELINE_TINY = {"clip_samples": 4000, "encoder": {"channels": [8, 8, 8, 16]}, "proj_hidden": 16, "proj_dim": 8}


@dataclass
class BYOLConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)  # hop 128 (PEMR §4.1.3)
    # FCN-4 (PEMR Table 2); the strategies paper's CNN-5 is ``encoders.cnn5_config()``'s values here
    encoder: FCNConfig = field(default_factory=fcn4_config)
    clip_samples: int = 59049  # crop length as CLMR, PEMR and SimCLR here (3^10 samples, 3.7 s)
    # PEMR §4.1.3: all its methods share the encoder and the projection head's sizes (512 -> 256);
    # BYOL §3.3 used 4096 -> 256 on ImageNet.
    proj_hidden: int = 512
    proj_dim: int = 256
    pred_hidden: int = 512  # BYOL §3.3: the predictor q_θ has the projector's architecture
    mlp_batchnorm: bool = True  # BYOL §3.3: BatchNorm after the hidden layer of projector and predictor
    tau_base: float = 0.996  # BYOL §3.2: τ_base


class BYOL(MomentumModel):
    tiny_config = {**PEMR_BASELINE_TINY, "pred_hidden": 16}
    # BYOL's own LARS, lr 0.2 x B/256 and batch 4096 are ImageNet settings for an optimizer the training
    # loop does not have.
    pretrain_defaults = PEMR_BASELINE_TRAINING
    copy_names = ("target_encoder", "target_head")  # f_ξ, g_ξ
    momentum_field = "tau_base"

    def __init__(self, config: BYOLConfig):
        super().__init__(config)
        c = config
        self.head = mlp(self.encoder.out_dim, c.proj_hidden, c.proj_dim, c.mlp_batchnorm)  # projector g_θ
        self.predictor = mlp(c.proj_dim, c.pred_hidden, c.proj_dim, c.mlp_batchnorm)  # q_θ
        self.make_copies()  # f_ξ, g_ξ initialised to f_θ, g_θ

    def forward(self, views):
        self.check_views(views, 2, self.clip_samples)
        b = views.shape[0]
        spec = self.frontend(views.flatten(0, 1))  # [2B, F, T]: the two views of an example side by side
        h = self.encoder(spec)  # [2B, D]
        z = self.head(h)  # [2B, Dp]
        p = self.predictor(z).view(b, 2, -1)
        with torch.no_grad():
            z_target = self.target_head(self.target_encoder(spec)).view(b, 2, -1)
        loss = byol_loss(p[:, 0], z_target[:, 1]) + byol_loss(p[:, 1], z_target[:, 0])  # BYOL eq. (2), L + L̃
        z = z.view(b, 2, -1)
        return {"loss": loss, "byol": loss.detach(), "emb": h.view(b, 2, -1)[:, 0].detach(),
                "z1": z[:, 0].detach(), "z2": z[:, 1].detach()}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """The target follows the online network after update ``step`` (1-based): τ of update k = step - 1."""
        self.follow(byol_tau(step - 1, total_steps, self.config.tau_base))
