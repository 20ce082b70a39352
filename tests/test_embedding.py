"""The shared embedding path: frame grids, chunking and clip vectors of any length."""
import pytest
import torch

from mart_upstream.embedding import clip_embeddings, frame_features, windows
from mart_upstream.models import build_model


def _model(name, tiny):
    torch.manual_seed(0)
    return build_model(name, tiny[name]).eval()


@pytest.mark.parametrize("name", ["mart", "pemr", "simclr"])
@pytest.mark.parametrize("seconds", [0.1, 1.0, 3.3])
def test_frame_features_share_one_grid(name, seconds, tiny):
    model = _model(name, tiny)
    t = int(seconds * 16000)
    layers = frame_features(model, torch.randn(2, t))
    n = -(-t // model.frame_hop)
    assert len(layers) >= 2
    for x in layers:
        assert x.shape == (2, n, model.embedding_dim) and torch.isfinite(x).all()


def test_chunking_does_not_change_fcn_features(tiny, monkeypatch):
    model = _model("pemr", tiny)
    wav = torch.randn(1, 40000)
    whole = frame_features(model, wav)
    cls = type(model)
    monkeypatch.setattr(cls, "feature_chunk", property(lambda self: self.frame_hop * 8))
    chunked = frame_features(model, wav)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-5)


def test_mart_part_layers_are_constant_within_a_part(tiny):
    model = _model("mart", tiny)
    c = model.config
    layers = frame_features(model, torch.randn(1, c.clip_samples))
    finest = c.parts ** (c.levels - 1)
    part_layer = layers[-1][0]  # [frames, D]
    start_of_frame = torch.arange(part_layer.shape[0]) * model.frame_hop
    part_of_frame = start_of_frame * finest // c.clip_samples
    assert part_of_frame.unique().numel() == finest  # every part covers at least one frame
    for p in range(finest):
        block = part_layer[part_of_frame == p]
        assert torch.allclose(block, block[:1].expand_as(block))
    assert not torch.allclose(part_layer[0], part_layer[-1])


@pytest.mark.parametrize("name", ["mart", "pemr"])
def test_clip_embeddings_of_any_length(name, tiny):
    model = _model(name, tiny)
    for t in (100, model.clip_samples, 3 * model.clip_samples + 7):
        e = clip_embeddings(model, torch.randn(3, t))
        assert e.shape == (3, model.embedding_dim) and torch.isfinite(e).all()


def test_windows_pad_and_cover():
    w = windows(torch.arange(10.0)[None], 4)
    assert w.shape == (1, 3, 4) and w[0, -1].tolist() == [8.0, 9.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        windows(torch.zeros(10), 4)
    with pytest.raises(ValueError, match="dtype"):
        frame_features(build_model("simclr"), torch.zeros(1, 10, dtype=torch.int16))


@pytest.mark.parametrize("name", ["mart", "pemr"])
def test_last_chunk_and_batching_do_not_change_features(name, tiny, monkeypatch):
    """The last chunk is cut to the frames still needed (models with context) and chunks of all sounds
    are batched: the same features as whole zero-padded chunks computed one at a time."""
    import torch.nn.functional as F

    from mart_upstream.embedding import feature_chunks

    model = _model(name, tiny)
    if model.feature_context:  # MART's chunks are its whole clips
        monkeypatch.setattr(type(model), "feature_chunk", property(lambda self: self.frame_hop * 12))
    chunk, hop = model.feature_chunk, model.frame_hop
    t = 2 * chunk + 5 * hop + 17
    wav = torch.randn(3, t)
    total, pieces = feature_chunks(model, t)
    assert [s for s, _ in pieces] == [0, chunk, 2 * chunk]
    if model.feature_context:  # cut to the frames still needed
        assert pieces[-1][1] == 6 * hop and total == t - t % hop + hop
    else:  # MART: whole clips
        assert pieces[-1][1] == chunk and total == 3 * chunk
    n = -(-t // hop)
    padded = F.pad(wav, (0, 3 * chunk - t))
    one_at_a_time = [x[:, :n] for x in frame_features(model, padded, max_samples=1)]
    batched = frame_features(model, wav)
    for a, b in zip(one_at_a_time, batched):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)


def _kept_windows(model, wav, summary):
    """The summary as computed before streaming: every window's vector kept, then summarised at once."""
    from mart_upstream.models.base import mean_std

    w = windows(wav, model.clip_samples)
    b, n, L = w.shape
    with torch.no_grad():
        per_window = model.window_embedding(w.reshape(b * n, L)).view(b, n, -1)
    return mean_std(per_window, dim=1) if summary == "mean_std" else per_window.mean(dim=1)


@pytest.mark.parametrize("name,summary", [("mart", "mean_std"), ("pemr", "mean"), ("pemr", "mean_std")])
def test_streaming_summaries_equal_keeping_every_window(name, summary, tiny):
    """Running summaries over chunks that split and mix sounds equal the summary of all windows kept, for
    lengths that are not whole windows, a sound shorter than one window and the fast inference copy."""
    from mart_upstream.frozen import for_inference

    model = _model(name, tiny)
    L = model.clip_samples
    torch.manual_seed(1)
    wav = torch.randn(3, L + 123)
    wav[1] = 0.0  # digital silence: constant windows, which the fast copy encodes once
    before = wav.clone()
    want = _kept_windows(model, wav, summary)
    for m, chunks in ((model, (1, 4, None)), (for_inference(model), (4,))):
        for max_windows in chunks:  # a window at a time, chunks across sounds, all at once
            got = clip_embeddings(m, wav, max_windows=max_windows, summary=summary)
            assert got.shape == want.shape and got.dtype == want.dtype
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    short = torch.randn(2, L // 3)
    torch.testing.assert_close(clip_embeddings(model, short, summary=summary), _kept_windows(model, short, summary),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(wav, before)  # windows are read from the input, which is left as it was


def test_streaming_summary_merges_chunks_exactly():
    """Chan's merge in float64: a constant offset far above the spread loses nothing, and an empty
    summary is a clear error."""
    from mart_upstream.models.base import StreamingSummary

    torch.manual_seed(0)
    x = (1000.0 + 1e-3 * torch.randn(50, 4)).double()
    group = torch.tensor([0] * 20 + [1] * 30)
    s = StreamingSummary("mean_std", 2)
    for part in torch.randperm(50).split(7):  # chunks in any order, mixing the groups
        s.add(x[part].float(), group[part])
    want = torch.stack([torch.cat([x[group == g].float().double().mean(0), x[group == g].float().double().std(0, unbiased=False)])
                        for g in (0, 1)])
    torch.testing.assert_close(s.result().double(), want, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="summary must be one of"):
        StreamingSummary("max", 1)
    with pytest.raises(ValueError, match="no windows"):
        StreamingSummary("mean", 1).result()


def test_clip_embeddings_keep_no_window_vectors_between_passes(tiny):
    """Flat memory for long audio: when a pass starts, the vectors (and window batches) of every earlier
    pass have been freed into the running summary."""
    import weakref

    model = _model("pemr", tiny)
    real, alive = model.window_embedding, []

    def window_embedding(x):
        alive.append(sum(r() is not None for r in refs))
        out = real(x)
        refs.extend([weakref.ref(out), weakref.ref(x)])
        return out

    refs = []
    model.window_embedding = window_embedding
    clip_embeddings(model, torch.randn(1, 20 * model.clip_samples + 9), max_windows=3)
    assert len(alive) == 7 and alive == [0] * 7


def test_waveform_checks_look_at_every_stretch_of_a_long_input(monkeypatch):
    """check_waveforms reads the input a stretch at a time (bounded temporaries): a fault in any stretch,
    and a negative peak, are still found and named."""
    from mart_upstream import embedding

    monkeypatch.setattr(embedding, "CHECK_SAMPLES", 100)
    wav = torch.zeros(3, 1050)
    assert embedding.check_waveforms(wav) is wav
    nan = wav.clone()
    nan[2, 1049] = float("nan")  # in the last, partial stretch
    with pytest.raises(ValueError, match=r"NaN or Inf values \(sounds \[2\]\)"):
        embedding.check_waveforms(nan)
    loud = wav.clone()
    loud[1, 520] = -250.0  # a negative peak, mid-input
    with pytest.raises(ValueError, match=r"peaks at 250, .*\(sounds \[1\]"):
        embedding.check_waveforms(loud)
    assert embedding.check_waveforms(torch.zeros(2, 0)).shape == (2, 0)
