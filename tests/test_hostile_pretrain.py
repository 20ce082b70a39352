"""Pretraining against poisoned audio, odd files, bad arguments, interrupted writes and a full disk."""
import errno
import logging
import os
import shutil
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from kit import tiny_overrides, write_audio
from mart_upstream import checkpoint as checkpoint_module
from mart_upstream.checkpoint import load_pretrained, read_checkpoint
from mart_upstream.train.data import scan_audio_files
from mart_upstream.train.cli import main
from mart_upstream.train.demo import make_synthetic_dataset

FAST = ["augment.p_pitch=0", "data.num_workers=0", "run.log_every=1"]


def run(data, out, *extra, model="simclr"):
    return main(["--model", model, "--data", str(data), "--out", str(out), "--batch-size", "4",
                 *extra, *FAST, *tiny_overrides(model)])


@pytest.fixture
def audio_dir(tmp_path):
    d = tmp_path / "audio"
    make_synthetic_dataset(str(d), n_files=5, seconds=2.0, sample_rate=16000, seed=0, progress=False)
    return d


def _float_wav(path, scale=0.3, poison=None):
    x = (scale * np.random.default_rng(1).standard_normal(32000)).astype(np.float32)
    if poison is not None:
        x[1000:1010] = poison
    write_audio(path, x, 16000, subtype="FLOAT")


@pytest.mark.parametrize("check_silence", [True, False])
def test_non_finite_and_absurd_files_are_skipped_at_scan(audio_dir, caplog, check_silence):
    _float_wav(audio_dir / "inf.wav", poison=np.inf)
    _float_wav(audio_dir / "nan.wav", poison=np.nan)
    _float_wav(audio_dir / "huge.wav", scale=1e30)
    with caplog.at_level(logging.WARNING):
        files = scan_audio_files(str(audio_dir), min_seconds=0.5, check_silence=check_silence, progress=False)
    kept = {os.path.basename(f.path) for f in files}
    assert not kept & {"inf.wav", "nan.wav", "huge.wav"} and len(kept) == 5
    assert "inf.wav: holds NaN or infinite" in caplog.text and "nan.wav: holds NaN" in caplog.text
    assert "huge.wav: peak amplitude" in caplog.text


def test_a_file_poisoned_after_the_scan_costs_batches_not_the_run(audio_dir, tmp_path, caplog):
    """The index is reused (same size and time stamp), the file now holds Inf: the bad batches are
    skipped, named, counted in the checkpoint, and the weights stay finite."""
    out = tmp_path / "run"
    victim = audio_dir / "float.wav"
    _float_wav(victim)
    assert run(audio_dir, out, "--steps", "1") == 0
    st = os.stat(victim)
    data, sr = sf.read(victim, dtype="float32")
    info = sf.info(victim)
    data[:] = np.inf
    sf.write(victim, data, sr, subtype=info.subtype)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(victim) == st.st_size
    with caplog.at_level(logging.WARNING):
        rc = run(audio_dir, out, "--steps", "12", "--resume", "run.max_bad_batches=100")
    assert rc == 0
    state = read_checkpoint(str(out / "last.ckpt"))  # also checks that every weight is finite
    assert state["step"] == 12 and state["pretrain"]["bad_batches"] >= 1
    assert "batch skipped" in caplog.text and victim.name in caplog.text


def test_diverging_run_stops_after_max_bad_batches_naming_only_real_checkpoints(audio_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = run(audio_dir, out, "--steps", "30", "--ckpt-every", "1000", "optim.lr=1e30", "run.max_bad_batches=2")
    assert rc == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "run.max_bad_batches=2" in err and "lower optim.lr" in err
    assert "no checkpoint was written yet" in err and not (out / "last.ckpt").exists()


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "run.steps"),
    (["--batch-size", "1"], "at least 2"),
    (["--max-minutes", "nan"], "--max-minutes"),
    (["--max-minutes", "-1"], "--max-minutes"),
    (["--max-minutes", "inf"], "--max-minutes"),
    (["--num-workers", "-1"], "data.num_workers"),
    (["--ckpt-every", "0"], "run.ckpt_every"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=fast"], "optim.lr"),
    (["run.steps=1.5"], "run.steps"),
    (["model.temperature=[0.5"], "not valid YAML"),
])
def test_bad_settings_are_one_line_errors(audio_dir, tmp_path, capsys, args, words):
    # later arguments win: put the bad one after run()'s own --batch-size
    rc = main(["--model", "simclr", "--data", str(audio_dir), "--out", str(tmp_path / "o"), "--batch-size", "4",
               *FAST, *tiny_overrides("simclr"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert "mart-pretrain: error:" in err and words in err, err


def test_broken_config_file_is_a_clear_error(audio_dir, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("run:\n  steps: [1, 2\n")
    assert run(audio_dir, tmp_path / "o", "--config", str(cfg)) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "not valid YAML" in err


def test_resume_from_a_weights_only_checkpoint_is_refused(audio_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(audio_dir, out, "--steps", "1") == 0
    state = torch.load(out / "last.ckpt", weights_only=True)
    state["optimizer"] = None
    checkpoint_module.write_state(str(out / "last.ckpt"), state)
    assert run(audio_dir, out, "--steps", "2", "--resume") == 2
    assert "weights only" in capsys.readouterr().err


def test_stale_temp_files_of_killed_writes_are_removed(audio_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for i in range(3):
        (out / f".tmp-abc{i}.ckpt").write_bytes(b"\0" * 1000)
    assert run(audio_dir, out, "--steps", "1") == 0
    assert not list(out.glob(".tmp-*"))


def test_full_disk_is_named_and_leaves_no_partial_file(audio_dir, tmp_path, capsys, monkeypatch):
    def no_space(obj, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", no_space)
    out = tmp_path / "run"
    assert run(audio_dir, out, "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and "last.ckpt" in err and "Traceback" not in err
    assert not list(out.glob(".tmp-*")) and not (out / "last.ckpt").exists()


def test_a_fifo_named_wav_is_skipped_not_opened(audio_dir, caplog):
    os.mkfifo(audio_dir / "pipe.wav")
    result = {}

    def scan():
        result["files"] = scan_audio_files(str(audio_dir), min_seconds=0.5, progress=False)

    with caplog.at_level(logging.WARNING):
        t = threading.Thread(target=scan, daemon=True)
        t.start()
        t.join(timeout=60)
    if t.is_alive():  # unblock the reader so the test process can end
        with open(audio_dir / "pipe.wav", "wb"):
            pass
    assert not t.is_alive(), "scanning blocked on a FIFO"
    assert len(result["files"]) == 5 and "pipe.wav: not a regular file" in caplog.text


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can list any folder")
def test_a_folder_that_cannot_be_listed_is_named(audio_dir, caplog):
    locked = audio_dir / "locked"
    locked.mkdir()
    shutil.copy(sorted(audio_dir.glob("*.wav"))[0], locked / "x.wav")
    locked.chmod(0)
    try:
        with caplog.at_level(logging.WARNING):
            scan_audio_files(str(audio_dir), min_seconds=0.5, progress=False)
    finally:
        locked.chmod(0o755)
    assert "locked: cannot be listed" in caplog.text


def test_a_changed_file_invalidates_the_scan_index(audio_dir, tmp_path):
    index = str(tmp_path / "index.json")
    assert len(scan_audio_files(str(audio_dir), min_seconds=0.5, index_path=index, progress=False)) == 5
    victim = sorted(audio_dir.glob("*.wav"))[0]
    sf.write(victim, np.zeros(32000, dtype=np.float32), 16000)  # now silent, new size/time
    assert len(scan_audio_files(str(audio_dir), min_seconds=0.5, index_path=index, progress=False)) == 4


def test_packaged_style_export_loads(tmp_path, audio_dir):
    out = tmp_path / "run"
    assert run(audio_dir, out, "--steps", "1") == 0
    load_pretrained(str(out / "last.ckpt"))
