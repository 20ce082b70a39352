"""Pretraining data: scanning real folder trees, crops, resampling, deterministic sampling."""
import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from kit import write_tone
from mart_upstream.audio import load_audio, load_segment
from mart_upstream.errors import AudioError
from mart_upstream.train import data as D
from mart_upstream.train.demo import make_synthetic_dataset


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_tone(tmp_path / "a" / "x44.wav", 2, sr=44100, channels=2)
    write_tone(tmp_path / "a" / "b" / "y.flac", 2, sr=16000)
    write_tone(tmp_path / "z.ogg", 2, sr=22050)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_scan_finds_audio_recursively_in_order(tree):
    files = D.scan_audio_files(str(tree), progress=False)
    names = [f.path[len(str(tree)) + 1 :] for f in files]
    assert names == ["a/b/y.flac", "a/x44.wav", "z.ogg"]
    assert files[1].sample_rate == 44100 and files[1].channels == 2 and files[1].seconds == pytest.approx(2)


def test_bad_files_are_skipped_with_named_warnings(tree, caplog):
    (tree / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    write_tone(tree / "short.wav", 0.2, sr=16000)
    sf.write(tree / "silent.wav", np.zeros(32000, np.float32), 16000)
    with caplog.at_level(logging.WARNING):
        files = D.scan_audio_files(str(tree), min_seconds=1.0, progress=False)
    assert len(files) == 3
    for name in ("corrupt.wav", "short.wav", "silent.wav"):
        assert name in caplog.text
    assert "shorter than" in caplog.text and "silent" in caplog.text


def test_empty_missing_and_all_bad_folders_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no audio files.*empty"):
        D.scan_audio_files(str(tmp_path / "empty"), progress=False)
    with pytest.raises(AudioError, match="does not exist"):
        D.scan_audio_files(str(tmp_path / "nope"), progress=False)
    (tmp_path / "bad").mkdir()
    sf.write(tmp_path / "bad" / "s.wav", np.zeros(1000, np.float32), 16000)
    with pytest.raises(AudioError, match="1 silent"):
        D.scan_audio_files(str(tmp_path / "bad"), progress=False)


def test_file_list_and_index(tree, monkeypatch):
    lst = tree / "list.txt"
    lst.write_text("# train\na/x44.wav\n\nmissing.wav\n")
    files = D.scan_audio_files(str(tree), file_list=str(lst), progress=False)
    assert [f.path.endswith("x44.wav") for f in files] == [True]
    index = tree / "index.json"
    first = D.scan_audio_files(str(tree), index_path=str(index), progress=False)

    calls = []
    real_info = D.sf.info
    monkeypatch.setattr(D.sf, "info", lambda p: calls.append(p) or real_info(p))
    assert D.scan_audio_files(str(tree), index_path=str(index), progress=False) == first
    assert calls == []  # read from the index
    D.scan_audio_files(str(tree), min_seconds=0.5, index_path=str(index), progress=False)
    assert len(calls) == 3  # other criteria -> a new scan


def test_load_segment_resamples_downmixes_and_matches_whole_file(tree):
    info = D.scan_audio_files(str(tree), progress=False)[1]  # 44.1 kHz stereo
    seg = load_segment(info.path, info.sample_rate, 0.5, 8000, 16000)
    assert seg.shape == (8000,) and seg.dtype == torch.float32
    peak = torch.fft.rfft(seg).abs().argmax().item() * 16000 / 8000
    assert abs(peak - 440) < 3
    whole = load_audio(info.path, 16000)
    assert torch.allclose(seg[200:-200], whole[8000 + 200 : 16000 - 200], atol=2e-3)
    tail = load_segment(info.path, info.sample_rate, 1.9, 8000, 16000)  # past the end: zero padded
    assert tail.shape == (8000,) and torch.all(tail[-4000:] == 0)


def test_random_crops_are_deterministic_and_visit_every_file_once_per_epoch(tmp_path):
    make_synthetic_dataset(str(tmp_path), n_files=5, seconds=2.0, progress=False)
    files = D.scan_audio_files(str(tmp_path), progress=False)
    ds = D.RandomCropDataset(files, 4000, num_crops=2, seed=3, sampling="file")
    a = ds[7]
    assert a.shape == (2, 4000) and torch.equal(a, ds[7]) and not torch.equal(a, ds[8])
    assert not torch.equal(a[0], a[1])
    visited = sorted(ds._file(k).path for k in range(5))
    assert visited == sorted(f.path for f in files)
    batches = {}
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=3, sampler=D.StepSampler(3, 2), num_workers=workers)
        it = iter(dl)
        batches[workers] = [next(it) for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(batches[0], batches[2]))


def _tone_files(root, seconds):
    """A tone of 200 * (i + 1) Hz per entry of ``seconds``, as ``root/f<i>.wav`` -> the paths."""
    return [write_tone(os.path.join(root, f"f{i}.wav"), sec, 200 * (i + 1)) for i, sec in enumerate(seconds)]


def test_duration_sampling_follows_file_lengths_and_in_memory_crops_match_disk(tmp_path):
    _tone_files(str(tmp_path), [1.0, 1.0, 8.0])
    files = D.scan_audio_files(str(tmp_path), progress=False)
    ds = D.RandomCropDataset(files, 4000, seed=1)  # duration sampling is the default
    counts = np.bincount([ds._index(k) for k in range(2000)], minlength=3) / 2000
    assert counts == pytest.approx([0.1, 0.1, 0.8], abs=0.04)
    by_file = D.RandomCropDataset(files, 4000, seed=1, sampling="file")
    assert np.bincount([by_file._index(k) for k in range(300)]).tolist() == [100, 100, 100]
    mem = D.RandomCropDataset(files, 4000, seed=1, in_memory=True)
    for k in range(5):
        assert torch.allclose(mem[k], ds[k], atol=1e-4)


def test_groups_make_views_cross_files(tmp_path):
    paths = _tone_files(str(tmp_path), [1.0, 1.0, 1.0, 1.0])
    groups_csv = tmp_path / "groups.csv"
    groups_csv.write_text("path,group\nf0.wav,a\nf1.wav,a\nf2.wav,b\n")  # f3 not listed: a group alone
    files = D.scan_audio_files(str(tmp_path), progress=False)
    groups = D.read_groups(str(groups_csv), str(tmp_path), files)
    assert groups[0] == groups[1] and len(set(groups)) == 3
    ds = D.RandomCropDataset(files, 4000, seed=2, groups=groups)
    freq = lambda x: int(torch.fft.rfft(x).abs().argmax()) * 16000 // 4000  # noqa: E731
    for k in range(20):
        i = ds._index(k)
        a, b = ds[k]
        want = {0: 400, 1: 200}.get(i, freq(a))  # files 0 and 1 (200 / 400 Hz) swap; 2 and 3 stay alone
        assert freq(b) == want
    with pytest.raises(AudioError, match="path,group"):
        bad = tmp_path / "bad.csv"
        bad.write_text("file,work\nf0.wav,a\n")
        D.read_groups(str(bad), str(tmp_path), files)


def test_step_sampler_shards_and_resumes():
    def take(s, n):
        it = iter(s)
        return [next(it) for _ in range(n)]

    r0, r1 = take(D.StepSampler(4, 0, 0, 2), 8), take(D.StepSampler(4, 0, 1, 2), 8)
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(16))
    assert take(D.StepSampler(4, 0), 12)[8:] == take(D.StepSampler(4, 2), 4)


def test_synthetic_set_is_deterministic(tmp_path):
    a = make_synthetic_dataset(str(tmp_path / "a"), n_files=2, seconds=1.5, seed=1, progress=False)
    b = make_synthetic_dataset(str(tmp_path / "b"), n_files=2, seconds=1.5, seed=1, progress=False)
    c = make_synthetic_dataset(str(tmp_path / "c"), n_files=2, seconds=1.5, seed=2, progress=False)
    read = lambda p: open(p, "rb").read()  # noqa: E731
    assert [read(p) for p in a] == [read(p) for p in b] != [read(p) for p in c]
    x, sr = sf.read(a[0])
    assert sr == 16000 and len(x) == 24000 and 0.4 < np.abs(x).max() <= 0.501
