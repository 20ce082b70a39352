"""The one embedding path from waveforms to representations, shared by the S3PRL and HEAR adapters.

* ``frame_features``: every layer of a model on one frame grid (``model.frame_hop`` samples per
  frame), for audio of any length, processed in chunks with context so memory stays flat.
* ``clip_embeddings``: one vector per clip: the model's ``window_embedding`` (MART: the whole clip's
  part-whole transformer output ŝ⁰; PEMR/SimCLR: the pooled FCN-4 output) averaged over windows of
  the pretraining length (the last one zero padded).
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

from .models.base import SSLModel

# audio per forward pass of clip_embeddings: 32 s (4 windows of paper MART, 8 of PEMR/SimCLR crops)
CLIP_SAMPLES_PER_PASS = 32 * 16000


MAX_AMPLITUDE = 100.0  # beyond this a "waveform" is not audio in [-1, 1] (e.g. int16 values cast to float)


def check_waveforms(wav: torch.Tensor) -> torch.Tensor:
    """The checks every embedding path applies (HEAR and S3PRL adapters included): a float [B, T]
    batch, finite, with samples of a sane amplitude. ValueError naming the sounds at fault."""
    if not isinstance(wav, torch.Tensor) or wav.dim() != 2:
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise ValueError(f"expected a float waveform batch [B, T], got {shape}")
    if not torch.is_floating_point(wav):
        raise ValueError(f"expected a float waveform in [-1, 1], got dtype {wav.dtype}"
                         f"{' (int16 PCM? divide by 32768)' if wav.dtype == torch.int16 else ''}")
    flat = wav.reshape(wav.shape[0], -1)
    bad = (~torch.isfinite(flat).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"audio holds NaN or Inf values (sounds {bad[:10]})")
    peak = flat.abs().amax(dim=1) if flat.shape[1] else torch.zeros(flat.shape[0])
    loud = (peak > MAX_AMPLITUDE).nonzero().flatten().tolist()
    if loud:
        raise ValueError(f"audio peaks at {float(peak.max()):.4g}, not a waveform in [-1, 1] (sounds {loud[:10]}; "
                         "int16 samples cast to float? divide by 32768)")
    return wav


def windows(wav: torch.Tensor, size: int, hop: int | None = None) -> torch.Tensor:
    """[B, T] -> [B, W, size] windows with ``hop`` (default: ``size``); short inputs are zero padded."""
    check_waveforms(wav)
    hop = hop or size
    t = wav.shape[1]
    n = max(1, -(-max(t - size, 0) // hop) + 1)
    pad = (n - 1) * hop + size - t
    if pad > 0:
        wav = F.pad(wav, (0, pad))
    return wav.unfold(1, size, hop)


def _device(model: SSLModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def clip_embeddings(model: SSLModel, wav: torch.Tensor, max_windows: Optional[int] = None,
                    max_samples: int = CLIP_SAMPLES_PER_PASS) -> torch.Tensor:
    """[B, T] waveforms at the model's sample rate -> [B, D], in chunks of ``max_windows`` windows
    (default: as many as fit in ``max_samples`` of audio, so peak memory is bounded for any model)."""
    w = windows(wav, model.clip_samples)  # [B, W, L]
    b, n, L = w.shape
    max_windows = max_windows or max(1, max_samples // L)
    flat = w.reshape(b * n, L)
    dev = _device(model)
    outs = [model.window_embedding(flat[i : i + max_windows].to(dev)) for i in range(0, b * n, max_windows)]
    return torch.cat(outs).view(b, n, -1).mean(dim=1)


@torch.no_grad()
def frame_features(model: SSLModel, wav: torch.Tensor) -> List[torch.Tensor]:
    """[B, T] -> layers [B, ceil(T / frame_hop), D]; frame i covers samples from i * frame_hop.

    The signal is cut into chunks of ``model.feature_chunk`` samples, each computed with
    ``model.feature_context`` samples of real signal on both sides, then trimmed, so the result does not
    depend on where chunks fall, and memory does not grow with the input length.
    """
    check_waveforms(wav)
    hop, chunk, ctx = model.frame_hop, model.feature_chunk, model.feature_context
    if chunk % hop or ctx % hop:
        raise ValueError(f"feature_chunk ({chunk}) and feature_context ({ctx}) must be multiples of {hop}")
    t = wav.shape[1]
    n_out = max(1, -(-t // hop))
    total = -(-n_out * hop // chunk) * chunk  # pad to whole chunks
    wav = F.pad(wav, (ctx, total - t + ctx)).to(_device(model))
    a = ctx // hop
    out: List[torch.Tensor] = []
    for start in range(0, total, chunk):
        layers = model.window_features(wav[:, start : start + chunk + 2 * ctx])
        first, last = start // hop, min(n_out, (start + chunk) // hop)
        if not out:  # the result is allocated once, so memory is the output plus one chunk's work
            out = [x.new_empty(x.shape[0], n_out, *x.shape[2:]) for x in layers]
        for o, x in zip(out, layers):
            o[:, first:last] = x[:, a : a + last - first]
    return out
