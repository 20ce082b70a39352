"""The one embedding path: waveforms of any length -> clip representations of a pretrained model.

Audio is cut into windows of the model's pretraining length (the last one zero padded), each window
gets the model's ``window_embedding`` (MART: the part-whole transformer's whole output ŝ⁰; PEMR and
SimCLR: the pooled FCN-4 output), and a clip's vector is the mean over its windows.
"""
from __future__ import annotations

from typing import Optional

import torch

from .models.base import SSLModel


def windows(wav: torch.Tensor, size: int, hop: Optional[int] = None) -> torch.Tensor:
    """[B, T] -> [B, W, size] windows with ``hop`` (default: ``size``); short inputs are zero padded."""
    if wav.dim() != 2:
        raise ValueError(f"expected a waveform batch [B, T], got shape {tuple(wav.shape)}")
    hop = hop or size
    t = wav.shape[1]
    n = max(1, -(-max(t - size, 0) // hop) + 1)
    pad = (n - 1) * hop + size - t
    if pad > 0:
        wav = torch.nn.functional.pad(wav, (0, pad))
    return wav.unfold(1, size, hop)


@torch.no_grad()
def clip_embeddings(model: SSLModel, wav: torch.Tensor, max_windows: int = 64) -> torch.Tensor:
    """[B, T] waveforms at the model's sample rate -> [B, D], in chunks of ``max_windows`` windows."""
    w = windows(wav, model.clip_samples)  # [B, W, L]
    b, n, L = w.shape
    flat = w.reshape(b * n, L)
    dev = next(model.parameters()).device
    outs = [model.window_embedding(flat[i : i + max_windows].to(dev)) for i in range(0, b * n, max_windows)]
    return torch.cat(outs).view(b, n, -1).mean(dim=1)
