"""The strategies paper's siamese models (cnn5_infonce, cnn5_multilevel): InfoNCE, the sampling strategies,
time stretch, input standardisation, the embedding paths and mart-pretrain runs."""
import dataclasses
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from kit import tiny_overrides
from mart_upstream.augment import AugmentationChain, AugmentConfig, PitchShift, TimeStretch
from mart_upstream.checkpoint import load_pretrained, read_checkpoint, save_checkpoint
from mart_upstream.config import ConfigError
from mart_upstream.embedding import clip_embeddings, frame_features, windows
from mart_upstream.frontend import FrontendConfig, LogMel, Standardiser
from mart_upstream.frozen import for_inference
from mart_upstream.losses import info_nce, multilevel_info_nce
from mart_upstream.models import build_model, get_entry, tiny_config
from mart_upstream.train.cli import main
from mart_upstream.train.data import AudioFileInfo, RandomCropDataset

SR = 16000
NAMES = ["cnn5_infonce", "cnn5_multilevel"]
STRATEGY_PAIRING = {"self_aug": "same", "adjacent": "adjacent", "random": "rest"}


def _model(name, **overrides):
    torch.manual_seed(0)
    return build_model(name, {**tiny_config(name), **overrides})


def _randomise_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm and standardisation statistics away from their initial values, so freezing them matters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
        model.frontend.standardiser.mean.fill_(-6.0)
        model.frontend.standardiser.var.fill_(4.0)
        model.frontend.standardiser.count.fill_(1000.0)
    return model.eval()


# -- the losses ---------------------------------------------------------------------------------
A = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
P = [[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]


def _hand_info_nce(a, p, tau):
    """Eq. (1) by hand: row b's positive is p[b], the other rows of p its negatives."""
    total = 0.0
    for b, ab in enumerate(a):
        logits = [sum(x * y for x, y in zip(ab, pj)) / tau for pj in p]
        total += -math.log(math.exp(logits[b]) / sum(math.exp(v) for v in logits))
    return total / len(a)


def _unit(rows):
    return [[x / math.sqrt(sum(v * v for v in r)) for x in r] for r in rows]


@pytest.mark.parametrize("similarity, tau", [("dot", 1.0), ("dot", 0.5), ("cosine", 0.05), ("cosine", 1.0)])
def test_info_nce_matches_a_hand_computation(similarity, tau):
    a, p = (A, P) if similarity == "dot" else (_unit(A), _unit(P))
    expected = _hand_info_nce(a, p, tau)
    got = info_nce(torch.tensor(A), torch.tensor(P), temperature=tau, similarity=similarity)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # the dot product of eq. (1) as printed: row 0 has logits [1, 0, -1] and its positive at 0
    if similarity == "dot" and tau == 1.0:
        row0 = -math.log(math.e / (math.e + 1 + math.exp(-1)))
        row1 = -math.log(math.exp(2) / (1 + math.exp(2) + math.e))
        row2 = -math.log(1 / (math.e + math.exp(2) + 1))
        assert float(got) == pytest.approx((row0 + row1 + row2) / 3, rel=1e-6)


def test_multilevel_info_nce_is_the_sum_of_the_level_terms():
    gen = torch.Generator().manual_seed(0)
    anchors = [torch.randn(5, d, generator=gen) for d in (3, 4, 2)]
    positives = [a + 0.3 * torch.randn(a.shape, generator=gen) for a in anchors]
    levels = [info_nce(a, p, 0.1, "cosine") for a, p in zip(anchors, positives)]
    loss, terms = multilevel_info_nce(anchors, positives, 0.1, "cosine", return_levels=True)
    assert float(loss) == pytest.approx(float(sum(levels)), rel=1e-6)
    assert torch.allclose(terms, torch.stack(levels)) and not terms.requires_grad
    assert float(multilevel_info_nce(anchors[:1], positives[:1], 0.1, "cosine")) == pytest.approx(float(levels[0]))
    with pytest.raises(ValueError, match="one positive per anchor level"):
        multilevel_info_nce(anchors, positives[:2])


# -- the sampling strategies through the training crops ------------------------------------------
@pytest.fixture(scope="module")
def ramp_file(tmp_path_factory):
    """A 6 s float wav whose sample i holds i / 10^5: a crop's first sample tells where it starts."""
    path = str(tmp_path_factory.mktemp("ramp") / "ramp.wav")
    n = 6 * SR
    sf.write(path, (np.arange(n) / 1e5).astype(np.float32), SR, subtype="FLOAT")
    return AudioFileInfo(path, n, SR, 1)


@pytest.mark.parametrize("strategy", ["self_aug", "adjacent", "random"])
def test_each_strategy_places_the_views_as_the_paper_says(strategy, ramp_file):
    model = _model("cnn5_infonce", strategy=strategy)
    assert model.pairing == STRATEGY_PAIRING[strategy]
    clip_s = model.clip_samples / SR  # 0.5 s
    ds = RandomCropDataset([ramp_file], model.clip_samples, num_crops=model.num_views, sample_rate=SR, seed=3,
                           pairing=model.pairing, gap_seconds=model.pairing_gap_seconds)
    orders = set()
    for key in range(40):
        crops = ds[key]  # [2, clip_samples]
        assert crops.shape == (2, model.clip_samples)
        s0, s1 = ds.starts(key)
        # the crops hold the samples at their start times (one file: the ramp tells where they begin)
        for crop, s in zip(crops, (s0, s1)):
            assert float(crop[0]) * 1e5 == pytest.approx(round(s * SR), abs=0.5)
        if strategy == "self_aug":  # the same segment, identical before augmentation
            assert s0 == s1 and torch.equal(crops[0], crops[1])
        elif strategy == "adjacent":  # the other view starts 0.5 s after one ends
            assert abs(s1 - s0) == pytest.approx(clip_s + 0.5, abs=1e-9)
            orders.add(s1 > s0)
        else:  # from the rest of the track: no overlap with the anchor
            assert abs(s1 - s0) >= clip_s - 1e-9
            assert ramp_file.seconds - clip_s + 1e-9 >= max(s0, s1) and min(s0, s1) >= 0
    if strategy == "adjacent":
        assert orders == {True, False}  # which view comes first is drawn


# -- time stretch ----------------------------------------------------------------------------------
def _tone(t, hz=440.0):  # phase (2 pi hz n) / SR: not kit.tone_tensor's 2 pi hz (n / SR), a last-bit apart
    return torch.sin(2 * math.pi * hz * torch.arange(t) / SR)


def _peak_hz(y):
    t = y.shape[-1]
    spec = torch.fft.rfft(y * torch.hann_window(t)).abs()
    return spec.argmax(dim=-1).double() * SR / t


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_changes_the_tempo_not_the_pitch_and_keeps_the_length(rate):
    t, burst = 16000, 6000
    x = torch.zeros(2, t)
    x[:, :burst] = _tone(burst)  # a tone that stops after 375 ms
    y = TimeStretch(1.0, SR, rate=(rate, rate))(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    # the tone now stops after burst / rate samples (within one vocoder hop of 256)
    frames = y.unfold(1, 256, 256).pow(2).mean(-1).sqrt()  # RMS per 256 samples
    loud = (frames > 0.25).nonzero()[:, 1]
    end = int(loud.max() + 1) * 256
    assert abs(end - burst / rate) <= 256 + 1, end
    # at the same pitch: the spectral peak stays at 440 Hz (bins of 1 Hz)
    assert (_peak_hz(y) - 440.0).abs().max() < 3.0


def test_time_stretch_pads_a_sped_up_clip_with_silence_and_crops_a_slowed_one():
    t = 12000
    x = _tone(t)[None].repeat(2, 1)
    fast = TimeStretch(1.0, SR, rate=(1.2, 1.2))(x, torch.Generator().manual_seed(0))
    assert (fast[:, round(t / 1.2):] == 0).all() and (fast[:, : round(t / 1.2) - 512].abs().amax(dim=1) > 0.5).all()
    slow = TimeStretch(1.0, SR, rate=(0.8, 0.8))(x, torch.Generator().manual_seed(0))
    assert slow.shape == x.shape and (slow[:, -2000:].abs().amax(dim=1) > 0.5).all()  # cropped, not padded
    for n in (37, 301, 48000 + 1):
        z = torch.randn(3, n)
        assert TimeStretch(1.0, SR)(z, torch.Generator().manual_seed(1)).shape == z.shape


def test_time_stretch_draws_a_rate_per_example_and_checks_its_range():
    x = _tone(6000)[None].repeat(8, 1)
    y = TimeStretch(1.0, SR, rate=(0.8, 1.2))(x, torch.Generator().manual_seed(2))
    assert len({tuple(r.tolist()) for r in y[:, ::7]}) == 8
    for bad in [(0.0, 1.2), (1.2, 0.8), (-1.0, 1.0)]:
        with pytest.raises(ValueError, match="stretch rate"):
            TimeStretch(1.0, SR, rate=bad)


def test_time_stretch_runs_after_the_pitch_shift_and_is_off_by_default():
    chain = AugmentationChain(AugmentConfig())
    assert chain.stretch.p == 0.0
    kinds = [type(t) for t in chain.steps()]
    assert kinds.index(TimeStretch) == kinds.index(PitchShift) + 1 and len(kinds) == 8
    off = {f.name: 0.0 for f in dataclasses.fields(AugmentConfig) if f.name.startswith("p_")}
    x = torch.randn(4, 4000)
    assert torch.equal(AugmentationChain(AugmentConfig(**off))(x, torch.Generator().manual_seed(0)), x)
    only = AugmentationChain(AugmentConfig(**{**off, "p_stretch": 1.0}))
    expected = TimeStretch(1.0, SR)(x, torch.Generator().manual_seed(0))
    assert torch.equal(only(x, torch.Generator().manual_seed(0)), expected)


def test_the_paper_augmentations_are_the_siamese_pretraining_defaults():
    aug = get_entry("cnn5_infonce").model_cls.pretrain_defaults["augment"]
    chain = AugmentationChain(AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}))
    pitch, stretch = chain.transforms[5], chain.stretch
    assert pitch.choices == [-2, -1, 1, 2] and pitch.p == 1.0  # strategies §2.3.1
    assert stretch.rate == (0.8, 1.2) and stretch.p == 1.0
    assert (aug["p_reverb"], aug["p_noise"]) == (0.5, 0.5)
    assert aug["p_gain"] == aug["p_filter"] == aug["p_delay"] == 0.0


# -- the models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strategy", ["self_aug", "adjacent", "random"])
def test_forward_backward_is_the_info_nce_of_the_two_views(name, strategy):
    model = _model(name, strategy=strategy)
    c = model.config
    assert model.pairing == STRATEGY_PAIRING[strategy]
    assert model.pairing_gap_seconds == (0.5 if strategy == "adjacent" else 0.0)
    out = model(0.1 * torch.randn(4, 2, model.clip_samples, generator=torch.Generator().manual_seed(1)))
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())  # has_unused_parameters is False
    e = c.emb_dim
    levels = 5 if name == "cnn5_multilevel" else 1
    assert out["z1"].shape == (4, levels * e) and model.embedding_dim == levels * e
    expected = sum(info_nce(out["z1"][:, i * e:(i + 1) * e], out["z2"][:, i * e:(i + 1) * e], c.temperature,
                            c.similarity) for i in range(levels))
    assert float(out["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    if levels > 1:
        assert sorted(k for k in out if k.startswith("info_nce_")) == [f"info_nce_{i}" for i in range(1, 6)]


def test_the_paper_settings_are_the_defaults():
    with torch.device("meta"):
        single, multi = build_model("cnn5_infonce").config, build_model("cnn5_multilevel").config
    assert (single.clip_samples, single.frontend.n_fft, single.frontend.hop_length, single.frontend.n_mels) == (
        48000, 512, 256, 96)
    assert (single.similarity, single.temperature) == ("dot", 1.0)  # eq. (1) as printed
    assert LogMel(single.frontend).num_frames(single.clip_samples) == 188  # 3 s (§3)
    assert single.frontend.standardise and not FrontendConfig().standardise
    assert (single.emb_dim, single.strategy, single.gap_seconds, single.summary) == (128, "self_aug", 0.5, "mean_std")
    assert not single.multilevel and multi.multilevel
    with torch.device("meta"):
        assert build_model("cnn5_multilevel").embedding_dim == 640  # Table 3
        heads = build_model("cnn5_multilevel").heads
    # each level's Linear reads its layer's channels x frequency bins (96 mel bands pooled 2-2-2-4-3)
    assert [h.in_features for h in heads] == [128 * 48, 256 * 24, 256 * 12, 512 * 3, 512 * 1]


@pytest.mark.parametrize("bad, match", [({"strategy": "nearby"}, "strategy must be one of"),
                                        ({"similarity": "l2"}, "similarity"), ({"temperature": 0.0}, "temperature"),
                                        ({"summary": "max"}, "summary"), ({"gap_seconds": -1.0}, "gap_seconds"),
                                        ({"encoder": {"n_mels": 64}}, "n_mels")])
def test_bad_settings_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_model("cnn5_infonce", {**tiny_config("cnn5_infonce"), **bad})


def test_tiny_step_is_fast():
    import time

    model = _model("cnn5_multilevel")
    x = torch.randn(4, 2, model.clip_samples)
    model(x)["loss"].backward()  # warm-up
    t = time.perf_counter()
    model(x)["loss"].backward()
    assert time.perf_counter() - t < 1.0


# -- input standardisation -------------------------------------------------------------------------
def test_standardiser_keeps_the_statistics_of_all_training_values_and_freezes_in_eval():
    s = Standardiser()
    x = torch.tensor([1.0, 3.0])
    assert torch.equal(s.eval()(x), x / math.sqrt(1 + s.eps))  # before any update: mean 0, variance 1
    s.train()
    y1 = s(torch.tensor([[1.0, 3.0]]))  # mean 2, variance 1
    assert float(s.mean) == 2.0 and float(s.var) == 1.0 and float(s.count) == 2
    assert torch.allclose(y1, torch.tensor([[-1.0, 1.0]]) / math.sqrt(1 + s.eps))
    s(torch.tensor([[10.0, 10.0, 4.0, 4.0]]))
    seen = torch.tensor([1.0, 3.0, 10.0, 10.0, 4.0, 4.0], dtype=torch.float64)
    assert float(s.mean) == pytest.approx(float(seen.mean())) and float(s.count) == 6
    assert float(s.var) == pytest.approx(float(seen.var(unbiased=False)))
    s.eval()
    before = [b.clone() for b in s.buffers()]
    z = torch.randn(3, 5)
    out = s(z)
    assert all(torch.equal(a, b) for a, b in zip(before, s.buffers()))
    expected = (z - float(seen.mean())) / math.sqrt(float(seen.var(unbiased=False)) + s.eps)
    assert torch.allclose(out, expected, atol=1e-6)


def test_model_standardises_its_log_mel_with_statistics_learned_in_training(tmp_path):
    model = _model("cnn5_infonce")
    std = model.frontend.standardiser
    assert "frontend.standardiser.mean" in model.state_dict()
    assert not any("standardiser" in k for k in build_model("simclr", tiny_config("simclr")).state_dict())
    wav = 0.1 * torch.randn(4, 2, model.clip_samples)
    model.train()(wav)
    raw = torch.log(model.frontend.mel(wav.flatten(0, 1)) + 1e-6).double()
    assert float(std.count) == raw.numel() and float(std.mean) == pytest.approx(float(raw.mean()), rel=1e-9)
    spec = model.frontend(wav[:, 0])  # train mode: updated again, then standardised with the new estimate
    assert abs(float(spec.mean())) < 0.5
    model.eval()
    frozen = [b.clone() for b in std.buffers()]
    model.window_embedding(wav[:, 0])
    assert all(torch.equal(a, b) for a, b in zip(frozen, std.buffers()))
    # the statistics travel with the checkpoint
    path = str(tmp_path / "s.ckpt")
    save_checkpoint(path, model, "cnn5_infonce", step=1)
    loaded, _ = load_pretrained(path)
    assert float(loaded.frontend.standardiser.mean) == float(std.mean)
    assert torch.equal(loaded.window_embedding(wav[:, 0]), model.window_embedding(wav[:, 0]))


# -- the embedding paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_clip_embeddings_are_the_mean_and_std_of_the_window_vectors(name):
    model = _randomise_statistics(_model(name))
    wav = 0.1 * torch.randn(2, 3 * model.clip_samples + 500)
    emb = clip_embeddings(model, wav)
    assert emb.shape == (2, 2 * model.embedding_dim)
    with torch.no_grad():
        w = windows(wav, model.clip_samples)  # [2, 4, L]
        per = model.window_embedding(w.flatten(0, 1)).view(2, 4, -1)
    assert torch.allclose(emb, torch.cat([per.mean(1), per.std(1, unbiased=False)], 1), atol=1e-5)
    assert clip_embeddings(model, wav, summary="mean").shape == (2, model.embedding_dim)


@pytest.mark.parametrize("name", NAMES)
def test_frame_features_share_one_grid_and_do_not_depend_on_chunks(name, monkeypatch):
    model = _randomise_statistics(_model(name))
    t = 3 * 40960 + 777
    wav = 0.1 * torch.randn(2, t, generator=torch.Generator().manual_seed(0))
    layers = frame_features(model, wav)
    n = -(-t // model.frame_hop)
    e = model.config.emb_dim
    assert len(layers) == (5 if name == "cnn5_multilevel" else 1)
    for k, x in enumerate(layers):
        assert x.shape == (2, n, model.embedding_dim) and torch.isfinite(x).all()
        mask = torch.ones(model.embedding_dim, dtype=torch.bool)
        mask[k * e:(k + 1) * e] = False
        assert (x[..., mask] == 0).all() and x[..., ~mask].abs().sum() > 0  # level k in its own block
    coarse = 40960  # the last layer's frame: hop 256 x 160
    assert model.feature_chunk % coarse == 0 and model.feature_context % coarse == 0
    monkeypatch.setattr(type(model), "feature_chunk", property(lambda self: coarse))
    chunked = frame_features(model, wav)
    # the last chunk is cut to the frames still needed: the same as whole chunks of zero-padded audio,
    # computed one at a time
    padded = frame_features(model, torch.nn.functional.pad(wav, (0, 4 * coarse - t)), max_samples=1)
    for a, b, c in zip(layers, chunked, padded):
        assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(a, c[:, :n], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fast_inference_copy_gives_the_same_embeddings(name):
    model = _randomise_statistics(_model(name))
    fast = for_inference(model)
    assert not fast.frontend.standardiser.training
    wav = 0.1 * torch.randn(3, 2 * model.clip_samples + 321, generator=torch.Generator().manual_seed(2))
    wav[1, 5000:] = 0
    a, b = clip_embeddings(model, wav), clip_embeddings(fast, wav)
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))
    for x, y in zip(frame_features(model, wav), frame_features(fast, wav)):
        assert torch.allclose(x, y, atol=1e-4 * float(x.abs().max()))


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_gives_the_pytorch_embeddings(name, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from mart_upstream.export import load_onnx
    from mart_upstream.export import main as export_main

    model = _randomise_statistics(_model(name))
    ckpt = str(tmp_path / "m.ckpt")
    save_checkpoint(ckpt, model, name, step=0)
    out = str(tmp_path / "onnx")
    assert export_main(["--format", "onnx", ckpt, out, "--no-check"]) == 0
    exported = load_onnx(out, threads=1)
    assert exported.window_summary == "mean_std" and exported.embedding_dim == model.embedding_dim
    wav = 0.1 * torch.randn(2, model.clip_samples + 4321, generator=torch.Generator().manual_seed(3))
    a, b = clip_embeddings(model, wav), clip_embeddings(exported, wav)
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))
    for x, y in zip(frame_features(model, wav), frame_features(exported, wav)):
        assert torch.allclose(x, y, atol=1e-4 * float(x.abs().max()))


# -- mart-pretrain ---------------------------------------------------------------------------------
FAST = ["data.num_workers=0", "run.log_every=1"]


def pretrain(out, *flags):
    """mart-pretrain on 4 synthetic tracks, batch 4, the tiny architecture (flags first, overrides last)."""
    return main(["--model", "cnn5_infonce", "--strategy", "adjacent", "--demo", "4", "--out", str(out),
                 "--batch-size", "4", *flags, *FAST, *tiny_overrides("cnn5_infonce")])


def test_pretrain_with_a_strategy_writes_a_checkpoint_that_loads_and_resumes(tmp_path, capsys):
    assert pretrain(tmp_path, "--steps", "3") == 0
    state = read_checkpoint(str(tmp_path / "last.ckpt"))
    assert state["step"] == 3 and state["config"]["strategy"] == "adjacent"
    settings = state["pretrain"]["settings"]
    assert settings["augment"]["p_stretch"] == 1.0 and settings["augment"]["pitch_semitones"] == [-2, 2]
    assert float(state["model"]["frontend.standardiser.count"]) > 0  # statistics learned in training
    model, cfg = load_pretrained(str(tmp_path / "last.ckpt"))
    assert cfg.strategy == "adjacent" and model.pairing == "adjacent" and not model.training
    emb = clip_embeddings(model, torch.randn(2, 20000))
    assert emb.shape == (2, 2 * model.embedding_dim) and torch.isfinite(emb).all()
    assert pretrain(tmp_path, "--steps", "5", "--resume") == 0
    resumed = read_checkpoint(str(tmp_path / "last.ckpt"))
    assert resumed["step"] == 5 and resumed["config"]["strategy"] == "adjacent"
    assert float(resumed["model"]["frontend.standardiser.count"]) > float(state["model"]["frontend.standardiser.count"])


def test_strategy_on_a_model_without_one_is_a_clear_error(tmp_path, capsys):
    code = main(["--model", "simclr", "--strategy", "adjacent", "--demo", "2", "--out", str(tmp_path), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--strategy applies to models with a strategy setting; simclr has none" in err
    code = main(["--model", "cnn5_infonce", "--strategy", "nearby", "--demo", "2", "--out", str(tmp_path / "b"),
                 "--steps", "1", *tiny_overrides("cnn5_infonce")])
    assert code == 2 and "strategy must be one of self_aug, adjacent, random" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused with the settings, before any data is made


@pytest.mark.parametrize("name", NAMES)
def test_the_cpu_configs_build_a_model_of_the_paper_layout(name):
    from mart_upstream.config import cpu_config_path, load_file

    data = load_file(cpu_config_path(name))
    cfg = get_entry(name).config(data["model"])
    assert cfg.frontend.n_mels == cfg.encoder.n_mels == 64 and cfg.clip_samples == 48000
    assert level_f(cfg.encoder) == 1 and data["run"]["batch_size"] == 32
    with torch.device("meta"):
        assert build_model(name, cfg).embedding_dim == (640 if name == "cnn5_multilevel" else 128)


def level_f(enc):
    """Frequency bins left after the encoder's pools (ceil mode)."""
    f = enc.n_mels
    for p in enc.freq_pools:
        f = -(-f // p)
    return f
