"""CLMR augmentation chain: per-transform behaviour, per-example randomness, reproducibility."""
import dataclasses
import math

import pytest
import torch
import torchaudio.functional as AF

from mart_upstream.augment import (
    AugmentationChain,
    AugmentConfig,
    Delay,
    Gain,
    HighLowPass,
    Noise,
    PitchShift,
    PolarityInversion,
    Reverb,
    phase_vocoder,
)

SR = 16000
P_FIELDS = ["p_polarity", "p_noise", "p_gain", "p_filter", "p_delay", "p_pitch", "p_reverb"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cfg_with(**ps):
    """Config with every probability 0 except the ones given."""
    base = {f: 0.0 for f in P_FIELDS}
    base.update(ps)
    return AugmentConfig(**base)


def all_on():
    return cfg_with(**{f: 1.0 for f in P_FIELDS})


def band_energy(x, lo_hz, hi_hz):
    """Energy per row of x [B, T] between lo_hz and hi_hz."""
    spec = torch.fft.rfft(x.double()).abs().pow(2)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    return spec[:, band].sum(-1)


def rms(x):
    return x.double().pow(2).mean(-1).sqrt()


def test_defaults_are_clmr():
    cfg = AugmentConfig()
    assert (cfg.p_polarity, cfg.p_noise, cfg.p_gain, cfg.p_filter, cfg.p_delay, cfg.p_pitch) == (
        0.8, 0.01, 0.3, 0.8, 0.3, 0.6)
    assert cfg.p_reverb == 0.0
    chain = AugmentationChain(cfg)
    kinds = [type(t) for t in chain.transforms]
    assert kinds == [PolarityInversion, Noise, Gain, HighLowPass, Delay, PitchShift, Reverb]
    assert [t.p for t in chain.transforms] == [getattr(cfg, f) for f in P_FIELDS]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_and_dtype_preserved(dtype):
    x = torch.randn(6, 3001).to(dtype)
    for cfg in (AugmentConfig(), all_on()):
        y = AugmentationChain(cfg)(x, gen(1))
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert torch.isfinite(y.float()).all()


def test_all_p_zero_is_identity():
    x = torch.randn(5, 2000)
    y = AugmentationChain(cfg_with())(x, gen())
    assert torch.equal(y, x)


def test_polarity_p1_negates_exactly():
    x = torch.randn(7, 1000)
    assert torch.equal(AugmentationChain(cfg_with(p_polarity=1.0))(x, gen()), -x)
    assert torch.equal(PolarityInversion(p=1.0)(x, gen()), -x)


def test_gain_within_db_range_and_per_example():
    x = torch.randn(64, 2000)
    y = Gain(p=1.0, gain_db=(-20.0, -1.0))(x, gen())
    db = 20 * torch.log10(rms(y) / rms(x))
    assert (db >= -20.0 - 1e-4).all() and (db <= -1.0 + 1e-4).all()
    assert db.max() - db.min() > 5.0  # each example draws its own gain


def test_noise_level_and_silent_rows():
    x = torch.randn(32, 4000)
    y = Noise(p=1.0, snr=(0.05, 0.1))(x, gen())
    ratio = rms(y - x) / x.std(dim=1).double()
    assert (ratio > 0.04).all() and (ratio < 0.11).all()
    z = torch.zeros(4, 4000)
    assert torch.equal(Noise(p=1.0)(z, gen()), z)


def test_same_seed_same_output_different_seed_differs():
    x = torch.randn(8, 4000)
    for cfg in (AugmentConfig(p_reverb=0.6), all_on()):
        chain = AugmentationChain(cfg)
        a, b, c = chain(x, gen(3)), chain(x, gen(3)), chain(x, gen(4))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


@pytest.mark.parametrize("make", [
    lambda: PolarityInversion(0.5),
    lambda: Noise(0.5),
    lambda: Gain(0.5),
    lambda: HighLowPass(0.5, SR),
    lambda: Delay(0.5, SR),
    lambda: PitchShift(0.5, SR),
    lambda: Reverb(0.5, SR),
    lambda: AugmentationChain(cfg_with(p_polarity=0.5, p_gain=0.5)),  # unchanged with prob. 1/4
])
def test_per_example_independence(make):
    row = torch.randn(1, 8000)  # longer than the longest delay (450 ms = 7200 samples)
    x = row.repeat(64, 1)
    y = make()(x, gen(5))
    changed = (y != x).any(dim=1)
    assert 0 < int(changed.sum()) < 64  # p = 0.5 per example: some rows changed, some not
    assert torch.equal(y[~changed], x[~changed])


@pytest.mark.parametrize("make", [
    lambda: Noise(1.0),
    lambda: Gain(1.0),
    lambda: HighLowPass(1.0, SR),
    lambda: Delay(1.0, SR),
    lambda: PitchShift(1.0, SR),
    lambda: Reverb(1.0, SR),
])
def test_parameters_drawn_per_example(make):
    x = torch.randn(1, 6000).repeat(16, 1)
    y = make()(x, gen(2))
    distinct = {tuple(r.tolist()) for r in y[:, ::7]}
    assert len(distinct) > 1  # identical inputs, p = 1: the drawn parameters differ between rows


def test_lowpass_removes_high_band():
    x = torch.randn(8, 16000)
    y = HighLowPass(1.0, SR, lowpass_hz=(1000.0, 1000.0), p_lowpass=1.0)(x, gen())
    assert (band_energy(y, 4000, 8000) / band_energy(x, 4000, 8000) < 0.01).all()  # 2 octaves up: < -20 dB
    assert (band_energy(y, 20, 400) / band_energy(x, 20, 400) > 0.9).all()


def test_highpass_removes_low_band():
    x = torch.randn(8, 16000)
    y = HighLowPass(1.0, SR, highpass_hz=(2000.0, 2000.0), p_lowpass=0.0)(x, gen())
    assert (band_energy(y, 20, 500) / band_energy(x, 20, 500) < 0.01).all()  # 2 octaves down: < -20 dB
    assert (band_energy(y, 5000, 8000) / band_energy(x, 5000, 8000) > 0.9).all()


def test_highlowpass_default_mixes_both_kinds():
    x = torch.randn(32, 8000)
    y = HighLowPass(1.0, SR)(x, gen(7))
    low_cut = band_energy(y, 6000, 8000) / band_energy(x, 6000, 8000) < 0.1  # low-pass rows
    high_cut = band_energy(y, 20, 100) / band_energy(x, 20, 100) < 0.1  # high-pass rows
    assert (low_cut ^ high_cut).all() and low_cut.any() and high_cut.any()


@pytest.mark.parametrize("lowpass,cutoff", [(True, 3000.0), (False, 300.0)])
def test_filter_matches_time_domain_biquad(lowpass, cutoff):
    # the frequency-domain biquad equals the IIR recursion up to the (negligible) wrapped tail
    x = 0.1 * torch.randn(2, 1500, dtype=torch.float64)
    f = HighLowPass(1.0, SR, lowpass_hz=(cutoff, cutoff), highpass_hz=(cutoff, cutoff),
                    p_lowpass=float(lowpass))
    ref = (AF.lowpass_biquad if lowpass else AF.highpass_biquad)(x, SR, cutoff, Q=1 / math.sqrt(2))
    torch.testing.assert_close(f(x, gen()), ref, atol=1e-6, rtol=0)


def test_delay_adds_attenuated_copy_at_allowed_lag():
    t, at = 16000, 0  # at 0: the first sample must be copied too
    x = torch.zeros(32, t)
    x[:, at] = 1.0
    y = Delay(1.0, SR, delay_ms=(200, 500), step_ms=50, volume=0.5)(x, gen())
    allowed = {ms * SR // 1000 for ms in range(200, 500, 50)}
    lags = set()
    for row in y:
        nz = row.nonzero().flatten().tolist()
        assert len(nz) == 2 and nz[0] == at and row[at] == 1.0
        assert row[nz[1]] == pytest.approx(0.5)
        lags.add(nz[1] - at)
    assert lags <= allowed and len(lags) > 1


def test_delay_longer_than_clip_is_harmless():
    x = torch.randn(3, 1000)  # 1000 samples < 200 ms
    assert torch.equal(Delay(1.0, SR)(x, gen()), x)


@pytest.mark.parametrize("semitones,expected_hz", [(12, 880.0), (-12, 220.0), (7, 440.0 * 2 ** (7 / 12))])
def test_pitch_shift_moves_dominant_frequency(semitones, expected_hz):
    t = 16000
    tone = torch.sin(2 * math.pi * 440.0 * torch.arange(t) / SR)[None].repeat(2, 1)
    y = PitchShift(1.0, SR, semitones=(semitones, semitones))(tone, gen())
    assert y.shape == tone.shape and y.dtype == tone.dtype
    spec = torch.fft.rfft(y * torch.hann_window(t)).abs()
    peak_hz = spec.argmax(dim=-1).double() * SR / t
    assert (peak_hz - expected_hz).abs().max() < 5.0  # bins are 1 Hz; 2**(7/12) ~ 3/2 is 2 cents off
    # phase locking keeps a shifted steady tone at its level (within 1 dB away from the edges)
    level_db = 20 * torch.log10(rms(y[:, 2000:-2000]) / rms(tone[:, 2000:-2000]))
    assert (level_db.abs() < 1.0).all()


def test_pitch_shift_keeps_length_for_odd_and_short_clips():
    for t in (59049, 301, 37):
        x = torch.randn(3, t)
        y = PitchShift(1.0, SR)(x, gen())
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_phase_vocoder_matches_torchaudio_and_per_row_rates():
    spec = torch.randn(3, 129, 30, dtype=torch.complex128)
    adv = torch.linspace(0, math.pi * 64, 129, dtype=torch.float64)[:, None]
    for rate in (0.7, 1.3):
        torch.testing.assert_close(phase_vocoder(spec, rate, adv, lock_phase=False),
                                   AF.phase_vocoder(spec, rate, adv))
    rates = [2 / 3, 1.5, 1.0]
    batched = phase_vocoder(spec, rates, adv)
    for i, r in enumerate(rates):
        single = phase_vocoder(spec[i:i + 1], r, adv)
        torch.testing.assert_close(batched[i:i + 1, :, : single.shape[-1]], single)
        assert (batched[i, :, single.shape[-1]:] == 0).all()


def test_reverb_adds_tail_and_keeps_peak_scale():
    t = 16000
    x = torch.zeros(4, t)
    x[:, 200] = 1.0
    y = Reverb(1.0, SR, rt60_s=(0.3, 0.6))(x, gen())
    assert (y[:, 1000:].abs().amax(dim=1) > 1e-3).all()  # a decaying tail after the impulse
    assert (y.abs().amax(dim=1) <= 1.0 + 1e-5).all()


@pytest.mark.parametrize("cfg", [AugmentConfig(p_reverb=0.6), all_on()])
def test_silent_input_stays_finite(cfg):
    x = torch.zeros(6, 3000)
    y = AugmentationChain(cfg)(x, gen())
    assert torch.isfinite(y).all()
    assert y.abs().max() < 1e-6


def test_rejects_bad_input():
    chain = AugmentationChain(AugmentConfig())
    with pytest.raises(ValueError):
        chain(torch.randn(2, 3, 100), gen())
    with pytest.raises(ValueError):
        PitchShift(1.0, SR, semitones=(0, 0))


def test_config_roundtrip_fields():
    # the interface other modules rely on: these exact field names
    names = [f.name for f in dataclasses.fields(AugmentConfig)]
    assert names == ["sample_rate", "p_polarity", "p_noise", "noise_snr", "noise_snr_db", "p_gain", "gain_db",
                     "p_filter", "lowpass_hz", "highpass_hz", "p_delay", "delay_ms", "delay_step_ms", "delay_volume",
                     "p_pitch", "pitch_semitones", "p_reverb", "reverb_rt60_s", "p_stretch", "stretch_rate",
                     "stretch_read_ahead"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_device_preserved_and_matches_structure():
    x = torch.randn(8, 4000, device="cuda")
    chain = AugmentationChain(all_on()).to("cuda")
    y = chain(x, gen(1))
    assert y.device == x.device and y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(y, chain(x, gen(1)))
