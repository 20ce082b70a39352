"""Cover-song collections against repeated rows, conflicting rows, odd encodings and a damaged cache."""
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from mart_upstream.benchmarks.cover_song.embed import embed_tracks
from mart_upstream.errors import TaskError
from mart_upstream.tasks import covers as datasets
from mart_upstream.tasks.covers import read_manifest


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for w in range(3):
        for v in range(2):
            sf.write(tmp_path / f"w{w}v{v}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    return tmp_path


def _manifest(folder, rows, name="m.csv", encoding="utf-8"):
    path = folder / name
    path.write_text("work_id,version_id,path\n" + "".join(f"{w},{v},{p}\n" for w, v, p in rows), encoding=encoding)
    return str(path)


ROWS = [(f"w{w}", f"v{v}", f"w{w}v{v}.wav") for w in range(3) for v in range(2)]


def test_repeated_rows_are_counted_once(folder, caplog):
    with caplog.at_level(logging.WARNING):
        coll = read_manifest(_manifest(folder, ROWS + ROWS[:2] + [("w0", "v0", "./w0v0.wav")]))
    assert len(coll.tracks) == 6 and coll.duplicates == 3
    assert "3 duplicate entries" in caplog.text and "3 duplicate entries dropped" in coll.summary()


def test_one_file_under_two_works_is_refused(folder):
    with pytest.raises(TaskError, match="two works"):
        read_manifest(_manifest(folder, ROWS + [("w2", "v9", "w0v0.wav")]))


def test_one_version_with_two_files_is_refused(folder):
    rows = ROWS[:-1] + [("w0", "v0", "w2v1.wav")]
    with pytest.raises(TaskError, match="two files"):
        read_manifest(_manifest(folder, rows))


def test_published_lists_drop_conflicts_instead(folder):
    tracks = [datasets.Track(w, v, str(folder / p)) for w, v, p in ROWS] + [
        datasets.Track("w2", "v9", str(folder / "w0v0.wav"))]
    coll = datasets._finish(tracks, [], "list", conflicts="drop")
    assert len(coll.tracks) == 6 and coll.duplicates == 1


def test_a_byte_order_mark_is_not_part_of_a_column_name(folder):
    path = folder / "bom.csv"
    path.write_text("work_id,version_id,path\n" + "".join(f"{w},{v},{p}\n" for w, v, p in ROWS), encoding="utf-8-sig")
    assert len(read_manifest(str(path)).tracks) == 6


def test_a_latin1_manifest_is_a_clear_error(folder):
    path = _manifest(folder, ROWS + [("Caf\u00e9", "v0", "missing.wav")], encoding="latin-1")
    with pytest.raises(TaskError, match="not UTF-8"):
        read_manifest(path)


class _Mean:
    name, key, sample_rate = "mean", "mean-source", 16000

    def __init__(self):
        self.calls = 0

    def __call__(self, wav: torch.Tensor) -> np.ndarray:
        self.calls += 1
        return np.array([float(wav.mean()), float(wav.std())], dtype=np.float32)


def test_a_damaged_cache_entry_is_recomputed(folder, tmp_path, caplog):
    coll = read_manifest(_manifest(folder, ROWS))
    cache = tmp_path / "cache"
    first, _, _ = embed_tracks(_Mean(), coll.tracks, str(cache))
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == 6
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # truncated
    np.save(entries[1], np.full(2, np.nan, dtype=np.float32))  # non-finite
    source = _Mean()
    with caplog.at_level(logging.WARNING):
        again, _, _ = embed_tracks(source, coll.tracks, str(cache))
    assert source.calls == 2 and "damaged cache entry" in caplog.text
    np.testing.assert_allclose(again, first)


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "abc"])
def test_max_seconds_must_be_a_positive_number(folder, tmp_path, capsys, value):
    from mart_upstream.benchmarks.cover_song.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "--manifest", _manifest(folder, ROWS), "--hear-module", "hear_api.pemr",
              "--out", str(tmp_path / "o"), f"--max-seconds={value}"])
    assert e.value.code == 2 and "expected a positive number" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
