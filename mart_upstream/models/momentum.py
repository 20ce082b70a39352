"""Momentum copies: a model's encoder and projection head followed by slowly moving copies (BYOL's target
network f_ξ, g_ξ; MoCo's key encoder f_k and head), one exponential moving average for both:

    ξ ← τ ξ + (1 − τ) θ   (BYOL §3.1; MoCo eq. 2 with m = τ)

The copies' weights are buffers (``momentum_copy``): they reach neither the optimizer nor DDP's gradient
reduction, and checkpoints keep them under the names the model gives them.
"""
from __future__ import annotations

import copy
from typing import ClassVar, Tuple

import torch
from torch import nn

from ..config import ConfigError
from .base import SSLModel


def momentum_copy(online: nn.Module) -> nn.Module:
    """A copy of ``online`` whose parameters are buffers: it changes only through ``ema_update`` (no
    gradient, outside the optimizer and DDP's gradient reduction) and is saved in the state dict."""
    target = copy.deepcopy(online)
    for module in target.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                del module._parameters[name]
                module.register_buffer(name, p.detach())
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θ_target ← τ θ_target + (1 − τ) θ_online for every parameter of ``online`` (BYOL §3.1, MoCo eq. 2).
    The target's BatchNorm statistics are its own (from its forward passes)."""
    for name, p in online.named_parameters():
        t = target.get_buffer(name)
        t.mul_(tau).add_(p.detach().to(t.dtype), alpha=1.0 - tau)


class MomentumModel(SSLModel):
    """A model whose encoder and projection head have momentum copies.

    A subclass names its copies (``copy_names``: the attributes of the encoder's and the head's copy, as
    its checkpoints store them) and its momentum setting (``momentum_field``, a config field in [0, 1]),
    calls ``make_copies()`` once its head is built, and ``follow(tau)`` after every optimizer step."""

    copy_names: ClassVar[Tuple[str, str]] = ("target_encoder", "target_head")
    momentum_field: ClassVar[str] = "momentum"

    def __init__(self, config):
        super().__init__(config)
        value = getattr(config, self.momentum_field)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{self.momentum_field} must be in [0, 1], got {value}")

    def make_copies(self) -> None:
        """The copies of the encoder and head as they are now (MoCo Algorithm 1, BYOL: ξ initialised to θ)."""
        for name, online in zip(self.copy_names, (self.encoder, self.head)):
            setattr(self, name, momentum_copy(online))

    def follow(self, tau: float) -> None:
        """Both copies one step of the moving average towards the online encoder and head."""
        for name, online in zip(self.copy_names, (self.encoder, self.head)):
            ema_update(getattr(self, name), online, tau)
