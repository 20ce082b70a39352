"""The fast inference copy (``mart_upstream.frozen``): the same embeddings as the plain model, the
original left as it was, memory bounded per pass."""
import os

import pytest
import torch
from torch import nn

from mart_upstream.checkpoint import load_pretrained, packaged_checkpoint
from mart_upstream.embedding import clip_embeddings, frame_features
from mart_upstream.encoders import FCN, fcn4_config, fcn7_config
from mart_upstream.frozen import (FastFCN, FoldedBlock, StemBlock, fold_batchnorm, fold_batchnorms, for_inference,
                                     is_fast, share_constant_rows)
from mart_upstream.models import build_model

MODELS = ["mart", "pemr", "simclr"]
REL = 1e-4  # max abs difference relative to the largest value


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = REL) -> None:
    scale = max(float(a.abs().max()), 1e-6)
    diff = float((a - b).abs().max())
    assert diff <= rel * scale, f"max abs diff {diff:.3g} at scale {scale:.3g}"


def _randomise_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    """Running statistics and affine parameters away from their initial values, so folding matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.3 * torch.randn(n, generator=gen))
    return model


def _model(name, tiny):
    torch.manual_seed(0)
    return _randomise_batchnorm(build_model(name, tiny[name])).eval()


@pytest.mark.parametrize("dims", [1, 2])
def test_fold_batchnorm_equals_conv_then_batchnorm(dims):
    torch.manual_seed(0)
    conv_cls, bn_cls = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    for bias in (False, True):
        conv, bn = conv_cls(3, 5, 3, padding=1, bias=bias), _randomise_batchnorm(bn_cls(5)).eval()
        x = torch.randn(2, 3, *([7] * dims))
        fused = fold_batchnorm(conv, bn)
        with torch.no_grad():
            _close(bn(conv(x)), fused(x), 1e-6)
        assert not fused.weight.requires_grad and conv.weight.requires_grad  # the original is untouched


@pytest.mark.parametrize("cfg", [fcn4_config(), fcn7_config()], ids=["fcn4", "fcn7"])
@pytest.mark.parametrize("shape", [(1, 128, 37), (3, 128, 129), (2, 128, 300)])
def test_fast_fcn_equals_fcn(cfg, shape):
    torch.manual_seed(0)
    enc = _randomise_batchnorm(FCN(cfg)).eval()
    fast = FastFCN(enc)
    spec = torch.randn(*shape)
    for batch_positions in (fast.batch_positions, 1):  # 1: every example in its own encoder call
        fast.batch_positions = batch_positions
        with torch.no_grad():
            _close(enc(spec), fast(spec))
            _close(enc.frame_map(spec), fast.frame_map(spec))
            for a, b in zip(enc.forward_maps(spec), fast.forward_maps(spec)):
                assert a.shape == b.shape
                _close(a, b)


@pytest.mark.parametrize("tile", [1, 50, 700, 10**6])
@pytest.mark.parametrize("pool", [(2, 2), (2, 3), (1, 1)])
def test_stem_tiles_do_not_change_the_result(tile, pool):
    """Tiles of one example's columns, or of several examples, give the plain block's output,
    for odd sizes and partial (ceil-mode) pooling windows."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.MaxPool2d(pool, ceil_mode=True))
    _randomise_batchnorm(block).eval()
    stem = StemBlock(block, tile_positions=tile)
    for shape in [(1, 1, 9, 31), (4, 1, 8, 17), (2, 1, 16, 5)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            y = stem(x)
            _close(block(x), y, 1e-5)
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_folded_block_refuses_other_layers():
    with pytest.raises(TypeError):
        FoldedBlock(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.MaxPool2d(2)))
    with pytest.raises(TypeError):  # overlapping pooling windows
        FoldedBlock(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(3, 2)))


def test_constant_rows_are_computed_once():
    x = torch.randn(7, 4, 5)
    x[1], x[3], x[4], x[6] = -13.8, 2.0, -13.8, -13.8  # two distinct constant values
    seen = []

    def fn(batch):
        seen.append(batch.shape[0])
        return [batch.sum(dim=(1, 2)), batch[:, 0]]

    out = share_constant_rows(x, fn)
    assert seen == [5]  # 3 ordinary rows + one per constant value
    for a, b in zip(out, fn(x)):
        assert torch.equal(a, b)
    assert torch.equal(share_constant_rows(x[:1], lambda b: b * 2), x[:1] * 2)


def test_for_inference_copies_and_leaves_the_model_alone(tiny):
    model = build_model("pemr", tiny["pemr"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = for_inference(model)
    assert fast is not model and is_fast(fast) and not is_fast(model)
    assert isinstance(fast.encoder, FastFCN) and type(model.encoder) is FCN
    assert model.training and model.encoder.blocks[0][1].training  # the original still trains
    assert all(p.requires_grad for p in model.parameters())
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert for_inference(fast) is fast
    fast.train()  # asked to train (an adapter's train()), the folded encoder stays in inference mode
    assert not fast.encoder.training


@pytest.mark.parametrize("name", MODELS)
def test_fast_embeddings_equal_the_plain_model(name, tiny):
    model = _model(name, tiny)
    fast = for_inference(model)
    gen = torch.Generator().manual_seed(0)
    for t in (90, model.clip_samples, 2 * model.clip_samples + 777):
        wav = 0.1 * torch.randn(3, t, generator=gen)
        wav[1, t // 3 :] = 0  # a sound with silent (zero-padded) windows
        _close(clip_embeddings(model, wav), clip_embeddings(fast, wav))
        for a, b in zip(frame_features(model, wav), frame_features(fast, wav)):
            assert a.shape == b.shape
            _close(a, b)


def test_embeddings_are_ordinary_tensors(tiny):
    """Computed under inference_mode, returned as tensors a caller may use in training."""
    fast = for_inference(_model("simclr", tiny))
    wav = torch.randn(2, 5000)
    head = nn.Linear(fast.embedding_dim, 2)
    for x in [clip_embeddings(fast, wav)] + frame_features(fast, wav):
        assert not x.is_inference()
    head(clip_embeddings(fast, wav)).sum().backward()
    assert head.weight.grad is not None


@pytest.mark.parametrize("name", MODELS)
def test_memory_per_pass_is_bounded(name, tiny, monkeypatch):
    """However long the input, no forward pass gets more than ``max_samples`` of audio (or one window)."""
    fast = for_inference(_model(name, tiny))
    cls = type(fast)
    sizes = []
    for method in ("window_embedding", "window_features"):
        orig = getattr(cls, method)

        def spy(self, wav, orig=orig):
            sizes.append(wav.numel())
            return orig(self, wav)

        monkeypatch.setattr(cls, method, spy)
    cap = 3 * fast.clip_samples
    wav = 0.1 * torch.randn(2, 20 * fast.clip_samples)
    clip_embeddings(fast, wav, max_samples=cap)
    frame_features(fast, wav, max_samples=cap)
    largest_unit = max(fast.clip_samples, fast.feature_chunk + 2 * fast.feature_context)
    assert len(sizes) > 4 and max(sizes) <= max(cap, largest_unit)


@pytest.mark.parametrize("name", MODELS)
def test_fast_path_on_the_packaged_checkpoints(name):
    path = packaged_checkpoint(name)
    if not os.path.isfile(path):
        pytest.skip(f"no packaged {name} checkpoint in this install")
    model, _ = load_pretrained(path)
    fast = for_inference(model)
    wav = 0.1 * torch.randn(2, int(5.3 * 16000), generator=torch.Generator().manual_seed(0))
    _close(clip_embeddings(model, wav), clip_embeddings(fast, wav))
    for a, b in zip(frame_features(model, wav), frame_features(fast, wav)):
        _close(a, b)


def test_fold_batchnorms_in_any_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU()),
                        nn.Sequential(nn.Conv1d(4, 4, 3, stride=3), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(3)))
    _randomise_batchnorm(net).eval()
    folded = fold_batchnorms(net)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 2  # the original keeps its layers
    x = torch.randn(2, 1, 100)
    with torch.no_grad():
        _close(net(x), folded(x), 1e-6)


def test_stem_on_another_device_uses_the_folded_convolution():
    """Off the CPU (here: the meta device, shapes only) the first block is the ordinary folded conv."""
    torch.manual_seed(0)
    block = _randomise_batchnorm(FCN(fcn4_config()).blocks[0]).eval()
    stem = StemBlock(block).to("meta")
    x = torch.empty(2, 1, 128, 51, device="meta")
    assert stem(x).shape == (2, 64, 64, 26)


def test_fast_copy_keeps_the_state_dict_and_follows_loaded_weights(tiny):
    """Its state_dict is the model's (checkpoints load into it, weights compare with it); loading other
    weights refolds the BatchNorms."""
    model = _model("mart", tiny)
    fast = for_inference(model)
    ours, theirs = model.state_dict(), fast.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    other = _randomise_batchnorm(build_model("mart", tiny["mart"]), seed=7).eval()
    wav = 0.1 * torch.randn(2, 9000)
    before = clip_embeddings(fast, wav)
    fast.load_state_dict(other.state_dict())
    after = clip_embeddings(fast, wav)
    assert not torch.allclose(before, after)
    _close(clip_embeddings(other, wav), after)
