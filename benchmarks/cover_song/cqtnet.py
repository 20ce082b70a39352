"""CQT-Net (Yu et al., ICASSP 2020) and its combination with a pretrained encoder (MART Table 3,
PEMR Table 5: "(pre. FCN) + CQT-Net").

Input: a log-compressed constant-Q spectrogram (84 bins, 12 per octave, from C1), averaged over time
in groups of ``downsample`` frames. Convolutions with no padding along pitch shrink the pitch axis;
the final global max pool over pitch and time makes the embedding (nearly) invariant to
transposition (a key change is a shift along the pitch axis) and to length. Trained as a
classifier over the training works; the 300-d layer before the classifier is the embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CQTConfig:
    sample_rate: int = 16000
    hop_length: int = 512
    n_bins: int = 84  # 7 octaves
    bins_per_octave: int = 12
    downsample: int = 20  # frames averaged (CQT-Net: ~0.46 s per frame at 22.05 kHz)


def cqt(wav: np.ndarray, cfg: CQTConfig) -> np.ndarray:
    """[T] mono at cfg.sample_rate -> [n_bins, frames] float32 log(1 + |CQT|), time-averaged."""
    c = np.abs(librosa.cqt(np.asarray(wav, dtype=np.float32), sr=cfg.sample_rate, hop_length=cfg.hop_length,
                           n_bins=cfg.n_bins, bins_per_octave=cfg.bins_per_octave))
    n = max(1, c.shape[1] // cfg.downsample)
    c = c[:, : n * cfg.downsample].reshape(cfg.n_bins, n, -1).mean(axis=2) if c.shape[1] >= cfg.downsample else c
    return np.log1p(c).astype(np.float32)


def _block(cin: int, cout: int, kernel: Tuple[int, int], dilation: Tuple[int, int] = (1, 1)) -> nn.Sequential:
    # pitch axis: no padding (it shrinks); time axis: padded to keep length
    pad_t = dilation[1] * (kernel[1] - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, dilation=dilation, padding=(0, pad_t), bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CQTNet(nn.Module):
    """[B, 84, T] -> [B, 300] embedding (and logits over training works when ``n_classes``)."""

    MIN_FRAMES = 16  # four time poolings by 2

    def __init__(self, n_classes: Optional[int] = None, embedding_dim: int = 300, dropout: float = 0.1):
        super().__init__()
        pool = nn.MaxPool2d((1, 2), ceil_mode=True)
        self.features = nn.Sequential(
            _block(1, 32, (12, 3)), _block(32, 64, (13, 3), (1, 2)), pool,
            _block(64, 64, (13, 3)), _block(64, 64, (3, 3), (1, 2)), pool,
            _block(64, 128, (3, 3)), _block(128, 128, (3, 3), (1, 2)), pool,
            _block(128, 256, (3, 3)), _block(256, 256, (3, 3), (1, 2)), pool,
            _block(256, 512, (3, 3)), _block(512, 512, (3, 3), (1, 2)),
        )
        self.embed = nn.Linear(512, embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes) if n_classes else None
        self.embedding_dim = embedding_dim

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.MIN_FRAMES:
            x = F.pad(x, (0, self.MIN_FRAMES - x.shape[-1]))
        h = self.features(x.unsqueeze(1))  # [B, 512, pitch', T']
        return F.adaptive_max_pool2d(h, 1).flatten(1)  # [B, 512]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x))


class EncoderCQTNet(nn.Module):
    """A pretrained encoder (MART / PEMR / SimCLR clip embedding, fine-tuned) beside CQT-Net, fused by a
    linear layer into one embedding."""

    def __init__(self, encoder: nn.Module, embedding_dim: int = 300, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.cqtnet = CQTNet(embedding_dim=embedding_dim)
        self.fuse = nn.Linear(512 + int(encoder.embedding_dim), embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        """x: CQT [B, 84, T]; wav: [B, clip_samples] at 16 kHz."""
        return self.fuse(torch.cat([self.cqtnet.trunk(x), self.encoder.window_embedding(wav)], dim=1))
