"""Cover-song benchmark: generated cover set, the mart-cover-song command, datasets, search, training."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kit import TINY, write_audio
from mart_upstream.benchmarks.cover_song import search
from mart_upstream.tasks import covers as datasets
from mart_upstream.tasks.metrics import metrics_from_relevance, retrieval_metrics
from mart_upstream.benchmarks.cover_song.scale import run_scale
from mart_upstream.benchmarks.cover_song.synthetic import CoverSetConfig, make_cover_set, render_version
from mart_upstream.config import cpu_config_path, load_file as load_config_file

BIN = os.path.dirname(sys.executable)
CLI = os.path.join(BIN, "mart-cover-song")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd, ok=True):
    r = subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def coverset(tmp_path_factory):
    return make_cover_set(str(tmp_path_factory.mktemp("covers")), CoverSetConfig(works=8, versions=3, seconds=6.0))


@pytest.fixture(scope="module")
def ckpts(untrained_checkpoint):
    """Untrained checkpoints of the CPU-config architectures (FCN-4 with its paper width) and a tiny MART."""
    return {"pemr": untrained_checkpoint("pemr", load_config_file(cpu_config_path("pemr"))["model"]),
            "mart": untrained_checkpoint("mart", dict(TINY["mart"], finest_hop=125))}


def _works(manifest):
    with open(manifest) as f:
        return [r["work_id"] for r in csv.DictReader(f)]


def _chance_map(works, n=200, seed=0):
    """95th percentile of MAP over random rankings of the same collection."""
    rng = np.random.default_rng(seed)
    return float(np.percentile([retrieval_metrics(rng.random((len(works),) * 2), works)["map"] for _ in range(n)], 95))


def test_versions_differ_but_share_the_work():
    cfg = CoverSetConfig(seconds=3.0)
    a, b, other = render_version(7, 0, cfg), render_version(7, 1, cfg), render_version(8, 0, cfg)
    assert a.shape == (48000,) and a.dtype == np.float32
    assert not np.allclose(a, b) and not np.allclose(a, other)
    assert np.array_equal(a, render_version(7, 0, cfg))  # deterministic


def test_oracle_embedding_scores_map_one(coverset):
    works = _works(coverset)
    names = sorted(set(works))
    oracle = np.eye(len(names))[[names.index(w) for w in works]]
    m = search.evaluate(oracle, works)
    assert m["map"] == 1.0 and m["top1"] == 1.0 and m["mr1"] == 1.0
    assert m["p_at_10"] == pytest.approx(2 / 10)  # 2 other versions per work
    assert m["n_queries"] == len(works) == 24


@pytest.mark.slow
def test_eval_ranks_covers_above_chance_side_by_side(coverset, ckpts, tmp_path):
    out = tmp_path / "res"
    r = _run(["eval", "--manifest", coverset, "--hear-module", f"hear_api.pemr={ckpts['pemr']}",
              "--hear-module", f"hear_api.mart={ckpts['mart']}", "--hear-module", "hearbaseline",
              "--out", str(out)], tmp_path)
    assert "| hear_api.pemr@pemr |" in r.stdout and "| hearbaseline |" in r.stdout
    chance = _chance_map(_works(coverset))
    for name in ["hear_api.pemr_pemr", "hear_api.mart_mart", "hearbaseline"]:
        res = json.loads((out / name / "results.json").read_text())
        assert {"map", "p_at_10", "mr1", "top1", "n_queries"} <= set(res) and res["n_queries"] == 24
        assert len(res["ranks_first"]) == 24 and res["search"] == "exact"
    pemr = json.loads((out / "hear_api.pemr_pemr" / "results.json").read_text())
    assert pemr["map"] > chance, (pemr["map"], chance)
    assert (out / "ranks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| hearbaseline |" in (out / "summary.md").read_text()
    cached = list((out / "cache").rglob("*.npy"))
    assert len(cached) == 3 * 24
    # a second run reads the cache: same numbers, no new files
    _run(["eval", "--manifest", coverset, "--hear-module", "hear_api.pemr", "--model", ckpts["pemr"],
          "--out", str(out)], tmp_path)
    again = json.loads((out / "hear_api.pemr_pemr" / "results.json").read_text())
    assert again["map"] == pemr["map"] and len(list((out / "cache").rglob("*.npy"))) == 3 * 24


@pytest.mark.slow
def test_eval_through_an_s3prl_upstream_with_timestamp_free_pooling(coverset, tmp_path):
    out = tmp_path / "res"
    _run(["eval", "--manifest", coverset, "--s3prl-upstream", "fbank", "--out", str(out)], tmp_path)
    res = json.loads((out / "fbank" / "results.json").read_text())
    assert res["n_queries"] == 24 and 0 < res["map"] <= 1


@pytest.mark.slow
def test_timestamp_pooling_differs_from_scene(coverset, ckpts, tmp_path):
    for pooling in ("scene", "timestamp"):
        _run(["eval", "--manifest", coverset, "--hear-module", "hear_api.pemr", "--model", ckpts["pemr"],
              "--pooling", pooling, "--max-seconds", "3", "--out", str(tmp_path / pooling)], tmp_path)
    a = json.loads((tmp_path / "scene" / "hear_api.pemr_pemr" / "results.json").read_text())
    b = json.loads((tmp_path / "timestamp" / "hear_api.pemr_pemr" / "results.json").read_text())
    assert a["pooling"] == "scene" and b["pooling"] == "timestamp" and a["ranks_first"] != b["ranks_first"]


def test_faiss_agrees_with_exact_search():
    rng = np.random.default_rng(0)
    works = np.repeat(np.arange(300), 4)
    emb = rng.standard_normal((300, 32))[works] + 0.8 * rng.standard_normal((1200, 32))
    exact = search.evaluate(emb, works, "exact")
    approx = search.evaluate(emb, works, "faiss", search.FaissConfig(top_k=1199, nlist=8, nprobe=8))
    assert approx["map"] == pytest.approx(exact["map"], abs=1e-3)
    assert approx["mr1"] == pytest.approx(exact["mr1"], abs=1e-2)
    res = run_scale(4000, 32, 200, 4, 0, search.FaissConfig(top_k=50, nprobe=32))
    assert res["recall_at_10"] > 0.8 and res["faiss_query_ms"] > 0 and res["map_exact"] > 0.05


def test_truncated_rankings_bound_the_metrics():
    rel = np.array([[False, True], [False, False]])
    m = metrics_from_relevance(rel, np.array([2, 1]))
    assert m["map"] == pytest.approx((0.5 / 2 + 0) / 2)
    assert m["mr1"] == pytest.approx((2 + 3) / 2)


def _wav(path, seconds=1.0, sr=16000, fmt=None):
    write_audio(path, 0.1 * np.sin(np.arange(int(seconds * sr)) / 7.0), sr, format=fmt)  # float64, 1/7 rad a sample


def test_covers80_layout_with_lists_and_a_missing_file(tmp_path):
    top = tmp_path / "covers80" / "covers32k"
    entries = {1: [], 2: []}
    for w in ["A_Whiter_Shade_Of_Pale", "Abracadabra", "Addicted_To_Love"]:
        for i, artist in [(1, "procol_harum+x+01"), (2, "annie_lennox+y+02")]:
            entries[i].append(f"{w}/{artist}-{w}")
            if not (w == "Abracadabra" and i == 2):
                _wav(str(top / w / f"{artist}-{w}.mp3"), fmt="MP3")
    for i in (1, 2):
        (top / f"list{i}.list").write_text("\n".join(entries[i]) + "\n")
    c = datasets.covers80(str(tmp_path / "covers80"))
    assert len(c.tracks) == 5 and len(c.missing) == 1 and "Abracadabra" in c.missing[0]
    assert {t.work for t in c.tracks} == {"A_Whiter_Shade_Of_Pale", "Abracadabra", "Addicted_To_Love"}
    r = _run(["prepare", "covers80", str(tmp_path / "covers80"), "--out", str(tmp_path / "m")], tmp_path)
    assert "5 tracks of 3 works (1 listed files missing)" in r.stdout
    assert len(datasets.read_manifest(str(tmp_path / "m" / "covers80.csv")).tracks) == 5


def test_shs100k_sub_protocol(tmp_path):
    lines, audio = [], tmp_path / "audio"
    for s in range(40):
        for v in range(4 + s % 5):  # 4..8 listed versions
            lines.append(f"{s}\t{v}\ttitle {s}\tperformer {v}\thttps://www.youtube.com/watch?v=yt{s}x{v}\tT")
            if v != 0 or s % 2:  # even works lose version 0
                if s % 3:
                    _wav(str(audio / f"{s}_{v}.wav"), 0.2)
                else:
                    _wav(str(audio / f"yt{s}x{v}.mp3"), 0.2, fmt="MP3")
    (tmp_path / "list").write_text("\n".join(lines) + "\n")
    out = tmp_path / "sub"
    splits = datasets.shs100k_sub(str(tmp_path / "list"), str(audio), str(out), seed=0)
    works = {k: {t.work for t in c.tracks} for k, c in splits.items()}
    assert not (works["train"] & works["val"]) and not (works["train"] & works["test"]) and not (works["val"] & works["test"])
    every = [t for c in splits.values() for t in c.tracks]
    per = {w: sum(t.work == w for t in every) for w in {t.work for t in every}}
    assert min(per.values()) >= 6  # more than 5 available versions
    assert len(splits["train"].missing) == 20  # the even works' version 0
    n = len(per)
    assert len(works["val"]) == len(works["test"]) == round(n / 10) and len(works["train"]) == n - 2 * round(n / 10)
    rows = (out / "SHS100K-SUB-TEST").read_text().split()
    assert len(rows) == 2 * len(splits["test"].tracks)
    again = datasets.shs100k_sub(str(tmp_path / "list"), str(audio), str(tmp_path / "sub2"), seed=0)
    assert {t.work for t in again["test"].tracks} == works["test"]


@pytest.mark.slow
def test_eval_searches_what_mart_embed_wrote_as_the_hear_path_would(coverset, ckpts, tmp_path):
    """A catalogue embedded once with mart-embed (the scale path: shards, resume, torchrun) is searched by
    reading its rows; the ranking equals embedding the tracks through the HEAR module."""
    from mart_upstream.embed import main as mart_embed

    listing = tmp_path / "tracks.txt"
    listing.write_text("\n".join(t.path for t in datasets.read_manifest(coverset).tracks[:-1]) + "\n")
    emb = tmp_path / "emb"
    assert mart_embed(["--model", f"pemr={ckpts['pemr']}", "--input", str(listing), "--out", str(emb),
                       "--device", "cpu"]) == 0
    r = _run(["eval", "--manifest", coverset, "--embeddings", str(emb), "--out", str(tmp_path / "o")], tmp_path,
             ok=False)  # the last track was left out of the list
    assert r.returncode == 2 and "1 of the 24 tracks are not in" in r.stderr and "Traceback" not in r.stderr
    listing.write_text("\n".join(t.path for t in datasets.read_manifest(coverset).tracks) + "\n")
    assert mart_embed(["--model", f"pemr={ckpts['pemr']}", "--input", str(listing), "--out", str(emb),
                       "--device", "cpu"]) == 0  # resumed: only the missing track is embedded
    out = tmp_path / "res"
    _run(["eval", "--manifest", coverset, "--embeddings", str(emb), "--hear-module", f"hear_api.pemr={ckpts['pemr']}",
          "--out", str(out)], tmp_path)
    read = json.loads((out / "pemr_emb" / "results.json").read_text())
    computed = json.loads((out / "hear_api.pemr_pemr" / "results.json").read_text())
    assert read["n_queries"] == computed["n_queries"] == 24 and read["pooling"] == "mart-embed --level scene"
    assert read["ranks_first"] == computed["ranks_first"] and read["map"] == pytest.approx(computed["map"], abs=1e-6)
    assert not (out / "cache" / "pemr").exists()


def test_bad_input_gives_one_clear_error(coverset, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("work,path\na,x.wav\n")
    r = _run(["eval", "--manifest", str(bad), "--hear-module", "hearbaseline", "--out", str(tmp_path / "o")],
             tmp_path, ok=False)
    assert r.returncode == 2 and "needs the columns work_id,version_id,path" in r.stderr
    r = _run(["eval", "--manifest", coverset, "--hear-module", "no_such_module", "--out", str(tmp_path / "o")],
             tmp_path, ok=False)
    assert r.returncode == 2 and "no_such_module" in r.stderr and "Traceback" not in r.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("work_id,version_id,path\na,1,missing.wav\n")
    r = _run(["eval", "--manifest", str(empty), "--hear-module", "hearbaseline", "--out", str(tmp_path / "o")],
             tmp_path, ok=False)
    assert r.returncode == 2 and "no audio files found (1 listed entries missing)" in r.stderr
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
def test_cqtnet_training_alone_and_with_a_pretrained_encoder(coverset, ckpts, tmp_path):
    tracks = datasets.read_manifest(coverset).tracks
    train = [t for t in tracks if t.work < "w005"]
    valid = [t for t in tracks if t.work >= "w005"]
    datasets.write_manifest(train, str(tmp_path / "train.csv"))
    datasets.write_manifest(valid, str(tmp_path / "valid.csv"))
    common = ["--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"), "--epochs", "2",
              "--batch-size", "8", "--crop-frames", "32", "--downsample", "4"]
    _run(["train", *common, "--out", str(tmp_path / "cqtnet")], tmp_path)
    log = (tmp_path / "cqtnet" / "train_log.csv").read_text().splitlines()
    assert log[0] == "epoch,loss,valid_map,valid_p_at_10,valid_mr1" and len(log) == 3
    _run(["train", *common, "--epochs", "1", "--encoder", ckpts["pemr"], "--out", str(tmp_path / "fused")], tmp_path)
    out = tmp_path / "res"
    _run(["eval", "--manifest", str(tmp_path / "valid.csv"), "--trained", str(tmp_path / "cqtnet" / "model.pt"),
          "--trained", str(tmp_path / "fused" / "model.pt"), "--out", str(out)], tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 2 and all(r["n_queries"] == 9 for r in summary.values())


def test_training_on_a_cuda_device_that_is_absent_is_one_clear_error(tmp_path, capsys):
    import torch

    from mart_upstream.benchmarks.cover_song import cli

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli.main(["train", "--train", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"),
                     "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err
    assert "CUDA was requested (--device cuda:0)" in err and "--device cpu" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
