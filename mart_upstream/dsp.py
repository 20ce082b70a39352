"""Signal-processing pieces of the augmentation chain, batched torch code on any device: the phase-locked
phase vocoder and the time stretch built on it (per-row rates), and 2nd-order Butterworth biquad
responses for filtering in the frequency domain.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def work_dtype(x: Tensor) -> torch.dtype:
    """FFT-based transforms run in float32/float64; half-precision inputs are processed in float32."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def phase_vocoder(spec: Tensor, rate, phase_advance: Tensor, lock_phase: bool = True,
                  lock_bins: int = 2) -> Tensor:
    """Time-scale complex STFTs [n, F, M] by 1/rate (rate > 1 shortens) -> [n, F, J].

    ``rate``: a float, or one rate per row (sequence or 1-D tensor of n values); J = ceil(M / rate)
    (the largest over the rows; a row with fewer frames is followed by zero frames).

    The classic phase vocoder (as torchaudio.functional.phase_vocoder, which it reproduces for a
    float rate, complex128 input and ``lock_phase=False``; with complex64 input torchaudio rounds
    the read positions in float32): output frame j reads input position j * rate, magnitudes
    interpolated linearly, phases accumulated from each bin's instantaneous frequency) plus, if
    ``lock_phase``, phase locking in the manner of Laroche & Dolson's identity phase locking (1999):
    only the dominant bins keep their accumulated phase; every other bin takes the phase of the
    strongest bin within +-``lock_bins`` bins (2: the half-width of a Hann window's main lobe) plus
    the phase offset it has from that bin in the input frame. (Laroche & Dolson lock to the nearest
    spectral peak; the bounded window is a cheap, batched stand-in.) This keeps the phase relations
    between the bins of one partial, which the plain vocoder loses: a stretched pure tone comes out
    ~4.7 dB quieter without it when the first frame is a reflected one, and sounds "phasey".
    """
    n, nf, m = spec.shape
    real = spec.real.dtype
    rates = torch.as_tensor(rate, dtype=torch.float64).reshape(-1).cpu().expand(n)
    # input positions read by each output frame, built on the CPU per distinct rate (torchaudio's
    # arange, but always in float64 so float32 and float64 inputs read the same frames); past a
    # row's own end they point at the zero padding. (Only index bookkeeping loops here, once per
    # distinct rate; ``arange(n) * rate`` would batch it but differs from arange in the last bit, which
    # moves a read position that falls on a whole frame to the frame before and changes the phase.)
    per_rate = {r: torch.arange(0, m, r, dtype=torch.float64) for r in rates.unique().tolist()}
    n_out = max(len(v) for v in per_rate.values())
    steps = torch.full((n, n_out), float(m + 1), dtype=torch.float64)
    for r, v in per_rate.items():
        steps[rates == r, : len(v)] = v
    i0 = steps.long().clamp(max=m)
    alpha = (steps - i0).clamp(0, 1).to(device=spec.device, dtype=real)[:, None, :]
    i0 = i0.to(spec.device)  # [n, J]
    padded = F.pad(spec, (0, 2))
    mag_in, ang_in = padded.abs(), padded.angle()  # once per input frame, then gathered
    idx0 = i0[:, None, :].expand(n, nf, n_out)
    idx1 = idx0 + 1
    ang0 = ang_in.gather(-1, idx0)
    mag = (1 - alpha) * mag_in.gather(-1, idx0) + alpha * mag_in.gather(-1, idx1)
    dev = ang_in.gather(-1, idx1) - ang0 - phase_advance  # deviation from the bin's nominal advance per hop
    dev = dev - 2 * math.pi * torch.round(dev / (2 * math.pi))
    # phase advance per output frame, wrapped to [-pi, pi] (a multiple of 2 pi changes nothing) so the
    # running sum stays small: summing the raw advances (up to pi * hop per frame) loses ~0.5 rad in
    # float32 over a few hundred frames
    inc = dev + phase_advance
    inc = inc - 2 * math.pi * torch.round(inc / (2 * math.pi))
    phase = torch.cat([ang0[..., :1], inc[..., :-1]], dim=-1).cumsum(-1)
    if lock_phase and lock_bins > 0:
        # each bin's "owner": the strongest bin within +-lock_bins in the same output frame
        # (a max-pool over frequency; cheaper than scanning for the nearest local maximum)
        flat = mag.transpose(1, 2).reshape(n * n_out, 1, nf)
        owner = F.max_pool1d(flat, 2 * lock_bins + 1, 1, lock_bins, return_indices=True)[1]
        owner = owner.reshape(n, n_out, nf).transpose(1, 2)
        phase = phase.gather(1, owner) + ang0 - ang0.gather(1, owner)
    return torch.polar(mag, phase)


def vocoder_n_fft(sample_rate: int, n_fft: Optional[int]) -> int:
    """The vocoder's FFT size: ``n_fft``, or 1024 points (64 ms, 15.6 Hz bins) at 16 kHz scaled with the
    sample rate."""
    return int(n_fft or next_pow2(round(1024 * sample_rate / 16000)))


def stretch_rows(x: Tensor, rates, n_fft: int, hop: int, length: Optional[int] = None) -> Tensor:
    """Time-stretch each row of ``x`` [n, T] by its rate (> 1 shortens: row i lasts T / rate_i after)
    with the phase-locked phase vocoder: STFT, :func:`phase_vocoder` with per-row rates, inverse STFT,
    all rows at once. Returns [n, length] (default: the longest row's natural length; a row that ends
    sooner is followed by the fading tail of its last frames and then zeros)."""
    wd = work_dtype(x)
    window = torch.hann_window(n_fft, device=x.device, dtype=wd)
    pad_mode = "reflect" if x.shape[1] > n_fft // 2 else "constant"
    spec = torch.stft(x.to(wd), n_fft, hop, window=window, center=True, pad_mode=pad_mode,
                      return_complex=True)  # [n, F, frames]
    phase_advance = torch.linspace(0.0, math.pi * hop, spec.shape[1], device=x.device, dtype=wd)[:, None]
    stretched = phase_vocoder(spec, rates, phase_advance)
    return torch.istft(stretched, n_fft, hop, window=window, center=True, length=length)


# --------------------------------------------------------------------------------------------------
# base class


def biquad_response(lowpass: Tensor, cutoff_hz: Tensor, sample_rate: int, n_fft: int) -> Tensor:
    """Complex response [n, n_fft//2+1] of 2nd-order Butterworth biquads at the rfft bins of size n_fft.

    RBJ Audio-EQ-Cookbook LPF/HPF with Q = 1/sqrt(2) (Butterworth); ``lowpass`` [n] bool picks the
    type per row, ``cutoff_hz`` [n] the -3 dB frequency. Computed in float64.
    """
    w0 = 2.0 * math.pi * cutoff_hz.double() / sample_rate
    cos_w0 = torch.cos(w0)
    alpha = torch.sin(w0) / (2.0 / math.sqrt(2.0))  # sin(w0) / (2Q)
    lp = lowpass.to(w0.device)
    b0 = torch.where(lp, (1.0 - cos_w0) / 2.0, (1.0 + cos_w0) / 2.0)
    b1 = torch.where(lp, 1.0 - cos_w0, -(1.0 + cos_w0))
    b2 = b0
    a0, a1, a2 = 1.0 + alpha, -2.0 * cos_w0, 1.0 - alpha
    w = torch.linspace(0.0, math.pi, n_fft // 2 + 1, dtype=torch.float64, device=w0.device)
    z1 = torch.polar(torch.ones_like(w), -w)[None, :]  # e^{-jw}
    z2 = z1 * z1
    col = lambda c: c[:, None]  # noqa: E731
    return (col(b0) + col(b1) * z1 + col(b2) * z2) / (col(a0) + col(a1) * z1 + col(a2) * z2)
