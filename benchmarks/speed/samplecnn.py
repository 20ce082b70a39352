"""CLMR's SampleCNN encoder (Lee et al. 2017, "Sample-level deep CNNs for music auto-tagging",
as used by Spijkervet & Burgoyne 2021), the raw-waveform reference the encoders are timed against.

Layout (the 3^9 model): a stride-3 conv with 128 channels on 59049 raw samples, nine blocks of
conv3-BN-ReLU-maxpool3 (channels 128, 128, 256, 256, 256, 256, 256, 256, 512), which bring 19683
frames down to one, a 512-channel conv3-BN-ReLU block, and CLMR's 50-way output layer (the tag head
of MagnaTagATune): 2.39 M parameters. Embeddings are the 512-d output before that layer. CLMR runs it
at 22.05 kHz; here it gets the same 16 kHz audio as the other encoders, in 59049-sample windows.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from mart_upstream.embedding import check_waveforms, windows

WINDOW = 59049  # 3^10 samples
BLOCK_CHANNELS = (128, 128, 256, 256, 256, 256, 256, 256, 512)
EXPECTED_PARAMS = 2.4e6


def _conv_block(c_in: int, c_out: int, pool: bool, **conv) -> nn.Sequential:
    layers = [nn.Conv1d(c_in, c_out, 3, **conv), nn.BatchNorm1d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool1d(3, stride=3))
    return nn.Sequential(*layers)


class SampleCNN(nn.Module):
    """[B, 59049] raw waveform windows -> [B, 512]."""

    window = WINDOW
    embedding_dim = 512

    def __init__(self, n_classes: int = 50, block_channels: Sequence[int] = BLOCK_CHANNELS):
        super().__init__()
        stem = block_channels[0]
        blocks = [_conv_block(1, stem, pool=False, stride=3)]
        c_in = stem
        for c in block_channels:
            blocks.append(_conv_block(c_in, c, pool=True, padding=1))
            c_in = c
        blocks.append(_conv_block(c_in, self.embedding_dim, pool=False, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(self.embedding_dim, n_classes)  # CLMR's tag head; not part of the embedding

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2 or wav.shape[1] != self.window:
            raise ValueError(f"SampleCNN expects windows [B, {self.window}], got {tuple(wav.shape)}")
        return self.blocks(wav.unsqueeze(1)).flatten(1)  # one frame of 512 channels is left

    @torch.no_grad()
    def window_embeddings(self, wav: torch.Tensor, max_windows: int = 16) -> torch.Tensor:
        """[B, T] -> [B, W, 512]: one vector per 59049-sample window (the last one zero padded),
        ``max_windows`` windows per forward call so memory does not grow with the input length."""
        w = windows(check_waveforms(wav), self.window)
        b, n, size = w.shape
        flat = w.reshape(b * n, size)
        dev = next(self.parameters()).device
        outs: List[torch.Tensor] = [self(flat[i : i + max_windows].to(dev)) for i in range(0, b * n, max_windows)]
        return torch.cat(outs).view(b, n, -1)

    def clip_embeddings(self, wav: torch.Tensor, max_windows: int = 16) -> torch.Tensor:
        """[B, T] -> [B, 512]: the mean over windows, as CLMR's linear evaluation averages a track."""
        return self.window_embeddings(wav, max_windows).mean(dim=1)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_size(model: SampleCNN, rel: float = 0.05) -> int:
    """The parameter count, which must be within ``rel`` of CLMR's 2.4 M."""
    n = num_parameters(model)
    if abs(n - EXPECTED_PARAMS) > rel * EXPECTED_PARAMS:
        raise AssertionError(f"SampleCNN has {n:,} parameters, expected about {EXPECTED_PARAMS:,.0f}")
    return n
