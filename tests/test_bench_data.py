"""mart-bench data: rendered real-music sets from the music21 corpus through fluidsynth (no mocks)."""
import csv
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

from kit import ROOT, tree_hashes

BENCH = os.path.join(os.path.dirname(sys.executable), "mart-bench")
SECONDS = 4
CLIPS = 6  # per class: 3 works (one per split) x 2 excerpts
TINY = ["--profile", "small", "--clips-per-class", str(CLIPS), "--clips-per-work", "2", "--cover-works", "3",
        "--pretrain-clips", "2", "--clip-seconds", str(SECONDS), "--workers", "2"]


def _build(out, *extra):
    return subprocess.run([BENCH, "data", *TINY, "--out", str(out), *extra], capture_output=True, text=True,
                          timeout=600)


def _audio(path):
    x, sr = sf.read(path, dtype="int16")
    assert sr == 16000 and x.ndim == 1 and len(x) == SECONDS * 16000, path
    return x


def _groups(pool):
    with open(pool / "groups.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "group"]
        return list(reader)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "data"
    r = _build(root)
    assert r.returncode == 0, r.stderr
    return root


@pytest.mark.slow
def test_style_task_layout_counts_and_splits(built):
    m = json.loads((built / "manifest.json").read_text())
    task = built / m["style"]["task"]
    assert task.name == "music_style-1.0.0-full"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["split_mode"] == "trainvaltest" and meta["prediction_type"] == "multiclass"
    assert meta["evaluation"][0] == "top1_acc" and meta["sample_duration"] == SECONDS
    classes = m["style"]["classes"]
    assert len(classes) >= 8
    corpora = [c for info in classes.values() for c in info["corpora"]]
    assert len(corpora) == len(set(corpora))  # every class from its own corpora
    with open(task / "labelvocabulary.csv") as f:
        assert sorted(row["label"] for row in csv.DictReader(f)) == sorted(classes)
    per_label, work_split = {}, {}
    for split in ("train", "valid", "test"):
        entries = json.loads((task / f"{split}.json").read_text())
        assert entries, split
        assert sorted(os.listdir(task / "16000" / split)) == sorted(entries)
        for name, labels in entries.items():
            _audio(task / "16000" / split / name)
            per_label[labels[0]] = per_label.get(labels[0], 0) + 1
            work = name.rsplit("_", 1)[0]  # <label>.<work>_<clip>.wav
            assert work_split.setdefault(work, split) == split, f"{work} is in two splits"
    assert per_label == {label: CLIPS for label in classes}
    assert len(work_split) == 3 * len(classes)  # two excerpts of each work, in the work's split
    for label, info in classes.items():
        assert info["clips"] == CLIPS and len(list((built / "raw" / "style" / label).glob("*.wav"))) == CLIPS
        splits = [set(info["works"][s]) for s in ("train", "valid", "test")]
        assert all(splits) and not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert sum(m["style"]["split_sizes"].values()) == CLIPS * len(classes)


def test_covers_pretrain_and_manifest(built):
    m = json.loads((built / "manifest.json").read_text())
    with open(built / "covers" / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["work_id", "version_id", "path"]
        rows = list(reader)
    assert len(rows) == 3 * 4 and len({r["work_id"] for r in rows}) == 3
    audio = {}
    for row in rows:
        x = _audio(built / "covers" / row["path"])
        assert abs(x.astype(float)).max() > 0.1 * 32767
        audio.setdefault(row["work_id"], []).append(x.tobytes())
    assert all(len(v) == 4 and len(set(v)) == 4 for v in audio.values())  # the versions differ
    style = {w for c in m["style"]["classes"].values() for ws in c["works"].values() for w in ws}
    covers, pretrain = set(m["covers"]["work_ids"]), set(m["pretrain"]["work_ids"])
    assert len(covers) == 3 and len(pretrain) == 2
    assert not (style & covers or style & pretrain or covers & pretrain)
    wavs = list((built / "pretrain").rglob("*.wav"))
    assert len(wavs) == 2 and all(len(sf.read(p)[0]) == 10 * 16000 for p in wavs)
    groups = _groups(built / "pretrain")  # each clip its own group, named by its work
    assert [r["path"] for r in groups] == sorted(p.relative_to(built / "pretrain").as_posix() for p in wavs)
    assert all(r["path"] == f"rendered/{r['group']}.wav" for r in groups)
    assert m["pretrain"]["renderings"] == 1 and m["pretrain"]["rendered_clips"] == m["pretrain"]["rendered_works"] == 2
    assert m["pretrain"]["groups"] == "pretrain/groups.csv" and m["config"]["pretrain_renderings"] == 1
    assert set(m["versions"]) >= {"music21", "pyfluidsynth", "libfluidsynth"}
    assert {v["licence"] for v in m["soundfonts"].values()} == {"MIT", "GPL-2"}
    assert all(len(v["sha256"]) == 64 for v in m["soundfonts"].values())
    licences = (built / "LICENSES.md").read_text()
    assert "commercial" in licences and "MIT" in licences and "GPL-2" in licences and "wesnoth" in licences.lower()


@pytest.mark.slow
def test_same_seed_same_bytes_and_overwrite(built, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    (again / "stale.txt").write_text("old")
    r = _build(again)
    assert r.returncode == 2 and "--overwrite" in r.stderr and (again / "stale.txt").exists()
    r = _build(again, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert tree_hashes(built) == tree_hashes(again)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_missing_soundfont_is_named_and_nothing_is_left(tmp_path):
    r = _build(tmp_path / "out", "--soundfont-dir", str(tmp_path / "nosf"))
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("mart-bench data: error:") and "FluidR3_GM.sf2 is missing" in line
    assert "apt-get install fluidsynth" in line and "pip install pyfluidsynth" in line
    assert os.listdir(tmp_path) == []


def test_work_selection_skips_used_works_in_order():
    from mart_upstream.benchmarks.data import build

    cands = list(build._works("ryans_mammoth", 0))[:8]
    used = {cands[0].id, cands[2].id}
    chosen = build._take(cands, 3, used, build.DataConfig(), build._Pool(1), "test", {})
    ids = [c.work.id for c in chosen]
    assert len(ids) == 3 and not {cands[0].id, cands[2].id} & set(ids)
    assert ids == sorted(ids, key=[w.id for w in cands].index) and set(ids) <= used
    assert build._works("ryans_mammoth", 0) == tuple(build.list_works("ryans_mammoth", 0))  # stable listing


def test_pretrain_renderings_cross_soundfont_programs_tempo_and_key():
    from mart_upstream.benchmarks.data import build

    notes = [(p, float(b), 1.0, 60 + 2 * p + b % 5) for p in range(3) for b in range(64)]
    cfg = build.DataConfig(pretrain_renderings=4)
    perfs = build._renderings(notes, cfg, 0, 5, 20.0)
    assert len(perfs) == 4 and len({p.start_beat for p in perfs}) == 1  # one excerpt
    assert all(a.soundfont != b.soundfont for a, b in zip(perfs, perfs[1:]))  # alternating soundfonts
    for part in range(3):  # every part changes instrument in every rendering
        assert len({p.programs[part] for p in perfs}) == 4
    assert len({p.bpm for p in perfs}) == 4 and all(abs(p.transpose) <= cfg.max_transpose for p in perfs)
    assert all(min(cfg.bpm_range) * 0.8 <= p.bpm <= max(cfg.bpm_range) * 1.2 for p in perfs)
    again = build._renderings(notes, cfg, 0, 5, 20.0)  # the generators are (seed, work[, rendering])
    assert [(p.bpm, p.transpose, list(p.programs), p.soundfont) for p in perfs] == \
        [(p.bpm, p.transpose, list(p.programs), p.soundfont) for p in again]
    other = build._renderings(notes, cfg, 1, 5, 20.0)
    assert [p.bpm for p in other] != [p.bpm for p in perfs]
    two = build._renderings(notes, build.DataConfig(pretrain_renderings=2), 0, 5, 20.0)
    assert [(p.bpm, p.soundfont) for p in two] == [(p.bpm, p.soundfont) for p in perfs[:2]]  # K adds renderings


def test_pretrain_renderings_layout_groups_and_workers(built, tmp_path):
    import argparse
    import dataclasses

    from mart_upstream.benchmarks.data import build
    from mart_upstream.errors import UsageError

    p = argparse.ArgumentParser()
    build.add_arguments(p)
    args = p.parse_args(["--out", "x", "--profile", "small", "--pretrain-renderings", "2"])
    cfg = build._config(args)
    assert cfg.pretrain_renderings == 2 and build.PROFILES["multi"] == dataclasses.replace(
        build.PROFILES["full"], pretrain_renderings=3)
    assert build._config(p.parse_args(["--out", "x"])).pretrain_renderings == 1
    with pytest.raises(UsageError, match="--pretrain-renderings must be at least 1"):
        build._config(p.parse_args(["--out", "x", "--pretrain-renderings", "0"]))

    # the pretraining pool of the fixture's build (same works: style and covers ones are used) with 2 renderings
    m = json.loads((built / "manifest.json").read_text())
    used = {w for c in m["style"]["classes"].values() for ws in c["works"].values() for w in ws}
    used |= set(m["covers"]["work_ids"])
    cfg = dataclasses.replace(cfg, pretrain_clips=2, pretrain_seconds=SECONDS)
    # In a fresh process: forking a process whose torch or fluidsynth threads are running can hang.
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"cfg": dataclasses.asdict(cfg), "used": sorted(used), "skipped": m["skipped_works"],
                               "out": str(tmp_path)}))
    script = """
import dataclasses, json, sys
from mart_upstream.benchmarks.data import build
job = json.load(open(sys.argv[1]))
cfg = build.DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["cfg"].items()})
for workers in (2, 1):  # the fork pool first: a process that has rendered holds fluidsynth's state
    pool = build._Pool(workers)
    try:
        info = build.build_pretrain(job["out"] + f"/w{workers}", cfg, 0, set(job["used"]), pool,
                                    build.SOUNDFONT_DIR, dict(job["skipped"]))
    finally:
        pool.close()
json.dump(info, open(job["out"] + "/info.json", "w"))
"""
    r = subprocess.run([sys.executable, "-c", script, str(job)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((tmp_path / "info.json").read_text())
    (tmp_path / "info.json").unlink()
    job.unlink()
    pools = {w: tmp_path / f"w{w}" / "pretrain" for w in (2, 1)}
    assert info["work_ids"] == m["pretrain"]["work_ids"]
    assert info["renderings"] == 2 and info["rendered_works"] == 2 and info["rendered_clips"] == 4
    assert info["groups"] == "pretrain/groups.csv"
    pool = pools[2]
    slugs = sorted(os.listdir(pool / "rendered"))
    assert len(slugs) == 2 and sorted(os.listdir(pool)) == ["groups.csv", "rendered"]
    assert slugs == sorted(r["path"][len("rendered/"):-4] for r in _groups(built / "pretrain"))
    for slug in slugs:
        assert sorted(os.listdir(pool / "rendered" / slug)) == ["r0.wav", "r1.wav"]
        r0, r1 = (_audio(pool / "rendered" / slug / f"r{k}.wav") for k in (0, 1))
        assert abs(r0.astype(float)).max() > 0.1 * 32767 and abs(r1.astype(float)).max() > 0.1 * 32767
        assert r0.tobytes() != r1.tobytes()
    assert [(r["path"], r["group"]) for r in _groups(pool)] == [
        (f"rendered/{s}/r{k}.wav", s) for s in slugs for k in (0, 1)]
    assert tree_hashes(pools[1]) == tree_hashes(pools[2])  # --workers does not change the bytes
    assert not [f for d, _, fs in os.walk(tmp_path) for f in fs if f.startswith(".")]
