"""MusiCNN, the reference model with published weights: parity with musicnn's own TensorFlow graph, the
weight conversion and its cache, and the ways it is served (HEAR, S3PRL, mart-embed, mart-pretrain's
refusal)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from mart_upstream.checkpoint import CheckpointError, default_checkpoint, load_pretrained, read_checkpoint
from mart_upstream.benchmarks.subprocesses import child_env
from mart_upstream.embedding import clip_embeddings, frame_features
from mart_upstream.models import all_names, model_names, reference_names
from mart_upstream.models.musicnn import FRAME_LAYERS, slaney_mel_filterbank
from mart_upstream.tfbundle import read_bundle, read_index

musicnn_weights = pytest.importorskip("mart_upstream.musicnn_weights")
if __import__("importlib").util.find_spec("musicnn") is None:
    pytest.skip(f"the musicnn package is not installed ({musicnn_weights.INSTALL})", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SR = 16000
LAYERS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate", "taggram")


def _env(**extra):
    return child_env(**extra)


def _notes(seconds, freqs, amp=0.3):
    """Decaying harmonic notes, one after the other."""
    t = np.arange(int(seconds * SR)) / SR
    y, step = np.zeros_like(t), seconds / len(freqs)
    for i, f in enumerate(freqs):
        m = t >= i * step
        tt = t[m] - i * step
        y[m] += amp * np.exp(-3 * tt) * sum(np.sin(2 * np.pi * f * k * tt) / k for k in range(1, 5))
    return y


def _drums(seconds, seed=0):
    """A bass tone under noise bursts on every beat."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.1 * np.sin(2 * np.pi * 55 * t)
    for beat in np.arange(0, seconds, 0.25):
        s, n = int(beat * SR), int(0.08 * SR)
        burst = 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / 400)
        y[s : s + n] += burst[: len(y[s : s + n])]
    return y


# one whole patch and a bit; two patches and a tail; shorter than a patch (zero padded to one)
CLIPS = {"clip0": _notes(3.2, [262, 330, 392, 523]),
         "clip1": _drums(6.5) + _notes(6.5, [220, 277, 330, 440, 554, 660], 0.15),
         "clip2": _notes(1.4, [440, 880])}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private conversion cache for this module (the user's is left alone)."""
    d = str(tmp_path_factory.mktemp("cache"))
    old = os.environ.get(musicnn_weights.CACHE_ENV)
    os.environ[musicnn_weights.CACHE_ENV] = d
    yield d
    if old is None:
        os.environ.pop(musicnn_weights.CACHE_ENV)
    else:
        os.environ[musicnn_weights.CACHE_ENV] = old


@pytest.fixture(scope="module")
def model(cache):
    m, _ = load_pretrained(default_checkpoint("musicnn"))
    return m


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """musicnn's own TensorFlow graph (tf-keras, TF_USE_LEGACY_KERAS=1) on CLIPS, in a subprocess."""
    pytest.importorskip("tf_keras")
    d = tmp_path_factory.mktemp("tf")
    np.savez(d / "clips.npz", **{k: v.astype(np.float32) for k, v in CLIPS.items()})
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "musicnn_tf_reference.py"), str(d / "clips.npz"),
                        str(d / "ref.npz")], env=_env(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(np.load(d / "ref.npz"))


def _tolerance(ref):
    """float32 tolerance: convolution sums in another order, and a rare float16 rounding of a log-mel cell
    that falls the other way (librosa's float32 STFT against ours in float64)."""
    return 1e-4 + 2e-5 * float(np.abs(ref).max())


# ------------------------------------------------------------------------------------- parity
def test_weights_read_without_tensorflow_equal_tensorflows_reader(reference):
    ours = read_bundle(musicnn_weights.source_prefix("MTT_musicnn"),
                                       keep=lambda n: "/Adam" not in n and not n.endswith("_power"))
    theirs = {k[4:]: v for k, v in reference.items() if k.startswith("var/")}
    assert sorted(ours) == sorted(theirs) and len(ours) == 64
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


def test_mel_filterbank_is_librosas_to_the_bit():
    librosa = pytest.importorskip("librosa")
    np.testing.assert_array_equal(slaney_mel_filterbank(SR, 512, 96).numpy(),
                                  librosa.filters.mel(sr=SR, n_fft=512, n_mels=96))


def test_every_layer_and_the_tags_equal_musicnns_own_graph(model, reference, capsys):
    report = []
    for key, wav in CLIPS.items():
        with torch.no_grad():
            logmel = model.patches(torch.from_numpy(wav).float())
            out = model.patch_outputs(logmel)
        ref_logmel = reference[f"{key}/logmel"]
        assert logmel.shape == ref_logmel.shape
        # log-mel cells equal but for float32 rounding and rare float16 roundings of the mel power
        diff = np.abs(logmel.numpy() - ref_logmel)
        assert diff.max() < 1e-3 and (diff > 1e-5).mean() < 1e-3, (diff.max(), (diff > 1e-5).mean())
        for name in LAYERS:
            ref = reference[f"{key}/{name}"]
            ours = out[name].numpy().reshape(ref.shape)
            d = float(np.abs(ours - ref).max())
            report.append(f"{key} {name}: max abs diff {d:.2e} (max |value| {np.abs(ref).max():.3g})")
            assert d <= _tolerance(ref), report[-1]
        assert float(np.abs(out["taggram"].numpy() - reference[f"{key}/taggram"]).max()) < 1e-4
    with capsys.disabled():
        print("\n" + "\n".join(report))


def test_frame_features_and_clip_embeddings_are_musicnns_patches(model, reference):
    for key, wav in CLIPS.items():
        x = torch.from_numpy(wav).float()[None]
        layers = frame_features(model, x)
        assert len(layers) == len(FRAME_LAYERS) and layers[0].shape == (1, -(-x.shape[1] // 256), 753)
        # each layer in its own slot: their sum is musicnn's dense mid-end vector of every patch's frames
        dense = np.concatenate([reference[f"{key}/{n}"].reshape(-1, reference[f"{key}/{n}"].shape[1], 
                                                                reference[f"{key}/{n}"].shape[2]) for n in FRAME_LAYERS],
                               axis=-1).reshape(-1, 753)
        n = min(dense.shape[0], layers[0].shape[1])
        total = sum(layers)[0, :n].numpy()
        assert np.abs(total - dense[:n]).max() <= _tolerance(dense)
        scene = clip_embeddings(model, x)
        assert scene.shape == (1, 200)
        np.testing.assert_allclose(scene[0].numpy(), reference[f"{key}/penultimate"].mean(0), atol=1e-4)


# --------------------------------------------------------------------------- weights and cache
def test_conversion_is_cached_hashed_and_redone_when_damaged(cache):
    path = musicnn_weights.musicnn_checkpoint("MTT_musicnn")
    assert os.path.dirname(path) == os.path.join(cache, "musicnn")
    state = read_checkpoint(path)  # the content hash is checked
    assert state["model_name"] == "musicnn" and len(state["pretrain"]["labels"]) == 50
    assert state["pretrain"]["labels"][:3] == ["guitar", "classical", "slow"]
    mtime = os.stat(path).st_mtime_ns
    assert musicnn_weights.musicnn_checkpoint("MTT_musicnn") == path and os.stat(path).st_mtime_ns == mtime
    with open(path, "r+b") as f:  # flip a byte in the middle of the weights
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(path)
    assert musicnn_weights.musicnn_checkpoint("MTT_musicnn") == path
    read_checkpoint(path)
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]


def test_msd_weights_differ_and_give_msd_tags(cache):
    mtt, msd = (read_checkpoint(musicnn_weights.musicnn_checkpoint(v)) for v in ("MTT_musicnn", "MSD_musicnn"))
    assert msd["config"]["variant"] == "MSD_musicnn" and msd["pretrain"]["labels"][0] == "rock"
    assert not torch.equal(mtt["model"]["dense.weight"], msd["model"]["dense.weight"])


def test_a_changed_package_is_converted_again(tmp_path, monkeypatch, cache):
    """The cache key holds a hash of the package's checkpoint files: a different file, a new conversion."""
    import importlib.util

    real = musicnn_weights.package_dir()
    fake = tmp_path / "site" / "musicnn"
    fake.mkdir(parents=True)
    shutil.copy(os.path.join(real, "configuration.py"), fake)
    (fake / "__init__.py").write_text("")
    shutil.copytree(os.path.join(real, "MTT_musicnn"), fake / "MTT_musicnn")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert musicnn_weights.package_dir() == str(fake)
    first = musicnn_weights.musicnn_checkpoint("MTT_musicnn")
    assert first == musicnn_weights.musicnn_checkpoint("MTT_musicnn")
    data = fake / "MTT_musicnn" / ".data-00000-of-00001"
    index = read_index(str(fake / "MTT_musicnn") + os.sep)
    offset = int(index["dense_1/bias"]["offset"])  # the tag layer's first bias: a different model
    raw = bytearray(data.read_bytes())
    raw[offset : offset + 4] = np.float32(3.0).tobytes()
    data.write_bytes(bytes(raw))
    second = musicnn_weights.musicnn_checkpoint("MTT_musicnn")
    assert second != first
    assert float(read_checkpoint(second)["model"]["classifier.bias"][0]) == 3.0


def test_missing_package_is_one_line_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    with pytest.raises(CheckpointError) as e:
        default_checkpoint("musicnn")
    assert "pip install --no-deps musicnn==0.1.0" in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_tensorflow_index_is_named(tmp_path):
    (tmp_path / ".index").write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"\.index is not a TensorFlow checkpoint index"):
        read_bundle(str(tmp_path) + os.sep)


# ------------------------------------------------------------------------------- how it is served
def test_registry_keeps_it_out_of_pretraining():
    assert "musicnn" in reference_names() and "musicnn" in all_names() and "musicnn" not in model_names()


def test_mart_pretrain_refuses_it_in_one_line(tmp_path):
    r = subprocess.run([os.path.join(BIN, "mart-pretrain"), "--model", "musicnn", "--out", str(tmp_path / "o"),
                        "--demo", "2"], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "mart-pretrain: error: --model musicnn: a published reference model" in r.stderr
    assert not (tmp_path / "o").exists()


def test_hear_api_module(cache):
    import hear_api.musicnn as hm

    m = hm.load_model()
    assert (m.sample_rate, m.scene_embedding_size, m.timestamp_embedding_size) == (16000, 200, 753)
    assert m.timestamp_hop_ms == 16.0
    audio = torch.from_numpy(np.stack([CLIPS["clip0"][:40000], CLIPS["clip2"][:20000].repeat(2)])).float()
    emb, ts = hm.get_timestamp_embeddings(audio, m)
    assert emb.shape == (2, -(-40000 // 256), 753) and ts.shape == emb.shape[:2]
    scene = hm.get_scene_embeddings(audio, m)
    assert scene.shape == (2, 200) and torch.isfinite(scene).all()
    assert hm.load_model("MSD_musicnn").model.config.variant == "MSD_musicnn"
    # docs/hear.md's size table says the same
    with open(os.path.join(ROOT, "docs", "hear.md")) as f:
        row = next(line for line in f if line.startswith("| `hear_api.musicnn`"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert [c.split()[0].rstrip(":") for c in cells[1:4]] == ["753", "16", "200"]


@pytest.mark.slow
def test_hear_validator_says_looks_good(cache, tmp_path):
    r = subprocess.run([os.path.join(BIN, "hear-validator"), "hear_api.musicnn", "-d", "cpu"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "Looks good!" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]


def test_s3prl_upstream_has_one_integer_frame_grid(cache):
    pytest.importorskip("s3prl")
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    up = ENTRY_POINTS["musicnn"]()
    rate = up.get_downsample_rates("hidden_states")
    assert rate == 128 and 16000 % rate == 0  # gcd(256, 16000): each 16 ms frame twice
    wavs = [torch.from_numpy(CLIPS["clip2"]).float(), torch.randn(7001) * 0.1]
    hs = up(wavs)["hidden_states"]
    assert len(hs) == 5 and all(h.shape == (2, -(-len(wavs[0]) // rate), 753) for h in hs)
    # s3prl's featurizer rule: within 5 frames of round(length / rate)
    assert abs(hs[0].shape[1] - round(len(wavs[0]) / rate)) <= 5


def test_mart_embed_writes_scene_vectors(cache, tmp_path):
    src = tmp_path / "audio"
    src.mkdir()
    for key in ("clip0", "clip2"):
        sf.write(src / f"{key}.wav", CLIPS[key].astype(np.float32), SR)
    r = subprocess.run([os.path.join(BIN, "mart-embed"), "--model", "musicnn", "--input", str(src), "--out",
                        str(tmp_path / "emb"), "--device", "cpu"], env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    emb = np.load(tmp_path / "emb" / "embeddings.npy")
    assert emb.shape == (2, 200) and np.isfinite(emb).all()


@pytest.mark.slow
def test_s3prl_run_downstream_trains_on_musicnn(cache, tmp_path):
    pytest.importorskip("s3prl")
    from test_s3prl import s3prl, scores, tiny_run, write_gtzan

    exp = tmp_path / "exp"
    r = s3prl("run_downstream", "-m", "train", "-u", "musicnn", "-d", "gtzan_genre", "-p", exp, "-o",
              tiny_run([f"config.downstream_expert.datarc.root={write_gtzan(tmp_path / 'gtzan')}"], steps=2))
    assert "MTT_musicnn" in r.stdout + r.stderr  # the expert names the converted checkpoint it loaded
    s = scores(exp, "test")
    assert s["step"] == 2 and 0 <= s["accuracy"] <= 1 and s["n_clips"] == 3


@pytest.mark.slow
def test_cover_song_tool_runs_with_musicnn(cache, tmp_path):
    import json

    from mart_upstream.benchmarks.cover_song.synthetic import CoverSetConfig, make_cover_set

    manifest = make_cover_set(str(tmp_path / "set"), CoverSetConfig(works=3, versions=2, seconds=3.0))
    r = subprocess.run([os.path.join(BIN, "mart-cover-song"), "eval", "--manifest", manifest, "--hear-module",
                        "hear_api.musicnn", "--out", str(tmp_path / "out")], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == ["hear_api.musicnn"] and 0.0 < summary["hear_api.musicnn"]["map"] <= 1.0
