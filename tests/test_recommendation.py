"""Playlist continuation (Strategies §4.4): HR@k and MPR by hand, the AOTM-2011 layout, the benchmark's
generated playlists and their columns in the offline report."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kit import write_audio
from mart_upstream.benchmarks.data import build
from mart_upstream.benchmarks.run import evaluation, report
from mart_upstream.errors import TaskError
from mart_upstream.tasks import playlists as pl
from mart_upstream.tasks.metrics import grouped_bootstrap, hit_at_k, percentile_rank, rank_against_negatives


def _unit(deg):
    return [np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))]


# -- metrics and the probe against hand computations ------------------------------------------------
def test_rank_hit_and_percentile_by_hand():
    pos = np.array([0.5, 0.2, 0.9])
    neg = np.array([[0.9, 0.5, 0.1],    # 0.9 above, 0.5 ties (ranked before the item) -> rank 3
                    [0.1, 0.0, -1.0],   # all below -> rank 1
                    [0.95, 0.99, 1.0]])  # all above -> rank 4
    ranks = rank_against_negatives(pos, neg)
    assert ranks.tolist() == [3, 1, 4]
    assert hit_at_k(ranks, 2).tolist() == [0, 1, 0] and hit_at_k(ranks, 3).tolist() == [1, 1, 0]
    assert percentile_rank(ranks, 4) == pytest.approx([2 / 3, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        rank_against_negatives(np.array([np.nan]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"\[I\]"):
        rank_against_negatives(pos, neg[:2])


def test_grouped_bootstrap_resamples_groups():
    # two groups of very different sizes: the mean is over items, the interval over groups
    v, g = np.r_[np.ones(9), 0.0], np.r_[np.zeros(9), 1]
    b = grouped_bootstrap(v, g, n_boot=500, seed=1)
    assert b["mean"] == pytest.approx(0.9) and b["groups"] == 2 and b["n"] == 10
    assert b["ci_low"] == pytest.approx(0.0) and b["ci_high"] == pytest.approx(1.0)  # a resample of one group
    c = grouped_bootstrap(np.full(6, 0.25), [0, 0, 1, 1, 2, 2])
    assert c["ci_low"] == c["ci_high"] == c["mean"] == 0.25


def _worked_example():
    """One playlist on the unit circle: queries at -10, 0, 10 degrees (their mean points at 0 degrees, so
    a candidate's score is proportional to cos(angle)); tracks to find at 20 and 95 degrees; 15
    other tracks, one of them an exact copy of the track at 20 degrees (a tie)."""
    angles = {"q1": -10, "q2": 0, "q3": 10, "g1": 20, "g2": 95}
    negatives = {f"n{a:03d}": a for a in (5, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150)}
    emb = {t: _unit(a) for t, a in {**angles, **negatives}.items()}
    emb["twin_of_g1"] = list(emb["g1"])
    ids = sorted(emb)
    return np.array([emb[t] for t in ids]) * 3.0, ids, [pl.Playlist("mix1", ["q1", "q2", "q3", "g1", "g2"])]


def test_worked_example_hr_and_mpr():
    X, ids, playlists = _worked_example()
    res = pl.evaluate(X, ids, playlists, n_negatives=100, queries="first")  # more than there are: all 15 others are negatives
    assert res["negatives"] == 15 and res["playlists"] == 1
    items = res["items"]
    assert items["track"] == ["g1", "g2"] and items["playlist"] == ["mix1", "mix1"]
    # g1: 5 degrees and its twin (a tie) come first -> rank 3; g2: 5..90 degrees and the twin -> rank 10
    assert items["rank"] == [3, 10]
    assert items["percentile"] == pytest.approx([2 / 15, 9 / 15])
    assert items["hit"] == [1.0, 1.0] and res["hr_at_10"]["mean"] == 1.0
    assert res["mpr"]["mean"] == pytest.approx(11 / 30)
    assert pl.evaluate(X, ids, playlists, k=9, queries="first")["hr_at_9"]["mean"] == 0.5  # rank 10 is outside the top 9
    # the order of the rows does not matter; the scale of a vector does not either (cosine)
    perm = np.random.default_rng(0).permutation(len(ids))
    scaled = X[perm] * np.linspace(0.5, 4, len(ids))[:, None]
    again = pl.evaluate(scaled, [ids[i] for i in perm], playlists, n_negatives=100, queries="first")
    assert again["items"]["rank"] == [3, 10]


def test_fewer_negatives_are_sampled_without_replacement_and_kept_for_every_encoder():
    X, ids, playlists = _worked_example()
    prot = pl.sample_protocol(playlists, ids, n_negatives=4, seed=3, queries="first")
    assert prot.negatives.shape == (2, 4)
    inside = {ids.index(t) for t in playlists[0].tracks}
    for row in prot.negatives:
        assert len(set(row)) == 4 and not set(row) & inside
    same = pl.sample_protocol(playlists, ids, n_negatives=4, seed=3, queries="first")
    assert np.array_equal(same.negatives, prot.negatives)
    scores = pl.score_protocol(X, prot)
    # hand check of one list: the rank is 1 + the negatives whose angle is no larger than the item's
    angle = {t: np.degrees(np.arctan2(*X[i][::-1])) for i, t in enumerate(ids)}
    for i in range(2):
        item = angle[ids[prot.item_track[i]]]
        assert scores["rank"][i] == 1 + sum(abs(angle[ids[n]]) <= abs(item) + 1e-9 for n in prot.negatives[i])


def test_random_queries_are_seeded_and_random_embeddings_score_chance():
    rng = np.random.default_rng(0)
    ids = [f"t{i:03d}" for i in range(400)]
    playlists = [pl.Playlist(f"p{j}", [ids[i] for i in rng.choice(400, 8, replace=False)]) for j in range(60)]
    a = pl.sample_protocol(playlists, ids, queries="random", seed=5)
    b = pl.sample_protocol(playlists, ids, queries="random", seed=5)
    assert np.array_equal(a.queries, b.queries) and np.array_equal(a.negatives, b.negatives)
    assert a.negatives.shape == (60 * 5, 100)
    first = pl.sample_protocol(playlists, ids, seed=5, queries="first")
    assert [ids[i] for i in first.queries[0]] == playlists[0].tracks[:3]
    assert not np.array_equal(a.queries, first.queries)
    for pi, p in enumerate(playlists):  # queries and held-out items partition each playlist
        held = [ids[t] for t in a.item_track[a.item_playlist == pi]]
        assert sorted(held + [ids[q] for q in a.queries[pi]]) == sorted(p.tracks)
    noise = pl.evaluate(rng.normal(size=(400, 16)), ids, playlists, seed=5)
    assert abs(noise["mpr"]["mean"] - 0.5) < 0.06 and noise["hr_at_10"]["mean"] < 0.2
    assert noise["mpr"]["ci_low"] < noise["mpr"]["mean"] < noise["mpr"]["ci_high"]
    # an embedding that knows the playlists: every held-out track first
    member = np.zeros((400, 60))
    for j, p in enumerate(playlists):
        member[[ids.index(t) for t in p.tracks], j] = 1
    exact = pl.evaluate(member + 1e-3, ids, playlists, seed=5)
    assert exact["items"]["track"] == noise["items"]["track"]  # the same items for any encoder
    assert exact["hr_at_10"]["mean"] > 0.95 and exact["mpr"]["mean"] < 0.02
    with pytest.raises(TaskError, match="no embedding"):
        pl.evaluate(member[:-1], ids[:-1], playlists + [pl.Playlist("x", [ids[-1]] + ids[:4])])
    with pytest.raises(TaskError, match="leave none"):
        pl.sample_protocol([pl.Playlist("short", ids[:3])], ids)


# -- the AOTM-2011 layout ------------------------------------------------------------------------------
def _song(tid, artist="A", title="T"):
    return [[artist, title], tid]


@pytest.fixture
def aotm(tmp_path):
    records = [
        {"mix_id": 1, "category": "Rock", "playlist": [_song("TRA"), _song("TRB"), _song(None), _song("TRC"),
                                                          _song("TRD"), _song("TRA")]},
        {"mix_id": 2, "category": "Jazz", "playlist": ["TRE", "TRF", "TRG", "TRMISSING", "TRH"]},
        {"mix_id": 3, "category": "Pop", "playlist": [_song("TRA"), _song("TRMISSING"), _song("TRB"), _song("TRC")]},
    ]
    path = tmp_path / "playlists.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2]) + "\n")
    audio = tmp_path / "audio"
    for t in ("TRA", "TRB", "TRC", "TRD", "TRE", "TRF"):
        write_audio(audio / f"{t}.wav", np.zeros(800, dtype=np.float32), 16000)
    for t in ("TRG", "TRH"):  # nested, as in the Million Song Dataset's folders: any depth is found
        write_audio(audio / t[2] / "x" / f"{t}.flac", np.zeros(800, dtype=np.float32), 16000)
    return {"root": tmp_path, "path": path, "audio": audio, "records": records}


def test_loader_reads_the_layout_drops_missing_audio_and_counts(aotm):
    s = pl.read_playlists(str(aotm["root"]), str(aotm["audio"]))  # the folder: playlists.jsonl is found
    assert [p.id for p in s.playlists] == ["1", "2"]  # mix 3 has 3 tracks with audio: too short
    assert s.playlists[0].tracks == ["TRA", "TRB", "TRC", "TRD"] and s.playlists[0].category == "Rock"
    assert s.playlists[0].titles["TRA"] == ("A", "T")
    assert s.playlists[1].tracks == ["TRE", "TRF", "TRG", "TRH"]
    assert s.missing == ["TRMISSING"] and s.unmatched == 1 and s.repeats == 1 and s.too_short == 1
    assert s.paths["TRG"].endswith(os.path.join("G", "x", "TRG.flac")) and set(s.paths) == set(s.tracks())
    assert "1 tracks without audio dropped" in s.summary()
    # without an audio folder nothing is dropped for audio; max_tracks drops long playlists
    s = pl.read_playlists(str(aotm["path"]), max_tracks=4)
    assert [p.id for p in s.playlists] == ["1", "3"] and s.too_long == 1 and s.paths == {}  # mix 2 has 5
    with pytest.raises(TaskError, match="no playlist has at least 9 tracks"):
        pl.read_playlists(str(aotm["path"]), min_tracks=9)


def test_loader_reads_the_distributed_json_array_and_gzip(aotm, tmp_path):
    text = json.dumps(aotm["records"], indent=1)
    (tmp_path / "arr").mkdir()
    with gzip.open(tmp_path / "arr" / "aotm2011_playlists.json.gz", "wt") as f:
        f.write(text)
    s = pl.read_playlists(str(tmp_path / "arr"))
    assert [p.id for p in s.playlists] == ["1", "2", "3"]
    assert s.playlists[2].tracks == ["TRA", "TRMISSING", "TRB", "TRC"]
    bad = tmp_path / "aotm2011_playlists.json"
    bad.write_text(text.replace('"category"', '"category" ::', 1))
    with pytest.raises(TaskError, match=r"aotm2011_playlists.json line \d+ column \d+"):
        pl.read_playlists(str(bad))
    bad.write_text(json.dumps([aotm["records"][0], {"mix_id": 9, "playlist": [["TRA"]]}]))
    with pytest.raises(TaskError, match="record 2, song 1: expected"):
        pl.read_playlists(str(bad))


@pytest.mark.parametrize("line3, message", [
    ('{"mix_id": 7, "playlist": ["TRA", ', r"playlists.jsonl line 3: not a JSON object"),
    ('{"mix_id": 7, "songs": []}', r"playlists.jsonl line 3: expected an object with mix_id"),
    ('{"mix_id": 7, "playlist": ["TRA", 5]}', r"playlists.jsonl line 3, song 2: expected"),
    ('{"mix_id": 1, "playlist": ["TRA"]}', r"line 3: mix_id 1 was already given at line 1"),
    ('{"mix_id": true, "playlist": ["TRA"]}', r"line 3: mix_id must be"),
])
def test_malformed_lines_name_the_file_and_line(aotm, line3, message):
    lines = aotm["path"].read_text().splitlines()
    lines[2] = line3  # line 3 is blank in the fixture
    aotm["path"].write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskError, match=message):
        pl.read_playlists(str(aotm["path"]))


def test_write_then_read_round_trip(tmp_path):
    ps = [pl.Playlist("p000", ["b", "a", "c", "d"], "x/major/solo", {"b": ("x", "w1"), "a": ("x", "w2")}),
          pl.Playlist("p001", ["e", "f", "g", "h", "i"], "y/minor/solo")]
    pl.write_playlists(ps, str(tmp_path / "playlists.jsonl"))
    back = pl.read_playlists(str(tmp_path)).playlists
    assert [(p.id, p.tracks, p.category) for p in back] == [(p.id, p.tracks, p.category) for p in ps]
    assert back[0].titles == {"b": ("x", "w1"), "a": ("x", "w2")}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    with pytest.raises(TaskError, match="neither a playlist file nor a folder"):
        pl.read_playlists(str(tmp_path / "nothing"))


# -- the benchmark's generated playlists ------------------------------------------------------------------
def test_key_mode_and_ensemble_by_hand():
    c_major = [(0, float(i), 1.0, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])]
    a_minor = [(0, float(i), 1.0, p) for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57])]
    assert build.key_mode(c_major) == "major" and build.key_mode(a_minor) == "minor"
    assert build.key_mode([(0, 0.0, 1.0, p + 3) for *_, p in c_major]) == "major"  # transposed: the same mode
    assert build.ensemble(c_major) == "solo"
    assert build.ensemble([(p, 0.0, 1.0, 60) for p in (0, 2)]) == "2-3 parts"
    assert build.ensemble([(p, 0.0, 1.0, 60) for p in range(5)]) == "4+ parts"


def _meta(n_per_group=(12, 7, 3)):
    tracks, keys = {}, [("bach", "major", "4+ parts"), ("folk", "minor", "solo"), ("bach", "minor", "4+ parts")]
    for (corpus, mode, ens), n in zip(keys, n_per_group):
        for i in range(n):
            tracks[f"{corpus}.{mode}{i}_0"] = {"corpus": corpus, "work": f"{corpus}/{mode}{i}", "mode": mode,
                                               "ensemble": ens}
    return tracks


def test_generated_playlists_share_the_grouping_keys():
    tracks = _meta()
    ps = build.draw_playlists(tracks, 40, (6, 10), seed=0)
    assert len(ps) == 40 and len({p.id for p in ps}) == 40
    for p in ps:
        keys = {tuple(tracks[t][k] for k in build.PLAYLIST_KEYS) for t in p.tracks}
        assert len(keys) == 1 and "/".join(keys.pop()) == p.category
        assert len(set(p.tracks)) == len(p.tracks) and 6 <= len(p.tracks) <= min(10, 12)
        assert p.titles[p.tracks[0]] == (tracks[p.tracks[0]]["corpus"], tracks[p.tracks[0]]["work"])
    cats = [p.category for p in ps]
    assert set(cats) == {"bach/major/4+ parts", "folk/minor/solo"}  # the group of 3 is too small
    assert all(len(p.tracks) <= 7 for p in ps if p.category == "folk/minor/solo")
    again = build.draw_playlists(tracks, 40, (6, 10), seed=0)
    assert [p.tracks for p in again] == [p.tracks for p in ps]
    assert [p.tracks for p in build.draw_playlists(tracks, 40, (6, 10), seed=1)] != [p.tracks for p in ps]
    assert build.draw_playlists(_meta((5, 5, 5)), 40, (6, 10), seed=0) == []
    with pytest.raises(Exception, match="at least 4"):
        build.draw_playlists(tracks, 4, (3, 5), seed=0)


def test_build_playlists_writes_the_layout_and_none_when_too_small(tmp_path):
    cfg = build.DataConfig()
    info = build.build_playlists(str(tmp_path), cfg, 0, _meta())
    assert info["file"] == "playlists.jsonl" and info["playlists"] == 40 and info["groups"] == 2
    back = pl.read_playlists(str(tmp_path / "playlists.jsonl")).playlists
    assert [p.tracks for p in back] == [p.tracks for p in build.draw_playlists(_meta(), 40, (6, 10), 0)]
    empty = tmp_path / "empty"
    empty.mkdir()
    info = build.build_playlists(str(empty), cfg, 0, _meta((5, 5, 5)))
    assert info["file"] is None and info["playlists"] == 0 and os.listdir(empty) == []


@pytest.mark.slow
def test_mart_bench_data_writes_playlists_of_like_works(tmp_path):
    """A small rendered set (about a minute on 2 cores): the playlists hold style clips of works that
    share corpus, key mode and ensemble, and their ids are the style task's clip names."""
    out = tmp_path / "data"
    cmd = [os.path.join(os.path.dirname(sys.executable), "mart-bench"), "data", "--out", str(out), "--profile",
           "small", "--clips-per-class", "8", "--clips-per-work", "1", "--cover-works", "2", "--pretrain-clips",
           "1", "--clip-seconds", "2", "--workers", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    info, tracks = m["playlists"], m["playlists"]["tracks"]
    assert info["file"] == "playlists.jsonl" and info["playlists"] == 12 and "tracks" not in m["style"]
    task = out / m["style"]["task"]
    clips = {n[:-4] for s in ("train", "valid", "test") for n in json.loads((task / f"{s}.json").read_text())}
    assert set(tracks) == clips
    ps = pl.read_playlists(str(out)).playlists
    assert len(ps) == 12
    for p in ps:
        assert 4 <= len(p.tracks) <= 6 and set(p.tracks) <= clips
        assert len({tuple(tracks[t][k] for k in build.PLAYLIST_KEYS) for t in p.tracks}) == 1
        assert all(t.split(".")[0] == tracks[t]["corpus"] for t in p.tracks)


# -- the offline benchmark's columns -----------------------------------------------------------------------
def _heareval_embeddings(folder, task, X, names):
    """Scene embeddings in heareval's layout: <folder>/embeddings/<module>/<task>/<split>/<name>.wav.embedding.npy."""
    d = folder / "embeddings" / "mod" / task / "test"
    d.mkdir(parents=True)
    for x, name in zip(X, names):
        np.save(d / f"{name}.wav.embedding.npy", x)
        (d / f"{name}.wav.target-labels.json").write_text(json.dumps([name.split(".")[0]]))


def test_offline_playlists_reuse_the_style_embeddings_and_pair_with_references(tmp_path):
    tracks = _meta((12, 12, 6))
    names = sorted(tracks)
    drawn = build.draw_playlists(tracks, 10, (6, 8), 0)
    pl.write_playlists(drawn, str(tmp_path / "playlists.jsonl"))
    groups = sorted({(t["corpus"], t["mode"]) for t in tracks.values()})
    rng = np.random.default_rng(0)
    good = np.eye(3)[[groups.index((tracks[n]["corpus"], tracks[n]["mode"])) for n in names]] * 3
    good += rng.normal(scale=0.3, size=good.shape)  # an encoder that hears the grouping keys
    noise = rng.normal(size=(len(names), 3))
    entries = []
    task = tmp_path / "tasks" / "music_style-1.0.0-full"
    for key, row, X in (("m-seed0", "mart", good), ("m-random", "mart (random init)", noise)):
        folder = tmp_path / "eval" / key
        _heareval_embeddings(folder, task.name, X, names)
        e = evaluation.Entry(row, key, "mod")
        res = evaluation.playlists(e, str(task), str(tmp_path / "playlists.jsonl"), str(folder))
        assert res["n_playlists"] == 10
        assert len(res["item_hit"]) == res["n_items"] == sum(len(p.tracks) - 3 for p in drawn)
        assert res["negatives"] == 30 - max(len(p.tracks) for p in drawn)  # every list as long as the shortest pool
        assert (folder / "playlists.json").is_file()
        entries.append({"row": row, "key": key, "seed": 0 if row == "mart" else None,
                        "style": {"top1_acc": 0.5, "mAP": 0.5}, "covers": {"map": 0.1, "p_at_10": 0.1, "mr1": 3.0},
                        "playlists": res})
    assert entries[0]["playlists"]["hr_at_10"] > entries[1]["playlists"]["hr_at_10"]
    assert entries[0]["playlists"]["mpr"] < entries[1]["playlists"]["mpr"]
    assert entries[0]["playlists"]["item_track"] == entries[1]["playlists"]["item_track"]
    # kept while the playlist file is unchanged (even with the embeddings gone), redone when it changes
    import shutil

    shutil.rmtree(tmp_path / "eval" / "m-seed0" / "embeddings")
    e0 = evaluation.Entry("mart", "m-seed0", "mod")
    assert evaluation.playlists(e0, str(task), str(tmp_path / "playlists.jsonl"),
                                str(tmp_path / "eval" / "m-seed0"))["mpr"] == entries[0]["playlists"]["mpr"]
    # a result kept under another query protocol is not reused (here it would need the embeddings again)
    kept_path = tmp_path / "eval" / "m-seed0" / "playlists.json"
    kept = json.loads(kept_path.read_text())
    kept_path.write_text(json.dumps(dict(kept, queries="first")))
    with pytest.raises(TaskError, match="remove .*style.json to embed again"):
        evaluation.playlists(e0, str(task), str(tmp_path / "playlists.jsonl"), str(tmp_path / "eval" / "m-seed0"))
    kept_path.write_text(json.dumps(kept))
    with open(tmp_path / "playlists.jsonl", "a") as f:
        f.write(json.dumps({"mix_id": "extra", "playlist": names[:5]}) + "\n")
    with pytest.raises(TaskError, match="remove .*style.json to embed again"):
        evaluation.playlists(e0, str(task), str(tmp_path / "playlists.jsonl"), str(tmp_path / "eval" / "m-seed0"))
    # the table gets the two columns, and the paired differences against the random init
    rows = report.table_rows(entries)
    assert rows[0]["playlists_hr_at_10"]["mean"] == entries[0]["playlists"]["hr_at_10"]
    paired = {c["metric"]: c for c in report.paired_comparisons(entries)}
    d = paired["playlist MPR (lower better)"]
    assert d["diff"] == pytest.approx(entries[0]["playlists"]["mpr"] - entries[1]["playlists"]["mpr"])
    assert d["ci_high"] < 0 and d["groups"] == 10 and d["separated"]
    assert paired["playlist HR@10"]["diff"] > 0
    comps = {(c["metric"], c["reference"]): c["better"] for c in report.comparisons(rows)}
    assert comps[("playlist MPR (lower better)", "mart (random init)")] is True  # lower is better
    result = {"table": rows, "comparisons": report.comparisons(rows), "paired": report.paired_comparisons(entries),
              "runs": [], "entries": entries,
              "meta": {"data": "d", "budget": "b", "seeds": [0], "grid": "faster", "grid_points": 1, "cover_tracks": 8,
                       "cover_works": 2, "total_minutes": 1.0, "playlists": "10 playlists"}}
    text = report.markdown(result)
    assert "| playlist HR@10 | playlist MPR (lower better) |" in text and "Playlists: 10 playlists." in text
    assert "| mart | mart (random init) | playlist MPR (lower better) |" in text
    no_playlists = [{k: v for k, v in e.items() if k != "playlists"} for e in entries]
    assert "playlist" not in report.markdown(dict(result, entries=no_playlists, table=report.table_rows(no_playlists),
                                                  paired=[],
                                                  comparisons=[], meta=dict(result["meta"], playlists="")))
