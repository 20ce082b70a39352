"""Fully convolutional encoders after Choi et al. 2016 (conv-BN-ReLU-maxpool stacks).

FCN-4 is PEMR's base encoder (~370 K parameters, 512-d output, PEMR §3.5, Table 2); FCN-7 is MART's
projection encoder E(·) (MART §2.2); CNN-5 is the strategies paper's encoder (five 5x5 convolutions
with BatchNorm and 2-D max pooling, one vector per 3 s segment, strategies §2.1). All map a log-mel
[B, F, T] to a clip vector [B, D] and can return frame-level maps [B, T_k, C_k] (frequency
max-pooled) of every block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import nn


@dataclass
class FCNConfig:
    n_mels: int = 128
    channels: Tuple[int, ...] = (64, 64, 64, 512)
    freq_pools: Tuple[int, ...] = (2, 4, 4, 4)  # 128 mel bands -> 1
    time_pools: Tuple[int, ...] = (2, 2, 1, 1)  # frame maps at hop * 4
    global_pool: str = "max"  # "max" (Choi et al.) or "mean" over the remaining frames
    kernel: int = 3  # square convolution kernel (odd: "same" padding)
    # ceil mode keeps a partial last pooling window, so short inputs never pool to zero frames and the
    # end of a clip is seen; floor mode (False) drops it, as PyTorch's default and the strategies
    # paper's code (MelConv5by5Enc)
    ceil_mode: bool = True

    @property
    def out_dim(self) -> int:
        return self.channels[-1]

    @property
    def time_stride(self) -> int:
        s = 1
        for p in self.time_pools:
            s *= p
        return s


def fcn4_config() -> FCNConfig:
    return FCNConfig()


def fcn7_config() -> FCNConfig:
    return FCNConfig(
        channels=(64, 64, 128, 128, 256, 256, 512),
        freq_pools=(2, 2, 2, 2, 2, 2, 2),
        time_pools=(2, 2, 2, 2, 1, 1, 1),
    )


def cnn5_config() -> FCNConfig:
    """Strategies §2.1: 5 layers of 5x5 convolutions, BatchNorm, 2-D max pooling. The paper gives no
    widths, pool sizes or mel bands; these follow its published code (MelConv5by5Enc: 128-256-256-512-512
    channels, 96 mel bands pooled 2-2-2-4-3 to one, time pools 2-2-2-4-5).

    One difference, kept on purpose: pooling in ceil mode. The code pools in floor mode, so a 3 s
    segment's 188 frames go 94, 47, 23, 5, 1: the pools drop the positions of the last 28 frames (1 of 47
    at the third pool, 3 of 23 at the fourth: 0.45 s, 15% of the segment), which then reach the output
    only through the edges of the 5x5 kernels of the frames before them. In ceil mode they go 94, 47,
    24, 6, 2 and the global max pool makes the two last-layer frames one vector; every frame is pooled,
    and a clip shorter than 160 frames still gives a frame. ``ceil_mode=False`` is the code's form."""
    return FCNConfig(
        n_mels=96,
        channels=(128, 256, 256, 512, 512),
        freq_pools=(2, 2, 2, 4, 3),
        time_pools=(2, 2, 2, 4, 5),
        kernel=5,
    )


class FCN(nn.Module):
    def __init__(self, cfg: FCNConfig):
        super().__init__()
        n = len(cfg.channels)
        if not (len(cfg.freq_pools) == len(cfg.time_pools) == n):
            raise ValueError("FCNConfig: channels, freq_pools and time_pools need the same length")
        f = cfg.n_mels
        for p in cfg.freq_pools:
            f //= p
        if f < 1:
            raise ValueError(f"FCNConfig: freq_pools reduce {cfg.n_mels} mel bands below 1")
        if cfg.global_pool not in ("max", "mean"):
            raise ValueError(f"FCNConfig.global_pool must be 'max' or 'mean', got {cfg.global_pool!r}")
        if cfg.kernel < 1 or cfg.kernel % 2 == 0:
            raise ValueError(f"FCNConfig.kernel must be a positive odd number, got {cfg.kernel}")
        self.cfg = cfg
        blocks = []
        c_in = 1
        for c, fp, tp in zip(cfg.channels, cfg.freq_pools, cfg.time_pools):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c, cfg.kernel, padding=cfg.kernel // 2, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    # ceil_mode keeps a partial last window so short inputs never pool to zero frames
                    nn.MaxPool2d((fp, tp), ceil_mode=cfg.ceil_mode),
                )
            )
            c_in = c
        self.blocks = nn.ModuleList(blocks)

    @property
    def out_dim(self) -> int:
        return self.cfg.out_dim

    def forward_maps(self, spec: torch.Tensor) -> List[torch.Tensor]:
        """log-mel [B, F, T] -> per-block frame maps [B, T_k, C_k] (max over frequency)."""
        x = spec.unsqueeze(1)  # [B, 1, F, T]
        maps = []
        for block in self.blocks:
            x = block(x)  # [B, C_k, F_k, T_k]
            maps.append(x.amax(dim=2).transpose(1, 2))
        return maps

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, D]"""
        return frames.amax(dim=1) if self.cfg.global_pool == "max" else frames.mean(dim=1)

    def frame_map(self, spec: torch.Tensor) -> torch.Tensor:
        """log-mel [B, F, T] -> the last block's frame map [B, T_k, D] (``forward_maps(spec)[-1]``)."""
        x = spec.unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        return x.amax(dim=2).transpose(1, 2)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """log-mel [B, F, T] -> clip representation [B, D]."""
        return self.pool(self.frame_map(spec))
