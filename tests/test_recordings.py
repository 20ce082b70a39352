"""The recordings corpus (benchmarks/data/recordings.py) on a small fixture in the packages' real on-disk
layout: a folder of Ogg files (wesnoth), Ogg inside a .pk3 zip (ufoai), Opus in album folders (warzone2100),
each with its Debian copyright file; and the evaluation on it (soundtrack identification, same-track
retrieval) through a real HEAR module."""
import csv
import io
import json
import os
import zipfile

import numpy as np
import pytest
import soundfile as sf

from benchmarks.data import recordings as R
from kit import tree_hashes

SR = 16000
TRACK_S = 24.0  # above the 20 s jingle rule


def _track(seed: int, seconds: float = TRACK_S) -> np.ndarray:
    """A distinct piece: random notes (pitch, length, loudness) of decaying harmonic tones, in a register
    and with a brightness of its own."""
    rng = np.random.default_rng(seed)
    low = 55.0 * 2 ** rng.uniform(0, 3)  # the piece's register
    weights = rng.uniform(0, 1, size=6) ** rng.uniform(0.5, 4)  # its timbre
    out = np.zeros(int(seconds * SR), np.float32)
    t = 0
    while t < len(out):
        n = int(rng.uniform(0.15, 1.2) * SR)
        f0 = low * 2 ** (rng.integers(0, 12) / 12)
        tt = np.arange(n) / SR
        note = sum(w * np.sin(2 * np.pi * f0 * h * tt) for h, w in enumerate(weights, 1) if f0 * h < SR / 2)
        note = note / max(1e-6, weights.sum()) * np.exp(-tt * rng.uniform(1, 6))
        out[t : t + n] += (rng.uniform(0.05, 0.4) * note[: len(out) - t]).astype(np.float32)
        t += n
    return np.clip(out, -1, 1)


def _ogg(x: np.ndarray, subtype: str = "VORBIS") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="OGG", subtype=subtype)
    return buf.getvalue()


def _copyright(root, pkg, licence, extra=""):
    d = root / "usr/share/doc" / pkg
    d.mkdir(parents=True)
    (d / "copyright").write_text(f"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                                 f"Files: *\nCopyright: someone\nLicense: {licence}\n\n{extra}")


def make_debroot(root):
    """The three music-only packages' files, small, in their installed layout under ``root``."""
    wes = root / "usr/share/games/wesnoth/1.16/data/core/music"
    wes.mkdir(parents=True)
    for i in range(6):
        (wes / f"theme{i}.ogg").write_bytes(_ogg(_track(100 + i)))
    (wes / "victory.ogg").write_bytes(_ogg(_track(7, 5.0)))  # a jingle
    (wes / "ambience_night.ogg").write_bytes(_ogg(_track(8)))  # named ambience
    quiet = _track(9) * 0.001  # -60 dBFS and below: a near-silent cue
    (wes / "cue.ogg").write_bytes(_ogg(quiet))
    _copyright(root, "wesnoth-1.16-music", "GPL-2+")
    ufo = root / "usr/share/games/ufoai/base"
    ufo.mkdir(parents=True)
    with zipfile.ZipFile(ufo / "0music.pk3", "w") as z:
        for i in range(5):
            z.writestr(f"music/ufo{i}.ogg", _ogg(_track(200 + i)))
        z.writestr("music/copy_of_theme0.ogg", _ogg(0.8 * _track(100)))  # the same recording as wesnoth's theme0
        z.writestr("textures/readme.txt", "not music")
    # DEP-5: the last matching stanza wins; a source-tree path matches its installed place
    _copyright(root, "ufoai-music", "GPL-2", "Files:\n base/music/ufo1.ogg\n base/music/ufo2.ogg\n"
               "Copyright: someone else\nLicense: CC-BY-3.0\n")
    wz = root / "usr/share/games/warzone2100/music/albums"
    for a, album in enumerate(("original", "remix")):
        (wz / album).mkdir(parents=True)
        for i in range(3):
            (wz / album / f"track{i}.opus").write_bytes(_ogg(_track(300 + 10 * a + i), "OPUS"))
        (wz / album / "album.json").write_text("{}")
    _copyright(root, "warzone2100-music", "CC-BY-SA-3.0 or GPL-2+")
    return root


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return make_debroot(tmp_path_factory.mktemp("debroot"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    old = os.environ.get("MART_CACHE")
    os.environ["MART_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["MART_CACHE"]
    if old is None:
        del os.environ["MART_CACHE"]
    else:
        os.environ["MART_CACHE"] = old


def _cfg(root, **kw):
    return R.RecordingsConfig(prefix=str(root), clips_per_track=2, **kw)


def test_rules_drop_jingles_ambience_and_duplicates_and_the_split_holds_out_tracks(fixture_root, cache):
    sel = R.select(_cfg(fixture_root), seed=0)
    assert [p.name for p in sel["present"]] == list(R.MUSIC_ONLY) and sel["missing"] == []
    rules = {k: v["rule"] for k, v in sel["dropped"].items()}
    assert rules["wesnoth-1.16-music:victory"] == "jingle"
    assert rules["wesnoth-1.16-music:ambience_night"] == "ambience (name)"
    assert rules["wesnoth-1.16-music:cue"].startswith("ambience (quiet")
    # the copy in the later package goes; the earlier package keeps its track
    assert rules["ufoai-music:music/copy_of_theme0"].startswith("duplicate of wesnoth-1.16-music:theme0")
    assert len(rules) == 4, rules  # no distinct piece is taken for a duplicate
    kept = {s.key for s, _ in sel["kept"]}
    assert "wesnoth-1.16-music:theme0" in kept and not any("readme" in k for k in kept)
    assert {s.key for s, _ in sel["kept"]} == set(sel["split"])
    for game, n in (("wesnoth", 6), ("ufoai", 5), ("warzone2100", 6)):
        mine = [s.key for s, _ in sel["kept"] if s.game == game]
        assert len(mine) == n
        assert sum(sel["split"][k] == "eval" for k in mine) == 3  # 40% of 5-6 is 2: at least 3 for grouped CV
    # another seed draws other evaluation tracks, the same seed the same ones
    assert R.select(_cfg(fixture_root), seed=0)["split"] == sel["split"]
    assert R.select(_cfg(fixture_root), seed=1)["split"] != sel["split"]


def test_fingerprint_cache_notices_a_changed_file(fixture_root, cache, tmp_path):
    p = tmp_path / "x.ogg"
    p.write_bytes(_ogg(_track(1)))
    src = R.Source("wesnoth-1.16-music", "wesnoth", "x", str(p))
    a = R.analyse(src, -50.0)
    p.write_bytes(_ogg(_track(2, 30.0)))
    b = R.analyse(src, -50.0)
    assert a["seconds"] == pytest.approx(TRACK_S, abs=0.05) and b["seconds"] == pytest.approx(30.0, abs=0.05)


def test_blockwise_resampling_equals_one_call():
    import torch
    import torchaudio.functional as AF

    x = np.random.default_rng(0).normal(size=(44100 * 7 + 13, 2)).astype(np.float32) * 0.1
    whole = AF.resample(torch.from_numpy(x.mean(1)), 44100, SR).numpy()
    np.testing.assert_allclose(R.to_16k_mono(x, 44100, block_s=1.0), np.clip(whole, -1, 1), atol=1e-6)


@pytest.fixture(scope="module")
def built(fixture_root, cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    section = R.build(str(root), _cfg(fixture_root), seed=0)
    return root, section


def test_build_writes_task_retrieval_set_and_pretraining_pool_apart(built):
    root, section = built
    task = root / section["task"]
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["task_name"] == "soundtrack" and meta["split_mode"] == "trainvaltest"
    labels = {r["label"] for r in csv.DictReader(open(task / "labelvocabulary.csv"))}
    assert labels == {"wesnoth", "ufoai", "warzone2100"}
    clips = {}
    for split in ("train", "valid", "test"):
        for name, lab in json.loads((task / f"{split}.json").read_text()).items():
            clips[name] = (split, lab[0])
            x, sr = sf.read(task / "16000" / split / name)
            assert sr == SR and len(x) == 10 * SR
    assert len(clips) == 9 * 2  # 3 evaluation tracks per game, 2 clips each
    # a track's clips stay in one split
    by_track = {}
    for name, (split, _) in clips.items():
        by_track.setdefault(name.rsplit("_", 1)[0], set()).add(split)
    assert all(len(s) == 1 for s in by_track.values())
    rows = list(csv.DictReader(open(root / "recordings" / "tracks.csv")))
    works = {r["work_id"] for r in rows}
    assert works == set(by_track) and len(rows) == 18
    # no evaluation track is in the pretraining pool
    pool = {os.path.relpath(os.path.join(d, f), root / "pretrain" / "recorded")
            for d, _, fs in os.walk(root / "pretrain" / "recorded") for f in fs}
    assert len(pool) == 17 - 9
    assert not {w.split(".", 1)[1] for w in works} & {os.path.splitext(p.split("/", 1)[1])[0] for p in pool}
    for p in pool:
        info = sf.info(str(root / "pretrain" / "recorded" / p))
        assert info.samplerate == SR and info.channels == 1
    pk = section["packages"]["warzone2100-music"]
    assert pk["licence"] == "CC-BY-SA-3.0 or GPL-2+ (6 tracks)" and pk["tracks"] == {"pretrain": 3, "eval": 3}
    assert section["packages"]["ufoai-music"]["licence"] == "GPL-2 (3 tracks), CC-BY-3.0 (2 tracks)"
    assert pk["hours"]["eval"] == pytest.approx(3 * TRACK_S / 3600, abs=1e-3)
    assert "ufoai-music:music/copy_of_theme0" in section["packages"]["ufoai-music"]["dropped"]
    md = R.licences_md(section)
    assert "| ufoai-music |" in md and "GPL-2" in md


def test_same_seed_same_bytes(built, fixture_root, tmp_path):
    root, _ = built
    again = tmp_path / "again"
    R.build(str(again), _cfg(fixture_root), seed=0)
    assert tree_hashes(again) == tree_hashes(root)


def test_no_package_is_one_clear_error(tmp_path, cache):
    from mart_upstream.errors import TaskError

    with pytest.raises(TaskError, match="none of the packages is installed; sudo apt-get install wesnoth"):
        R.build(str(tmp_path / "o"), _cfg(tmp_path), seed=0)
    with pytest.raises(TaskError, match="unknown packages"):
        R.select(_cfg(tmp_path, packages=("nope",)), seed=0)


def test_evaluation_scores_soundtrack_and_same_track_through_a_hear_module(built, tmp_path):
    from benchmarks.run import evaluation, report

    root, _ = built
    manifest = str(root / "recordings" / "tracks.csv")
    e = evaluation.Entry(report.MFCC_ROW, "mfcc", "hear_api.mfcc")
    out = evaluation.recordings(e, manifest, str(tmp_path / "mfcc"))
    st, tr = out["soundtrack"], out["tracks"]
    assert st["games"] == 3 and st["cv"]["n"] == 18 and st["cv"]["folds"] == 3
    assert set(st["cv"]["groups"]) == {r["work_id"] for r in csv.DictReader(open(manifest))}
    assert 0.0 <= st["top1_acc"] <= 1.0 and tr["n_queries"] == 18 and tr["tracks"] == 9
    # pieces of their own register and timbre: a clip finds the other clip of its track far above a random
    # ranking (one relevant among 17: expected AP = H(17) / 17 = 0.20)
    assert tr["map"] > 0.5
    # kept while the manifest is unchanged
    again = evaluation.recordings(e, manifest, str(tmp_path / "mfcc"))
    assert again == out


def test_clips_decoded_alone_equal_the_whole_track_decoded(fixture_root):
    """Evaluation clips are read with seeking (with resampler context), not from the whole decoded track."""
    for src in (R.list_sources(R.BY_NAME["wesnoth-1.16-music"], str(fixture_root))[1],
                R.list_sources(R.BY_NAME["ufoai-music"], str(fixture_root))[2],  # a member of the .pk3 zip
                R.list_sources(R.BY_NAME["warzone2100-music"], str(fixture_root))[0]):  # Opus
        whole = R.to_16k_mono(*src.read())
        starts = R.clip_starts(len(whole) / SR, 10.0, 3)
        for t, clip in zip(starts, src.segments(starts, 10.0)):
            s = int(round(t * SR))
            np.testing.assert_allclose(clip, whole[s : s + 10 * SR], atol=2e-3, err_msg=src.key)


def test_without_decoding_every_track_only_the_name_rules_apply(fixture_root, cache):
    sel = R.select(_cfg(fixture_root, decode_all=False), seed=0)
    rules = {k: v["rule"] for k, v in sel["dropped"].items()}
    assert rules == {"wesnoth-1.16-music:victory": "jingle", "wesnoth-1.16-music:ambience_night": "ambience (name)"}
    secs = {s.key: st["seconds"] for s, st in sel["kept"]}
    assert secs["wesnoth-1.16-music:theme0"] == pytest.approx(TRACK_S, abs=0.05)
