"""Instrument classification from NSynth's json/wav layout: the reader, the HEAR task folder it builds,
and that folder read back the way the offline benchmark reads task folders."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mart_upstream.benchmarks.subprocesses import child_env
from mart_upstream.adapters.hear.tasks import main as hear_task_main
from mart_upstream.adapters.hear.tasks import sources
from mart_upstream.benchmarks.run import evaluation, paired
from mart_upstream.errors import TaskError
from mart_upstream.tasks import nsynth

SR = 16000
BIN = os.path.dirname(sys.executable)
# split folder -> (family, instrument, pitches); the training instruments are not in valid / test (as in NSynth)
NOTES = {
    "nsynth-train": [("guitar", "guitar_acoustic_001", (60, 62, 64, 65)), ("mallet", "mallet_electronic_002", (70, 72)),
                     ("string", "string_acoustic_003", (55,))],
    "nsynth-valid": [("guitar", "guitar_acoustic_010", (61,)), ("mallet", "mallet_acoustic_011", (71,)),
                     ("string", "string_acoustic_012", (56,))],
    "nsynth-test": [("guitar", "guitar_acoustic_010", (63,)), ("mallet", "mallet_acoustic_011", (73,)),
                    ("string", "string_acoustic_012", (58,))],
}
FAMILY_INDEX = {f: i for i, f in enumerate(nsynth.FAMILIES)}


def make_nsynth(root, missing=("guitar_acoustic_001-065-100",)):
    """NSynth's layout with 0.5 s tones: nsynth-<split>/examples.json + audio/<note_str>.wav."""
    for folder, groups in NOTES.items():
        os.makedirs(os.path.join(root, folder, "audio"), exist_ok=True)
        examples = {}
        for family, instrument, pitches in groups:
            for pitch in pitches:
                name = f"{instrument}-{pitch:03d}-100"
                examples[name] = {
                    "note": len(examples), "note_str": name, "instrument_str": instrument, "pitch": pitch,
                    "velocity": 100, "sample_rate": SR, "qualities": [0] * 10, "qualities_str": [],
                    "instrument_family": FAMILY_INDEX[family], "instrument_family_str": family,
                    "instrument_source": 0, "instrument_source_str": "acoustic"}
                if name in missing:
                    continue
                t = np.arange(SR // 2) / SR
                sf.write(os.path.join(root, folder, "audio", name + ".wav"),
                         (0.3 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)).astype(np.float32), SR,
                         subtype="PCM_16")
        with open(os.path.join(root, folder, "examples.json"), "w") as f:
            json.dump(examples, f, indent=2)
    return str(root)


@pytest.fixture
def nsynth_root(tmp_path):
    return make_nsynth(tmp_path / "nsynth")


def test_reader_labels_splits_and_missing_audio(nsynth_root):
    found = nsynth.nsynth(nsynth_root)
    by_split = {s: sorted(n.name for n in found.notes if n.split == s) for s in ("train", "dev", "test")}
    assert by_split["train"] == ["guitar_acoustic_001-060-100", "guitar_acoustic_001-062-100",
                                 "guitar_acoustic_001-064-100", "mallet_electronic_002-070-100",
                                 "mallet_electronic_002-072-100", "string_acoustic_003-055-100"]
    assert len(by_split["dev"]) == len(by_split["test"]) == 3
    assert found.missing == [os.path.join(nsynth_root, "nsynth-train", "audio", "guitar_acoustic_001-065-100.wav")]
    assert found.listed == {"train": 7, "dev": 3, "test": 3}
    n = next(n for n in found.notes if n.name == "mallet_acoustic_011-073-100")
    assert (n.family, n.instrument, n.split) == ("mallet", "mallet_acoustic_011", "test")
    assert n.path == os.path.join(nsynth_root, "nsynth-test", "audio", "mallet_acoustic_011-073-100.wav")
    assert "12 notes of 3 families" in found.summary() and "1 without audio" in found.summary()


def test_per_class_subsample_is_seeded_and_per_split(nsynth_root):
    sub = nsynth.nsynth(nsynth_root, per_class=2, seed=0)
    train = [n for n in sub.notes if n.split == "train"]
    counts = {f: sum(n.family == f for n in train) for f in ("guitar", "mallet", "string")}
    assert counts == {"guitar": 2, "mallet": 2, "string": 1}  # 3 guitar notes with audio -> 2
    assert sum(n.split != "train" for n in sub.notes) == 6  # valid and test have 1 per family: all kept
    assert [n.name for n in nsynth.nsynth(nsynth_root, per_class=2, seed=0).notes] == [n.name for n in sub.notes]
    drawn = {tuple(n.name for n in nsynth.nsynth(nsynth_root, per_class=1, seed=s).notes if n.family == "guitar"
                   and n.split == "train") for s in range(8)}
    assert len(drawn) > 1  # the seed chooses which
    with pytest.raises(TaskError, match="per_class must be at least 1"):
        nsynth.nsynth(nsynth_root, per_class=0)


@pytest.mark.parametrize("edit, message", [
    (lambda text: text[:-3], r"nsynth-valid/examples.json line \d+ column \d+: not valid JSON"),
    (lambda text: text.replace('"instrument_family_str": "mallet"', '"family": "mallet"'),
     r"nsynth-valid/examples.json, note 'mallet_acoustic_011-071-100': no instrument_family_str"),
    (lambda text: text.replace('"instrument_family_str": "mallet"', '"instrument_family_str": "kazoo"'),
     r"instrument family 'kazoo' is not one of"),
    (lambda text: text.replace('"note_str": "mallet_acoustic_011-071-100"', '"note_str": "../x"'),
     r"must equal its key"),
    (lambda text: "[]", r"must map each note_str"),
])
def test_malformed_examples_name_the_file_and_note(nsynth_root, edit, message):
    path = os.path.join(nsynth_root, "nsynth-valid", "examples.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(edit(text))
    with pytest.raises(TaskError, match=message):
        nsynth.nsynth(nsynth_root)


def test_missing_split_folder_is_named(tmp_path):
    with pytest.raises(TaskError, match=r"nsynth-train/examples.json not found"):
        nsynth.nsynth(str(tmp_path))


def _split(task, split):
    with open(task / f"{split}.json") as f:
        return json.load(f)


def test_hear_task_folder_from_nsynth(nsynth_root, tmp_path, capsys):
    out = tmp_path / "tasks"
    assert hear_task_main(["nsynth", nsynth_root, "--out", str(out), "--duration", "0.5"]) == 0
    assert "12 clips, 0 skipped, 11 labels" in capsys.readouterr().out
    task = out / "nsynth_instrument_family-2.2.3-full"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert {k: meta[k] for k in ("task_name", "prediction_type", "split_mode", "splits", "sample_duration")} == {
        "task_name": "nsynth_instrument_family", "prediction_type": "multiclass", "split_mode": "trainvaltest",
        "splits": ["train", "valid", "test"], "sample_duration": 0.5}
    assert meta["evaluation"][0] == "top1_acc" and meta["per_class"] is None and meta["missing_audio"] == 1
    with open(task / "labelvocabulary.csv") as f:
        assert [r["label"] for r in csv.DictReader(f)] == sorted(nsynth.FAMILIES)
    for split, folder in (("train", "nsynth-train"), ("valid", "nsynth-valid"), ("test", "nsynth-test")):
        files = _split(task, split)
        with open(os.path.join(nsynth_root, folder, "examples.json")) as f:
            examples = json.load(f)
        expected = {f"{k}.wav": [v["instrument_family_str"]] for k, v in examples.items()
                    if k != "guitar_acoustic_001-065-100"}
        assert files == expected
        assert sorted(os.listdir(task / "16000" / split)) == sorted(files)
        for name in files:
            info = sf.info(str(task / "16000" / split / name))
            assert info.samplerate == SR and info.frames == SR // 2
    # the folder the offline benchmark finds; a subsample gets its own folder name
    assert evaluation.find_task(str(out)) == str(task)
    spec, items = sources.nsynth(nsynth_root, per_class=1)
    assert spec.folder_name == "nsynth_instrument_family-2.2.3-1perclass" and len(items) == 9
    assert {it.split for it in items} == {"train", "valid", "test"} and spec.extra["per_class"] == 1


@pytest.mark.slow
def test_nsynth_task_read_back_by_heareval(nsynth_root, tmp_path):
    """heareval's embeddings runner reads the folder as the benchmark's style_task runs it (with the MFCC
    reference module), and the benchmark's reader of its embeddings gets every note with its family."""
    out = tmp_path / "tasks"
    assert hear_task_main(["nsynth", nsynth_root, "--out", str(out), "--duration", "0.5"]) == 0
    emb = tmp_path / "emb"
    env = child_env(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-m", "heareval.embeddings.runner",
                        "hear_api.mfcc", "--tasks-dir", str(out), "--task",
                        "nsynth_instrument_family-2.2.3-full", "--embeddings-dir", str(emb)],
                       capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (task_emb,) = emb.glob("*/nsynth_instrument_family-2.2.3-full")
    got = paired.load_scene_embeddings(str(task_emb))
    found = nsynth.nsynth(nsynth_root)
    assert dict(zip(got["names"], got["labels"])) == {f"{n.name}.wav": n.family for n in found.notes}
    assert got["X"].shape == (12, 80) and np.isfinite(got["X"]).all()
