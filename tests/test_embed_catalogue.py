"""``mart-embed``: a catalogue embedded through the one embedding path, in shards that resume."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from kit import ROOT, TINY

from mart_upstream.embed import load_model, main
from mart_upstream.checkpoint import load_pretrained, packaged_checkpoint, save_checkpoint
from mart_upstream.audio import load_audio
from mart_upstream.embedding import clip_embeddings, frame_features
from mart_upstream.models import build_model

READABLE = ["a.wav", "b.flac", "sub/c.wav", "sub/deeper/d.wav"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny checkpoints, four short tracks (one 22.05 kHz stereo) and one text file named ``.wav``."""
    root = tmp_path_factory.mktemp("catalogue")
    audio = root / "audio"
    (audio / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, seconds in zip(READABLE, (1.0, 2.0, 3.0, 1.3)):
        sr, channels = (22050, 2) if name == "sub/c.wav" else (16000, 1)
        sf.write(str(audio / name), 0.1 * rng.standard_normal((int(seconds * sr), channels)), sr)
    (audio / "broken.wav").write_text("not audio at all")
    (audio / "notes.txt").write_text("not an audio extension: never listed")
    ckpts = {}
    for name in ("simclr", "mart"):
        torch.manual_seed(0)
        ckpts[name] = str(root / f"{name}.ckpt")
        save_checkpoint(ckpts[name], build_model(name, TINY[name]), name, step=0)
    return {"audio": str(audio), "ckpt": ckpts, "root": root}


def _rows(out, name="index.csv"):
    with open(os.path.join(out, name), newline="") as f:
        return list(csv.DictReader(f))


def _embed(assets, out, *extra, model="simclr"):
    return main(["--model", f"{model}={assets['ckpt'][model]}", "--input", assets["audio"], "--out", str(out),
                 "--device", "cpu", *extra])


def _files(folder):
    """Every file under ``folder`` -> (inode, mtime): an atomic rewrite changes both."""
    out = {}
    for d, _, names in os.walk(folder):
        for n in names:
            st = os.stat(os.path.join(d, n))
            out[os.path.relpath(os.path.join(d, n), folder)] = (st.st_ino, st.st_mtime_ns)
    return out


def test_scene_embeddings_are_clip_embeddings(assets, tmp_path, capsys):
    out = tmp_path / "out"
    assert _embed(assets, out) == 0
    index = _rows(out)
    assert [r["path"] for r in index] == sorted(READABLE)
    emb = np.load(out / "embeddings.npy")
    model, _ = load_pretrained(assets["ckpt"]["simclr"])
    for i, row in enumerate(index):
        assert (int(row["row_offset"]), int(row["n_rows"])) == (i, 1)
        wav = load_audio(os.path.join(assets["audio"], row["path"]), 16000)
        assert float(row["duration_s"]) == pytest.approx(wav.numel() / 16000, abs=1e-5)
        np.testing.assert_allclose(emb[i], clip_embeddings(model, wav[None])[0].numpy(), rtol=1e-5, atol=1e-6)
    errors = _rows(out, "errors.csv")
    assert [e["path"] for e in errors] == ["broken.wav"] and errors[0]["error"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"] == "simclr" and meta["level"] == "scene" and meta["dim"] == emb.shape[1]
    assert (meta["files"], meta["embedded"], meta["errors"], meta["rows"]) == (5, 4, 1, 4)
    assert meta["checkpoint_sha256"] and meta["sample_rate"] == 16000
    assert "1 unreadable" in capsys.readouterr().out

    # a list file: relative to its folder, comments and blank lines skipped, its order kept
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two tracks\n\n{os.path.join(assets['audio'], 'sub/c.wav')}\n"
                       f"{os.path.relpath(os.path.join(assets['audio'], 'a.wav'), tmp_path)}\n")
    assert main(["--model", f"simclr={assets['ckpt']['simclr']}", "--input", str(listing),
                 "--out", str(tmp_path / "listed"), "--device", "cpu"]) == 0
    listed = np.load(tmp_path / "listed" / "embeddings.npy")
    np.testing.assert_allclose(listed, emb[[2, 0]], rtol=1e-5, atol=1e-6)
    assert _rows(tmp_path / "listed", "errors.csv") == []


def test_frames_of_one_layer(assets, tmp_path):
    out = tmp_path / "out"
    assert _embed(assets, out, "--level", "frames", "--layer", "1", "--max-seconds", "2.5", model="mart") == 0
    model, _ = load_pretrained(assets["ckpt"]["mart"])
    emb, index = np.load(out / "embeddings.npy"), _rows(out)
    assert [r["path"] for r in index] == sorted(READABLE)
    offset = 0
    for row in index:
        wav = load_audio(os.path.join(assets["audio"], row["path"]), 16000)[:40000]  # --max-seconds 2.5
        n = -(-wav.numel() // model.frame_hop)
        assert (int(row["row_offset"]), int(row["n_rows"])) == (offset, n)
        np.testing.assert_allclose(emb[offset:offset + n], frame_features(model, wav[None])[1][0].numpy(),
                                   rtol=1e-5, atol=1e-5)
        offset += n
    assert emb.shape[0] == offset
    meta = json.loads((out / "meta.json").read_text())
    assert meta["layer"] == 1 and meta["frame_hop_s"] == model.frame_hop / 16000 and meta["max_seconds"] == 2.5


def test_an_interrupted_run_resumes_and_a_finished_one_is_left_alone(assets, tmp_path, capsys):
    out = tmp_path / "out"
    shards = out / "shards"
    assert _embed(assets, out, "--shard-size", "2") == 0
    reference, index = np.load(out / "embeddings.npy"), _rows(out)
    assert sorted(n for n in os.listdir(shards) if n.startswith("shard-")) == [
        "shard-00000.csv", "shard-00000.npy", "shard-00001.csv", "shard-00001.npy"]
    # killed while writing shard 1: its array is there but not its csv, and a temp file is left over
    (shards / "shard-00001.csv").unlink()
    (shards / ".tmp-abc123.npy").write_bytes(b"partial")
    before = _files(shards)
    capsys.readouterr()
    assert _embed(assets, out, "--shard-size", "2") == 0
    after = _files(shards)
    assert ".tmp-abc123.npy" not in after
    for name in ("shard-00000.npy", "shard-00000.csv"):
        assert after[name] == before[name], f"{name} was rewritten"
    assert after["shard-00001.npy"] != before["shard-00001.npy"]
    assert "2 files embedded" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"), reference)
    assert _rows(out) == index

    finished = _files(out)
    assert _embed(assets, out, "--shard-size", "2") == 0
    assert _files(out) == finished
    assert "already embedded" in capsys.readouterr().out


def test_other_settings_are_refused_in_the_same_folder(assets, tmp_path, capsys):
    out = tmp_path / "out"
    assert _embed(assets, out, "--max-seconds", "1") == 0
    assert _embed(assets, out) == 2
    err = capsys.readouterr().err
    assert "mart-embed: error:" in err and "max_seconds" in err and "another --out" in err


@pytest.mark.parametrize("args, message", [
    (["--input", "MISSING"], "input not found"),
    (["--model", "wavlm"], "unknown model 'wavlm'"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-seconds", "-1"], "--max-seconds"),
    (["--max-seconds", "nan"], "--max-seconds"),
    (["--shard-size", "x"], "--shard-size"),
    (["--layer", "0"], "--layer needs --level frames"),
    (["--level", "frames", "--layer", "99"], "--layer 99 is out of range"),
    (["--model", "mart=CKPT"], "holds a simclr model, not mart"),
    (["--model", "simclr=nowhere.ckpt"], "checkpoint not found"),
    (["--device", "tpu"], "--device"),
])
def test_bad_arguments_exit_2_and_write_nothing(assets, tmp_path, capsys, args, message):
    opts = {"--model": f"simclr={assets['ckpt']['simclr']}", "--input": assets["audio"], "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        opts[flag] = value.replace("CKPT", assets["ckpt"]["simclr"]).replace("MISSING", str(tmp_path / "missing"))
    assert main([x for kv in opts.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert "mart-embed: error:" in err and message in err
    assert not (tmp_path / "o").exists()


def test_a_model_name_alone_loads_the_packaged_checkpoint():
    if not os.path.isfile(packaged_checkpoint("simclr")):
        pytest.skip("built without the packaged checkpoints")
    model, config, path = load_model(("simclr", None), "cpu")
    assert path == packaged_checkpoint("simclr") and model.model_name == "simclr"
    assert config.frontend.sample_rate == 16000 and not model.training


@pytest.mark.slow
def test_two_processes_give_what_one_gives(assets, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--model", f"simclr={assets['ckpt']['simclr']}", "--input", assets["audio"], "--device", "cpu",
            "--shard-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node=2"]
    for launch, out in (([sys.executable], one), (torchrun, two)):
        cmd = [*launch, "-m", "mart_upstream.embed", *args, "--out", str(out)]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
    shards = sorted(n for n in os.listdir(two / "shards") if n.endswith(".csv"))
    assert {n.split("-")[1] for n in shards} == {"r0", "r1"} and len(shards) == len(READABLE)
    np.testing.assert_array_equal(np.load(two / "embeddings.npy"), np.load(one / "embeddings.npy"))
    strip = [{k: v for k, v in r.items() if k != "shard"} for r in _rows(one)]
    assert [{k: v for k, v in r.items() if k != "shard"} for r in _rows(two)] == strip
    assert (two / "errors.csv").read_text() == (one / "errors.csv").read_text()
    assert "broken.wav" in (two / "errors.csv").read_text()
