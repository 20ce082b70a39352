"""The CLMR augmentation chain: per-example, reproducible, each transform doing what it says."""
import math

import pytest
import torch

from mart_upstream.augment import (AugmentationChain, AugmentConfig, Delay, Gain, HighLowPass, Noise,
                                   PitchShift, PolarityInversion, Reverb)

SR = 16000


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def band_energy(x, lo, hi):
    spec = torch.fft.rfft(x, dim=-1).abs().pow(2)
    f = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    return spec[..., (f >= lo) & (f < hi)].sum(-1)


def off_config():
    return AugmentConfig(p_polarity=0, p_noise=0, p_gain=0, p_filter=0, p_delay=0, p_pitch=0, p_reverb=0)


def test_all_off_is_identity_and_keeps_shape_dtype():
    x = torch.randn(4, 3000)
    y = AugmentationChain(off_config())(x, gen())
    assert torch.equal(x, y) and y.dtype == x.dtype


def test_default_chain_is_reproducible_and_per_example():
    x = torch.randn(1, 4000).repeat(64, 1) * 0.1
    chain = AugmentationChain(AugmentConfig())
    a, b, c = chain(x, gen(1)), chain(x, gen(1)), chain(x, gen(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    changed = [not torch.allclose(a[i], x[i]) for i in range(64)]
    assert 0 < sum(changed) < 64 or all(changed)  # examples draw independently
    rows_differ = sum(not torch.allclose(a[0], a[i]) for i in range(1, 64))
    assert rows_differ > 10


def test_polarity_and_gain():
    x = torch.randn(8, 1000)
    assert torch.equal(PolarityInversion(1.0)(x, gen()), -x)
    y = Gain(1.0, (-20.0, -1.0))(x, gen())
    db = 20 * torch.log10(y.norm(dim=1) / x.norm(dim=1))
    assert torch.all(db >= -20.001) and torch.all(db <= -0.999)


def test_probability_half_changes_some_examples_only():
    x = torch.randn(64, 500)
    y = PolarityInversion(0.5)(x, gen())
    flipped = torch.isclose(y, -x).all(dim=1)
    assert 10 < flipped.sum() < 54 and torch.equal(y[~flipped], x[~flipped])


def test_filters_remove_the_stop_band():
    noise = torch.randn(64, 8000)
    y = HighLowPass(1.0, SR, (2200.0, 2200.0), (1200.0, 1200.0))(noise, gen())
    low = band_energy(y, 0, 300) / band_energy(noise, 0, 300)
    high = band_energy(y, 6000, 8000) / band_energy(noise, 6000, 8000)
    # each example is either low-passed (high band gone) or high-passed (low band gone)
    assert torch.all((high < 0.05) | (low < 0.05))
    assert (high < 0.05).any() and (low < 0.05).any()


def test_delay_adds_an_attenuated_copy_at_the_drawn_lag():
    x = torch.zeros(16, 16000)
    x[:, 100] = 1.0
    y = Delay(1.0, SR, (200, 500), 50, 0.5)(x, gen())
    for row in y:
        echo = (row[101:] != 0).nonzero().squeeze(1) + 101
        assert len(echo) == 1 and row[echo[0]] == pytest.approx(0.5)
        lag_ms = (echo[0].item() - 100) * 1000 / SR
        assert lag_ms in (200, 250, 300, 350, 400, 450, 500)


def test_pitch_shift_an_octave_up_keeps_length():
    t = torch.arange(SR) / SR
    x = torch.sin(2 * math.pi * 440 * t)[None]
    y = PitchShift(1.0, SR, (12, 12))(x, gen())
    assert y.shape == x.shape
    peak = torch.fft.rfft(y[0]).abs().argmax().item() * SR / x.shape[1]
    assert abs(peak - 880) < 10


def test_noise_and_reverb_stay_finite_on_silence():
    x = torch.zeros(4, 2000)
    cfg = AugmentConfig(p_polarity=1, p_noise=1, p_gain=1, p_filter=1, p_delay=1, p_pitch=1, p_reverb=1)
    y = AugmentationChain(cfg)(x, gen())
    assert torch.isfinite(y).all()
    z = Noise(1.0, (0.01, 0.01))(torch.randn(4, 2000), gen())
    assert torch.isfinite(z).all()
    r = Reverb(1.0, SR, (0.3, 0.3), 0.5)(torch.randn(2, 4000), gen())
    assert torch.isfinite(r).all() and r.shape == (2, 4000)


def test_rejects_non_batch_input():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        AugmentationChain(AugmentConfig())(torch.zeros(100))
