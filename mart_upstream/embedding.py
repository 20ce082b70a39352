"""The one embedding path from waveforms to representations, shared by the S3PRL and HEAR adapters,
``mart-embed`` and the cover-song tool.

* ``frame_features``: every layer of a model on one frame grid (``model.frame_hop`` samples per
  frame), for audio of any length, processed in chunks with context so memory stays flat.
* ``clip_embeddings``: one vector per clip: the model's ``window_embedding`` (MART: the whole clip's
  part-whole transformer output ŝ⁰; PEMR/SimCLR: the pooled FCN-4 output) over windows of the
  pretraining length (the last one zero padded), summarised by their mean, or by mean ‖ standard
  deviation (the strategies paper's summary, §4) where the model's ``window_summary`` says so. A model
  with a ``sequence_embedding`` (MelCPC: its GRU over every 3 s segment of the clip, summarised) embeds
  the whole clip at once instead, unless a ``summary`` is asked for.

Both take a model as loaded (``checkpoint.load_pretrained``), ready to embed (``checkpoint.load_for_embedding``,
what the embedding tools use: the fast inference form) or an ONNX export (``export.load_onnx``); they
compute under ``torch.inference_mode`` and return ordinary tensors. Both check their input once, here
(``check_waveforms``), and, given the waveforms' ``sample_rate``, resample them to the model's: callers
(the HEAR and S3PRL adapters, ``mart-embed``) check only what is particular to their own interface.
The audio of one forward pass is bounded by one constant, ``SAMPLES_PER_PASS``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

import torchaudio.functional as AF

from .models.base import SUMMARIES, SSLModel, StreamingSummary

# Audio per forward pass of clip_embeddings and frame_features, the one bound on their memory: 2^19
# samples, 32.8 s at 16 kHz (4 windows of paper MART, 8 of PEMR/SimCLR crops; frame chunks are batched
# up to it, a longer one goes alone). The fast encoder splits its calls at half of it
# (``frozen.BATCH_POSITIONS``).
SAMPLES_PER_PASS = 1 << 19

CHECK_SAMPLES = 1 << 18  # samples per sound that check_waveforms looks at in one go
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
    finite = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    peak = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
    # a stretch of samples at a time: the checks' temporaries stay small at any length (the whole
    # input's abs() and isfinite() masks were 1.25x the input, most of the memory of an hour's embedding)
    for start in range(0, flat.shape[1], CHECK_SAMPLES):
        part = flat[:, start : start + CHECK_SAMPLES]
        finite &= torch.isfinite(part).all(dim=1)
        low, high = torch.aminmax(part, dim=1)
        peak = torch.maximum(peak, torch.maximum(high, -low))
    bad = (~finite).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"audio holds NaN or Inf values (sounds {bad[:10]})")
    loud = (peak > MAX_AMPLITUDE).nonzero().flatten().tolist()
    if loud:
        raise ValueError(f"audio peaks at {float(peak.max()):.4g}, not a waveform in [-1, 1] (sounds {loud[:10]}; "
                         "int16 samples cast to float? divide by 32768)")
    return wav


def prepare_waveforms(wav: torch.Tensor, sample_rate: Optional[int] = None, rate: Optional[int] = None,
                      device: Optional[torch.device] = None) -> torch.Tensor:
    """The input check of the embedding path, once per call: ``check_waveforms``, then float32 (on
    ``device`` when given), resampled from ``sample_rate`` to ``rate`` Hz when both are given and differ.
    The embedding functions apply it; a module outside this path that takes the same input (the HEAR
    reference modules) calls it."""
    check_waveforms(wav)
    wav = wav.to(device=device, dtype=torch.float32)
    if sample_rate is not None and rate is not None and sample_rate != rate:
        if isinstance(sample_rate, bool) or not float(sample_rate).is_integer() or not 1000 <= sample_rate <= 384000:
            raise ValueError(f"sample_rate must be a whole number of Hz in [1000, 384000], got {sample_rate!r}")
        wav = AF.resample(wav, int(sample_rate), int(rate))
    return wav


def _prepared(model, wav: torch.Tensor, sample_rate: Optional[int]) -> torch.Tensor:
    """``prepare_waveforms`` for ``model``: resampled to its rate, on its device, where ``sample_rate`` differs."""
    if sample_rate is None or sample_rate == model.frontend.cfg.sample_rate:
        return prepare_waveforms(wav)
    return prepare_waveforms(wav, sample_rate, model.frontend.cfg.sample_rate, _device(model))


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


def _device(model) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _normal(x: torch.Tensor) -> torch.Tensor:
    """A tensor computed under ``torch.inference_mode`` as an ordinary tensor (callers may train on it)."""
    return x.clone() if x.is_inference() else x


@torch.no_grad()
def clip_embeddings(model: SSLModel, wav: torch.Tensor, max_windows: Optional[int] = None,
                    max_samples: int = SAMPLES_PER_PASS, summary: Optional[str] = None,
                    sample_rate: Optional[int] = None) -> torch.Tensor:
    """[B, T] waveforms (at ``sample_rate``, default the model's) -> [B, D] (``summary="mean"``) or [B, 2D]
    (``"mean_std"``: mean ‖ population standard deviation of the windows' embeddings); default: the
    model's ``window_summary``. Computed in chunks of ``max_windows`` windows (default: as many as fit
    in ``max_samples`` of audio); the windows of all B sounds are batched together.

    Memory does not grow with the length beyond the input itself: each chunk's windows are read from
    ``wav`` (only a last, partial window is padded: no padded copy of the input), and their vectors are
    merged into a running summary (``StreamingSummary``) and freed, not kept until the end."""
    if summary is None and hasattr(model, "sequence_embedding"):
        return _sequence_embeddings(model, _prepared(model, wav, sample_rate), max_samples)
    summary = summary or getattr(model, "window_summary", "mean")
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
    wav = _prepared(model, wav, sample_rate)
    L = model.clip_samples
    b, t = wav.shape
    n = max(1, -(-t // L))  # windows per sound, the last one zero padded (as ``windows``)
    max_windows = max_windows or max(1, max_samples // L)
    dev = _device(model)
    acc = StreamingSummary(summary, b)
    with torch.inference_mode():
        for start in range(0, b * n, max_windows):
            idx = range(start, min(b * n, start + max_windows))
            chunk = window_rows(wav, L, idx, n).to(dev)
            acc.add(model.window_embedding(chunk), torch.tensor([i // n for i in idx]))
            del chunk
        emb = acc.result()
    return _normal(emb)


def window_rows(wav: torch.Tensor, size: int, flat: range, per_sound: int) -> torch.Tensor:
    """Windows ``flat`` (consecutive indices into the [B * per_sound] windows of ``windows(wav, size)``,
    sound-major) as one [len(flat), size] batch, read from ``wav``: only a sound's last, partial window
    is padded."""
    t = wav.shape[1]
    sound, k = divmod(flat[0], per_sound)
    if flat[-1] // per_sound == sound and (k + len(flat)) * size <= t:
        # full windows of one sound: a view of it
        return wav[sound, k * size : (k + len(flat)) * size].reshape(len(flat), size)
    rows = []
    for i in flat:
        sound, k = divmod(i, per_sound)
        row = wav[sound, k * size : (k + 1) * size]
        rows.append(row if row.shape[0] == size else F.pad(row, (0, size - row.shape[0])))
    return torch.stack(rows)


def _sequence_embeddings(model, wav: torch.Tensor, max_samples: int) -> torch.Tensor:
    """A model that summarises a whole clip of any length at once (MelCPC: its GRU over every segment,
    strategies paper §4): sounds in groups of about ``max_samples`` of audio (the model bounds its own
    memory within a sound). ``wav`` as ``clip_embeddings`` checked it."""
    b, t = wav.shape
    group, dev = max(1, max_samples // max(t, 1)), _device(model)
    with torch.inference_mode():
        emb = torch.cat([model.sequence_embedding(wav[i : i + group].to(dev)) for i in range(0, b, group)])
    return _normal(emb)


def feature_chunks(model: SSLModel, num_samples: int) -> Tuple[int, List[Tuple[int, int]]]:
    """How ``frame_features`` cuts ``num_samples`` of audio: (samples of padded signal after the left
    context, [(start, length)] of every chunk). Chunks are ``model.feature_chunk`` long; the last one of
    a model with context is cut to the frames still needed (its context keeps it exact), the last one
    of a model without context (MART: whole clips) is zero padded to the full length."""
    hop, chunk, ctx = model.frame_hop, model.feature_chunk, model.feature_context
    if chunk % hop or ctx % hop:
        raise ValueError(f"feature_chunk ({chunk}) and feature_context ({ctx}) must be multiples of {hop}")
    need = max(1, -(-num_samples // hop)) * hop
    starts = range(0, need, chunk)
    if ctx:
        return need, [(s, min(chunk, need - s)) for s in starts]
    return len(starts) * chunk, [(s, chunk) for s in starts]


@torch.no_grad()
def frame_features(model: SSLModel, wav: torch.Tensor, max_samples: int = SAMPLES_PER_PASS,
                   sample_rate: Optional[int] = None, layers: Optional[Sequence[int]] = None,
                   upsample: int = 1) -> List[torch.Tensor]:
    """[B, T] waveforms (at ``sample_rate``, default the model's) -> layers [B, ceil(T / frame_hop), D];
    frame i covers samples from i * frame_hop.

    The signal is cut into chunks of ``model.feature_chunk`` samples (``feature_chunks``), each computed
    with ``model.feature_context`` samples of real signal on both sides, then trimmed, so the result
    does not depend on where chunks fall, and memory does not grow with the input length. Chunks of
    equal length, of all B sounds, are batched: up to ``max_samples`` of audio per forward pass.

    ``layers``: indices of the layers to return (default: all); only those are kept. ``upsample`` (odd):
    the layers on a grid ``upsample`` times finer, ceil(T * upsample / frame_hop) points, linearly
    interpolated: frame i stands for samples [i, i + 1) * hop, centred at (i + 0.5) * hop, and
    ``align_corners=False`` puts fine point k at (k + 0.5) * hop / upsample, so native centres are hit
    exactly and the ends are held (the HEAR adapter's timestamp grid).
    """
    wav = _prepared(model, wav, sample_rate)
    hop, ctx = model.frame_hop, model.feature_context
    b, t = wav.shape
    n_out = max(1, -(-t // hop))
    total, chunks = feature_chunks(model, t)
    dev = _device(model)
    wav = F.pad(wav, (ctx, total - t + ctx)).to(dev)
    a = ctx // hop
    out: List[torch.Tensor] = []
    # (sound, chunk start) pieces grouped by chunk length: the last chunk may be shorter
    by_length: Dict[int, List[Tuple[int, int]]] = {}
    for start, length in chunks:
        by_length.setdefault(length, []).extend((i, start) for i in range(b))
    for length, pieces in by_length.items():
        size = length + 2 * ctx
        group = max(1, max_samples // size)
        for g in range(0, len(pieces), group):
            part = pieces[g : g + group]
            batch = torch.stack([wav[i, s : s + size] for i, s in part]) if len(part) > 1 else \
                wav[part[0][0], part[0][1] : part[0][1] + size][None]
            with torch.inference_mode():
                every = model.window_features(batch)
            kept = every if layers is None else [every[j] for j in layers]
            if not out:  # the result is allocated once, so memory is the output plus one pass's work
                out = [x.new_empty(b, n_out, *x.shape[2:]) for x in kept]
            for k, (i, s) in enumerate(part):
                first, last = s // hop, min(n_out, (s + length) // hop)
                if last <= first:
                    continue
                for o, x in zip(out, kept):
                    o[i, first:last] = x[k, a : a + last - first]
    if upsample > 1:
        n_fine = max(1, -(-t * upsample // hop))
        out = [F.interpolate(x.transpose(1, 2), scale_factor=upsample, mode="linear",
                             align_corners=False).transpose(1, 2)[:, :n_fine] for x in out]
    return out
