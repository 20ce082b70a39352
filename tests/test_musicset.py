"""mart-bench data: rendered real-music sets from the music21 corpus through fluidsynth."""
import csv
import hashlib
import json
import os
import subprocess
import sys

import soundfile as sf

BENCH = os.path.join(os.path.dirname(sys.executable), "mart-bench")
TINY = ["--profile", "small", "--clips-per-class", "3", "--cover-works", "3", "--pretrain-clips", "2",
        "--clip-seconds", "4", "--workers", "2"]


def _build(out, *extra):
    return subprocess.run([BENCH, "data", *TINY, "--out", str(out), *extra], capture_output=True, text=True,
                          timeout=600)


def _hashes(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def test_build_layout_splits_and_determinism(tmp_path):
    r = _build(tmp_path / "a")
    assert r.returncode == 0, r.stderr
    root = tmp_path / "a"
    m = json.loads((root / "manifest.json").read_text())
    task = root / m["style"]["task"]
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["split_mode"] == "trainvaltest" and meta["evaluation"][0] == "top1_acc"
    classes = m["style"]["classes"]
    assert len(classes) >= 8 and all(c["clips"] == 3 for c in classes.values())
    for label, c in classes.items():  # no work in two splits
        w = c["works"]
        assert not (set(w["train"]) & set(w["valid"]) | set(w["train"]) & set(w["test"]) | set(w["valid"]) & set(w["test"]))
    labels = {lab for split in ("train", "valid", "test")
              for labs in json.loads((task / f"{split}.json").read_text()).values() for lab in labs}
    assert labels == set(classes)
    style_works = {w for c in classes.values() for ws in c["works"].values() for w in ws}
    cover_works, pre_works = set(m["covers"]["work_ids"]), set(m["pretrain"]["work_ids"])
    assert not (style_works & cover_works or style_works & pre_works or cover_works & pre_works)
    with open(root / "covers" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4
    audio = {}
    for row in rows:
        x, sr = sf.read(root / "covers" / row["path"])
        assert sr == 16000 and x.ndim == 1 and len(x) == 4 * 16000 and abs(x).max() > 0.1
        audio.setdefault(row["work_id"], []).append(x.tobytes())
    assert all(len(set(v)) == 4 for v in audio.values())  # versions differ
    assert len(list((root / "pretrain").rglob("*.wav"))) == 2
    assert "GPL-2" in (root / "LICENSES.md").read_text()
    r = _build(tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert _hashes(root) == _hashes(tmp_path / "b")


def test_missing_soundfont_is_named_and_nothing_is_left(tmp_path):
    r = _build(tmp_path / "out", "--soundfont-dir", str(tmp_path / "nosf"))
    assert r.returncode == 2
    assert "FluidR3_GM.sf2 is missing" in r.stderr and "apt-get install fluidsynth" in r.stderr
    assert not (tmp_path / "out").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
