"""The CLMR augmentation chain on raw mono waveforms: batched, per example, on the input's device.

Spijkervet & Burgoyne 2021, "Contrastive Learning of Musical Representations" (CLMR), whose chain
(Spijkervet/CLMR ``main.py``) is, in order: polarity inversion, noise, gain, high/low-pass filter,
delay, pitch shift, reverb, each wrapped in its own ``RandomApply(p)``. The transforms here are
re-implementations of the torchaudio-augmentations ones (Spijkervet/torchaudio-augmentations) as
batched tensor code: every example of a ``[B, T]`` batch independently draws whether a transform
applies (with that transform's ``p``) and its parameters.

Randomness: every draw (coin flips, parameters) comes from the ``generator`` passed to ``forward``
(a CPU generator is fine). Bulk noise (white noise, reverb impulse responses) is drawn on the input's
device from a generator seeded by one draw from ``generator``, so the same seed gives the same output
on a given device without moving large random tensors between devices. Signal work is torch ops only
(no numpy, no Python loop over samples or examples; pitch shift's resampling step loops over the
distinct semitone values drawn, at most 14).

Deliberate differences from the reference implementation (all documented at the transform):
* HighLowPass uses a 2nd-order Butterworth biquad applied in the frequency domain (upstream: julius
  windowed-sinc filters, earlier essentia IIR filters).
* Delay returns ``x + volume * delayed`` (upstream additionally halves the sum).
* PitchShift draws whole semitones, 0 excluded (upstream: uniform integer cents in [-700, 700], sox).
* Reverb is a synthetic exponentially decaying noise impulse response (upstream: sox ``reverb``).

Beside CLMR's transforms, ``TimeStretch`` (tempo change at constant pitch, strategies paper §2.3.1)
runs right after the pitch shift when ``p_stretch`` > 0 (off by default: the CLMR chain is unchanged).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
import torchaudio.transforms as AT
from torch import Tensor, nn

from .dsp import biquad_response, next_pow2, phase_vocoder, stretch_rows, vocoder_n_fft, work_dtype  # noqa: F401

# References for the defaults below:
#   [cfg] Spijkervet/CLMR config/config.yaml @8fb2e79 (transforms_polarity 0.8, transforms_noise
#         0.01, transforms_gain 0.3, transforms_filters 0.8, transforms_delay 0.3, transforms_pitch
#         0.6, transforms_reverb 0.6; sample_rate there is 22050, 16000 here), used by main.py, which
#         builds each transform with its class defaults
#   [ta]  Spijkervet/torchaudio-augmentations, torchaudio_augmentations/augmentations/*.py
#         (noise.py @956000e, delay.py @f3e0ad8, filter.py / gain.py / high_low_pass.py @98f511a,
#         pitch_shift.py @633d456)


@dataclass
class AugmentConfig:
    sample_rate: int = 16000
    # each transform: its own probability, CLMR defaults
    p_polarity: float = 0.8  # [cfg] transforms_polarity
    p_noise: float = 0.01  # [cfg] transforms_noise
    noise_snr: tuple = (0.0001, 0.01)  # [ta] Noise(min_snr=0.0001, max_snr=0.01): noise std / signal std
    # Optional: the noise level as a signal-to-noise ratio in dB, uniform on the dB scale (noise std =
    # signal std x 10^(-SNR/20)); replaces ``noise_snr`` when set. CLMR's ratios above are 40-80 dB below
    # the signal; the strategies models use [an] (5, 40) dB (models/siamese.py, STRATEGIES_AUGMENT).
    #   [an] audiomentations AddGaussianSNR / AddColorNoise defaults min_snr_db=5.0, max_snr_db=40.0
    #        (https://iver56.github.io/audiomentations/waveform_transforms/add_color_noise)
    noise_snr_db: Optional[tuple] = None
    p_gain: float = 0.3  # [cfg] transforms_gain
    gain_db: tuple = (-20.0, -1.0)  # [ta] Gain(min_gain=-20.0, max_gain=-1)
    p_filter: float = 0.8  # [cfg] transforms_filters; HighLowPass: half low-pass, half high-pass
    lowpass_hz: tuple = (2200.0, 4000.0)  # [ta] LowPassFilter(freq_low=2200, freq_high=4000)
    highpass_hz: tuple = (200.0, 1200.0)  # [ta] HighPassFilter(freq_low=200, freq_high=1200)
    p_delay: float = 0.3  # [cfg] transforms_delay
    delay_ms: tuple = (200, 500)  # [ta] Delay(min_delay=200, max_delay=500): np.arange -> 200..450 ms
    delay_step_ms: int = 50  # [ta] Delay(delay_interval=50)
    delay_volume: float = 0.5  # [ta] Delay(volume_factor=0.5)
    p_pitch: float = 0.6  # [cfg] transforms_pitch
    pitch_semitones: tuple = (-7, 7)  # [ta] PitchShift(pitch_shift_min=-7.0, pitch_shift_max=7.0); 0 excluded
    p_reverb: float = 0.0  # optional; CLMR evaluated reverb with p=0.6 ([cfg] transforms_reverb)
    reverb_rt60_s: tuple = (0.2, 1.5)
    # Strategies §2.3.1: time stretch with a speed factor uniform in [0.8, 1.2]; not in CLMR's chain
    p_stretch: float = 0.0
    stretch_rate: tuple = (0.8, 1.2)
    # With the stretch on, the training crops are read max(stretch_rate) x as long and the views cut to the
    # model's length after the chain, so a sped-up view is music to its end (no digital silence), as the
    # authors' code reads 1.2 x the segment before its sox ``speed``. No effect while p_stretch = 0.
    stretch_read_ahead: bool = True


def read_samples(clip_samples: int, cfg: "AugmentConfig") -> int:
    """How many samples a training crop reads for views of ``clip_samples`` under ``cfg``: ceil(clip x
    max stretch rate) with the read-ahead of a time stretch (see ``AugmentConfig.stretch_read_ahead``),
    else ``clip_samples``."""
    if cfg.p_stretch > 0 and cfg.stretch_read_ahead and float(cfg.stretch_rate[1]) > 1.0:
        return int(math.ceil(clip_samples * float(cfg.stretch_rate[1]) - 1e-9))
    return int(clip_samples)


# --------------------------------------------------------------------------------------------------
# helpers


def _rand(n: int, g: Optional[torch.Generator]) -> Tensor:
    """n uniforms in [0, 1) on CPU, drawn from g (whatever its device) or the global RNG."""
    dev = g.device if g is not None else torch.device("cpu")
    return torch.rand(n, generator=g, device=dev).cpu()


def _randint(high: int, n: int, g: Optional[torch.Generator]) -> Tensor:
    dev = g.device if g is not None else torch.device("cpu")
    return torch.randint(0, high, (n,), generator=g, device=dev).cpu()


def _uniform(n: int, lo: float, hi: float, g: Optional[torch.Generator]) -> Tensor:
    return lo + (hi - lo) * _rand(n, g).double()


def _device_generator(g: Optional[torch.Generator], device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from one draw of ``g`` (for large noise tensors)."""
    seed = int(_randint(2**62, 1, g))
    return torch.Generator(device=device).manual_seed(seed)


class RandomTransform(nn.Module):
    """Applies :meth:`transform` to each example of a ``[B, T]`` batch independently with probability p.

    The coin flips are drawn first (B uniforms from ``generator``); the transform then draws the
    parameters of the chosen examples only. ``p <= 0`` returns the input unchanged (the same tensor).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects a waveform batch [B, T], got {tuple(x.shape)}")
        if self.p <= 0 or x.shape[0] == 0:
            return x
        chosen = _rand(x.shape[0], generator) < self.p
        n = int(chosen.sum())
        if n == 0:
            return x
        if n == x.shape[0]:
            return self.transform(x, generator).to(x.dtype)
        idx = chosen.nonzero().squeeze(1).to(x.device)
        out = x.clone()
        out[idx] = self.transform(x[idx], generator).to(x.dtype)
        return out

    def transform(self, x: Tensor, g: Optional[torch.Generator]) -> Tensor:  # pragma: no cover
        """Augment every row of ``x`` [n, T] (the rows chosen for this transform)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------------------------------
# transforms


class PolarityInversion(RandomTransform):
    """x -> -x ([ta] PolarityInversion: torch.neg)."""

    def __init__(self, p: float = 0.8):
        super().__init__(p)

    def transform(self, x, g):
        return -x


class Noise(RandomTransform):
    """x + N(0, sigma²), sigma = snr * std(x) per example, snr ~ U(snr[0], snr[1]).

    As [ta] Noise: ``noise_std = uniform(min_snr * std, max_snr * std)``. With ``snr_db`` instead: SNR ~
    U(snr_db[0], snr_db[1]) dB and sigma = std(x) * 10^(-SNR/20) (uniform on the dB scale, as
    audiomentations' AddGaussianSNR). A silent example (std 0) stays silent.
    """

    def __init__(self, p: float = 0.01, snr: Tuple[float, float] = (0.0001, 0.01),
                 snr_db: Optional[Tuple[float, float]] = None):
        super().__init__(p)
        self.snr = tuple(snr)
        self.snr_db = None if snr_db is None else (float(snr_db[0]), float(snr_db[1]))
        if self.snr_db is not None and not self.snr_db[0] <= self.snr_db[1]:
            raise ValueError(f"noise SNR range in dB must satisfy low <= high, got {tuple(snr_db)}")

    def transform(self, x, g):
        n, t = x.shape
        if self.snr_db is not None:
            snr = torch.pow(10.0, -_uniform(n, self.snr_db[0], self.snr_db[1], g) / 20.0).to(x.device, x.dtype)
        else:
            snr = _uniform(n, self.snr[0], self.snr[1], g).to(x.device, x.dtype)
        std = x.std(dim=1) if t > 1 else torch.zeros(n, device=x.device, dtype=x.dtype)
        noise = torch.randn(x.shape, generator=_device_generator(g, x.device), device=x.device, dtype=x.dtype)
        return x + noise * (snr * std)[:, None]

    def extra_repr(self):
        return f"p={self.p}, snr={self.snr}" if self.snr_db is None else f"p={self.p}, snr_db={self.snr_db}"


class Gain(RandomTransform):
    """x * 10^(dB/20), dB ~ U(gain_db) per example ([ta] Gain: torchaudio Vol(gain, "db"))."""

    def __init__(self, p: float = 0.3, gain_db: Tuple[float, float] = (-20.0, -1.0)):
        super().__init__(p)
        self.gain_db = tuple(gain_db)

    def transform(self, x, g):
        db = _uniform(x.shape[0], self.gain_db[0], self.gain_db[1], g)
        return x * torch.pow(10.0, db / 20.0).to(x.device, x.dtype)[:, None]

    def extra_repr(self):
        return f"p={self.p}, gain_db={self.gain_db}"


class HighLowPass(RandomTransform):
    """Per example: with probability p_lowpass (1/2) a low-pass, else a high-pass, cutoff ~ U(range) Hz.

    As [ta] HighLowPass (``random.randint(0, 1)`` picks high or low; cutoffs uniform in
    lowpass_hz / highpass_hz), but the filter is a 2nd-order Butterworth biquad (RBJ cookbook)
    instead of julius's windowed-sinc filters.

    Approximation: rather than running the IIR recursion sample by sample (torchaudio's lfilter is a
    Python loop over time in this build, and per-example coefficients would need B separate calls),
    the zero-padded rfft of each example is multiplied by its biquad's exact frequency response at
    the rfft bins, then irfft'd and cropped to T. This equals the linear convolution with the biquad's
    impulse response except that the response's tail beyond the padding wraps around onto the start.
    The padding is at least max(512, 2 * sample_rate / lowest cutoff) samples; the impulse response
    decays by ~60 dB in about 1.6 * sample_rate / cutoff samples (poles at radius ~1 - w0 / sqrt(2)),
    e.g. ~130 samples for a 200 Hz high-pass at 16 kHz, so the wrapped part is negligible
    (the output matches torchaudio's lowpass_biquad / highpass_biquad to ~1e-6, see the tests).
    """

    min_pad = 512

    def __init__(self, p: float = 0.8, sample_rate: int = 16000,
                 lowpass_hz: Tuple[float, float] = (2200.0, 4000.0),
                 highpass_hz: Tuple[float, float] = (200.0, 1200.0), p_lowpass: float = 0.5):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.lowpass_hz, self.highpass_hz = tuple(lowpass_hz), tuple(highpass_hz)
        self.p_lowpass = float(p_lowpass)  # 1: always low-pass, 0: always high-pass

    def transform(self, x, g):
        n, t = x.shape
        lowpass = _rand(n, g) < self.p_lowpass
        lo_cut = _uniform(n, self.lowpass_hz[0], self.lowpass_hz[1], g)
        hi_cut = _uniform(n, self.highpass_hz[0], self.highpass_hz[1], g)
        cutoff = torch.where(lowpass, lo_cut, hi_cut)
        # keep w0 strictly inside (0, pi): a cutoff at 0 or Nyquist makes the biquad degenerate
        cutoff = cutoff.clamp(1e-3 * self.sample_rate, 0.49 * self.sample_rate)
        n_fft = next_pow2(t + max(self.min_pad, math.ceil(2 * self.sample_rate / float(cutoff.min()))))
        h = biquad_response(lowpass.to(x.device), cutoff.to(x.device), self.sample_rate, n_fft)
        wd = work_dtype(x)
        spec = torch.fft.rfft(x.to(wd), n=n_fft)
        return torch.fft.irfft(spec * h.to(spec.dtype), n=n_fft)[:, :t]

    def extra_repr(self):
        return (f"p={self.p}, sample_rate={self.sample_rate}, lowpass_hz={self.lowpass_hz}, "
                f"highpass_hz={self.highpass_hz}, p_lowpass={self.p_lowpass}")


class Delay(RandomTransform):
    """x + volume * (x delayed by d), d drawn per example from delay_ms[0], +step, ... < delay_ms[1].

    Delay values as [ta] Delay (``np.arange(min_delay, max_delay, delay_interval)``, i.e. 200, 250,
    ..., 450 ms by default; offset = int(ms * sr / 1000) samples, zeros shifted in). Upstream returns
    ``(x + volume * delayed) / 2``, i.e. also lowers the level by 6 dB; here only the echo is added.
    If the range holds no step (delay_ms[0] >= delay_ms[1]) the delay is delay_ms[0].
    """

    def __init__(self, p: float = 0.3, sample_rate: int = 16000, delay_ms: Tuple[int, int] = (200, 500),
                 step_ms: int = 50, volume: float = 0.5):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.delay_ms, self.step_ms, self.volume = tuple(delay_ms), int(step_ms), float(volume)
        choices = list(range(int(delay_ms[0]), int(delay_ms[1]), max(1, self.step_ms))) or [int(delay_ms[0])]
        self.choices_ms = choices

    def transform(self, x, g):
        n, t = x.shape
        ms = torch.tensor(self.choices_ms)[_randint(len(self.choices_ms), n, g)]
        offset = (ms * self.sample_rate) // 1000  # int(ms * sr / 1000) for integer ms
        src = torch.arange(t, device=x.device)[None, :] - offset.to(x.device)[:, None]  # y[t] reads x[t - d]
        delayed = x.gather(1, src.clamp(min=0)) * (src >= 0)
        return x + self.volume * delayed

    def extra_repr(self):
        return (f"p={self.p}, sample_rate={self.sample_rate}, delay_ms={self.delay_ms}, "
                f"step_ms={self.step_ms}, volume={self.volume}")


class PitchShift(RandomTransform):
    """Shift the pitch by s whole semitones, s ~ U{semitones[0], ..., semitones[1]} \\ {0}, same length.

    Upstream ([ta] PitchShift, -7..+7 semitones) uses sox's ``pitch`` on uniform integer cents; here
    the shift is whole semitones (so examples can be grouped) and the method is the classic one:

    1. time-stretch by r = 2^(s/12) with a phase-locked phase vocoder
       (:func:`phase_vocoder`; STFT, vocoder (per-row rates) and torch.istft run once for all
       chosen examples);
    2. resample by r to restore the duration, with r replaced by a rational approximation with
       denominator <= 64 (at most 2 cents off for -7..7) so torchaudio's polyphase resampler stays
       fast (torchaudio.functional.pitch_shift resamples with a huge gcd and is very slow);
    3. crop / zero-pad to exactly T samples.

    Only step 2 loops, over the distinct semitone values drawn (at most 14 by default): each value has
    its own polyphase kernel and stride, so one batched call would need either a stride-1 convolution
    with every value's kernel (numerator times the work) or a gather of every output sample's taps
    (batch x length x kernel width of memory); the rows of one value are resampled together.
    """

    def __init__(self, p: float = 0.6, sample_rate: int = 16000, semitones: Tuple[int, int] = (-7, 7),
                 n_fft: Optional[int] = None, max_denominator: int = 64):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.semitones = (int(semitones[0]), int(semitones[1]))
        choices = [s for s in range(self.semitones[0], self.semitones[1] + 1) if s != 0]
        if not choices:
            raise ValueError(f"pitch semitones {semitones} leave no non-zero shift")
        self.choices = choices
        self.n_fft = vocoder_n_fft(self.sample_rate, n_fft)
        self.hop = self.n_fft // 4
        self.max_denominator = int(max_denominator)
        self._resamplers: dict = {}

    def ratio(self, semitones: int) -> Fraction:
        return Fraction(2.0 ** (semitones / 12.0)).limit_denominator(self.max_denominator)

    def _resampler(self, r: Fraction, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """torchaudio's polyphase sinc resampler from r.numerator to r.denominator, kernel cached."""
        key = (r, device, dtype)
        if key not in self._resamplers:  # a plain dict: the kernels are a cache, not module state
            self._resamplers[key] = AT.Resample(r.numerator, r.denominator, dtype=torch.float64).to(device, dtype)
        return self._resamplers[key]

    def transform(self, x, g):
        n, t = x.shape
        shifts = torch.tensor(self.choices)[_randint(len(self.choices), n, g)]
        groups = {s: self.ratio(s) for s in shifts.unique().tolist()}
        # one batched vocoder call: row i lasts r_i * T afterwards (rate 1/r_i), zero frames after it
        rates = torch.tensor([1.0 / float(groups[s]) for s in shifts.tolist()], dtype=torch.float64)
        lengths = {s: max(1, round(t * float(r))) for s, r in groups.items()}
        y = stretch_rows(x, rates, self.n_fft, self.hop, length=max(lengths.values()))
        out = y.new_empty(n, t)
        for s, r in groups.items():
            idx = (shifts == s).nonzero().squeeze(1).to(x.device)
            # playing the stretched clip r times faster restores the duration and multiplies pitch by r
            ys = self._resampler(r, y.device, y.dtype)(y[idx, : lengths[s]])
            out[idx] = ys[:, :t] if ys.shape[1] >= t else F.pad(ys, (0, t - ys.shape[1]))
        return out

    def extra_repr(self):
        return f"p={self.p}, sample_rate={self.sample_rate}, semitones={self.semitones}, n_fft={self.n_fft}"


class TimeStretch(RandomTransform):
    """Change the tempo by a speed factor r ~ U(rate[0], rate[1]) per example, pitch unchanged, same length.

    Strategies §2.3.1 ("stretch time with a speed factor randomly chosen from a range between 0.8 to
    1.2"): r > 1 plays faster. The phase-locked phase vocoder of :class:`PitchShift` (its step 1, with
    the rates drawn per row, all rows in one call) makes row i last T / r_i samples; the result is then
    cropped to its first T samples (r < 1) or zero padded at the end (r > 1), so up to T (1 - 1/r)
    samples of silence end a sped-up row. In training the crops are read max(rate) x longer than the
    views (``read_samples``; the authors' code reads 1.2 x the segment) and the chain returns their first
    ``clip_samples``, so a view sped up by r <= max(rate) has no silence. (The authors' code uses sox
    ``speed``, a resampling that moves the pitch with the tempo; the vocoder follows the paper's "time
    stretching" and leaves the pitch to :class:`PitchShift`.)
    """

    def __init__(self, p: float = 0.0, sample_rate: int = 16000, rate: Tuple[float, float] = (0.8, 1.2),
                 n_fft: Optional[int] = None):
        super().__init__(p)
        if not 0 < float(rate[0]) <= float(rate[1]) or not math.isfinite(float(rate[1])):
            raise ValueError(f"stretch rate range must satisfy 0 < low <= high, got {tuple(rate)}")
        self.sample_rate = int(sample_rate)
        self.rate = (float(rate[0]), float(rate[1]))
        self.n_fft = vocoder_n_fft(self.sample_rate, n_fft)
        self.hop = self.n_fft // 4

    def transform(self, x, g):
        n, t = x.shape
        rates = _uniform(n, self.rate[0], self.rate[1], g)  # float64 [n]
        lengths = (t / rates).round().clamp(min=1).to(x.device)  # each row's stretched length
        y = stretch_rows(x, rates, self.n_fft, self.hop)
        y = y[:, :t] if y.shape[1] >= t else F.pad(y, (0, t - y.shape[1]))
        # a sped-up row ends at its own length (the vocoder's tail of reflected frames is cut there)
        return y * (torch.arange(t, device=x.device)[None, :] < lengths[:, None])

    def extra_repr(self):
        return f"p={self.p}, sample_rate={self.sample_rate}, rate={self.rate}, n_fft={self.n_fft}"


class Reverb(RandomTransform):
    """Synthetic room reverb: x convolved with exponentially decaying white noise, mixed wet/dry.

    Upstream ([ta] Reverb) runs sox ``reverb`` with random reverberance / damping / room size; this
    is a simple stand-in. Per example an RT60 ~ U(rt60_s) is drawn and the impulse response is
    ``N(0, 1) * exp(-ln(1000) * t / RT60)`` (-60 dB at RT60), of length max(rt60_s) seconds, unit
    energy. The convolution is done with FFTs (linear, no wrap-around), the wet signal is cropped to
    T and scaled to the input's peak, and the output is ``(1 - wet) * x + wet * reverberated``.
    """

    def __init__(self, p: float = 0.0, sample_rate: int = 16000, rt60_s: Tuple[float, float] = (0.2, 1.5),
                 wet: float = 0.5):
        super().__init__(p)
        self.sample_rate = int(sample_rate)
        self.rt60_s, self.wet = tuple(rt60_s), float(wet)

    def transform(self, x, g):
        n, t = x.shape
        wd = work_dtype(x)
        rt60 = _uniform(n, self.rt60_s[0], self.rt60_s[1], g).clamp(min=1e-3).to(x.device, wd)
        length = max(1, int(max(self.rt60_s) * self.sample_rate))
        time = torch.arange(length, device=x.device, dtype=wd) / self.sample_rate
        ir = torch.randn(n, length, generator=_device_generator(g, x.device), device=x.device, dtype=wd)
        ir = ir * torch.exp(-math.log(1000.0) * time[None, :] / rt60[:, None])
        ir = ir / ir.norm(dim=1, keepdim=True).clamp(min=1e-12)
        n_fft = next_pow2(t + length - 1)
        xw = x.to(wd)
        rev = torch.fft.irfft(torch.fft.rfft(xw, n=n_fft) * torch.fft.rfft(ir, n=n_fft), n=n_fft)[:, :t]
        peak_in = xw.abs().amax(dim=1, keepdim=True)
        peak_rev = rev.abs().amax(dim=1, keepdim=True)
        rev = rev * (peak_in / peak_rev.clamp(min=1e-12))
        return (1.0 - self.wet) * xw + self.wet * rev

    def extra_repr(self):
        return f"p={self.p}, sample_rate={self.sample_rate}, rt60_s={self.rt60_s}, wet={self.wet}"


# --------------------------------------------------------------------------------------------------
# the chain


class AugmentationChain(nn.Module):
    """The CLMR chain: polarity, noise, gain, filter, delay, pitch shift, reverb (each with its own p),
    with the strategies paper's time stretch after the pitch shift (``p_stretch``, 0 by default)."""

    def __init__(self, cfg: Optional[AugmentConfig] = None):
        super().__init__()
        cfg = AugmentConfig() if cfg is None else cfg
        self.cfg = cfg
        sr = cfg.sample_rate
        self.transforms = nn.ModuleList([
            PolarityInversion(cfg.p_polarity),
            Noise(cfg.p_noise, cfg.noise_snr, cfg.noise_snr_db),
            Gain(cfg.p_gain, cfg.gain_db),
            HighLowPass(cfg.p_filter, sr, cfg.lowpass_hz, cfg.highpass_hz),
            Delay(cfg.p_delay, sr, cfg.delay_ms, cfg.delay_step_ms, cfg.delay_volume),
            PitchShift(cfg.p_pitch, sr, cfg.pitch_semitones),
            Reverb(cfg.p_reverb, sr, cfg.reverb_rt60_s),
        ])
        # Not one of CLMR's transforms, so kept beside their list; applied after the pitch shift, the
        # order of the strategies paper's code (sox pitch, then speed)
        self.stretch = TimeStretch(cfg.p_stretch, sr, cfg.stretch_rate)

    def steps(self) -> list:
        """The transforms in the order they are applied."""
        steps = list(self.transforms)
        after_pitch = next(i for i, t in enumerate(steps) if isinstance(t, PitchShift)) + 1
        return steps[:after_pitch] + [self.stretch] + steps[after_pitch:]

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                out_samples: Optional[int] = None) -> Tensor:
        """x: [B, T] float waveform -> [B, T] augmented, same dtype/device; with ``out_samples``, the first
        ``out_samples`` of each augmented row (the views of a read-ahead crop, ``read_samples``).

        Each transform is applied to each example independently with its own probability, in the
        CLMR order: polarity, noise, gain, filter, delay, pitch shift, (time stretch,) reverb. A
        transform with p = 0 draws nothing, so the time stretch off leaves CLMR's draws as they
        were. All randomness is
        drawn from ``generator`` (default: the global RNG), so a generator with the same seed
        reproduces the output (on the same device).
        """
        if x.dim() != 2:
            raise ValueError(f"augmentations expect a waveform batch [B, T], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"augmentations expect a float waveform, got {x.dtype}")
        for transform in self.steps():
            x = transform(x, generator)
        return x if out_samples is None else x[:, :out_samples]
