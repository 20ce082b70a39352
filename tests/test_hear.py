"""HEAR 2021: the hear_api modules, the task builders, and the real harness (hear-validator,
heareval's embeddings and predictions runners) run as subprocesses on tiny generated data."""
import csv
import json
import math
import re
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from kit import ROOT, TINY
from mart_upstream.benchmarks.subprocesses import child_env
from mart_upstream.adapters.hear.tasks import main as hear_task_main
from mart_upstream.adapters.hear.tasks import sources
from mart_upstream.adapters import hear as hear_adapter
import importlib
from mart_upstream import checkpoint as mart_checkpoint
from mart_upstream.checkpoint import CheckpointError
from mart_upstream.embedding import clip_embeddings, frame_features
from mart_upstream.models import model_names
from mart_upstream.adapters.s3prl.downstream.mtat_tagging.dataset import MtatDataset

# every registered model has its HEAR module (an import error here names the one missing)
MODULES = {name: importlib.import_module(f"hear_api.{name}") for name in model_names()}
hear_mart, hear_pemr = MODULES["mart"], MODULES["pemr"]
# MART with the default finest hop (125 samples): 125 ms frames, as the full model, so the 25 ms grid is used
CONFIGS = dict(TINY, mart=dict(TINY["mart"], finest_hop=125))
BIN = os.path.dirname(sys.executable)
GENRES = ["blues", "rock"]
TAGS = ["guitar", "classical", "slow", "techno", "rare1", "rare2"]


@pytest.fixture(scope="module")
def ckpts(untrained_checkpoint):
    return {name: untrained_checkpoint(name, CONFIGS[name]) for name in MODULES}


@pytest.fixture(scope="module")
def models(ckpts):
    return {name: MODULES[name].load_model(ckpts[name]) for name in MODULES}


def _env():
    return child_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(cmd, cwd, timeout=300):
    r = subprocess.run(cmd, cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=timeout)
    cmdline = " ".join(map(str, cmd))
    assert r.returncode == 0, f"{cmdline} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


# -- tiny datasets in the layouts the builders read ----------------------------------------------------
def _clip(kind, sr, seconds, rng):
    """kind 0: a steady tone; kind 1: gated noise. Easy to tell apart, as genres or tags should be."""
    t = np.arange(int(sr * seconds)) / sr
    if kind == 0:
        return (0.4 * np.sin(2 * np.pi * rng.uniform(180, 260) * t)).astype(np.float32)
    gate = np.sin(2 * np.pi * rng.uniform(3, 6) * t) > 0
    return (0.3 * rng.standard_normal(t.size) * gate).astype(np.float32)


def make_gtzan(root, per_genre=10, sr=22050, seconds=2.0):
    rng = np.random.default_rng(0)
    for k, genre in enumerate(GENRES):
        d = os.path.join(root, "genres", genre)
        os.makedirs(d)
        for i in range(per_genre):
            sf.write(os.path.join(d, f"{genre}.{i:05d}.wav"), _clip(k, sr, seconds, rng), sr, subtype="PCM_16")
    with open(os.path.join(root, "genres", "blues", "blues.00054.wav"), "wb") as f:  # a corrupt file
        f.write(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)


def make_mtat(root, per_folder=2, sr=16000, seconds=2.0):
    """annotations_final.csv (tab separated, quoted) + mp3 folders 0/ ... f/; in every folder one clip
    tagged guitar+slow (tone) and one classical+techno (noise); rare tags fall outside the top 4."""
    rng = np.random.default_rng(1)
    rows = []
    for h in "0123456789abcdef":
        os.makedirs(os.path.join(root, h))
        for i in range(per_folder):
            kind = i % 2
            on = {"guitar": kind == 0, "slow": kind == 0, "classical": kind == 1, "techno": kind == 1,
                  "rare1": h == "0" and i == 0, "rare2": False}
            rel = f"{h}/artist_{h}-album-{i:02d}-song.mp3"
            sf.write(os.path.join(root, rel), _clip(kind, sr, seconds, rng), sr, format="MP3")
            rows.append([str(len(rows))] + [str(int(on[t])) for t in TAGS] + [rel])
    rows.append([str(len(rows))] + ["0"] * len(TAGS) + ["0/untagged.mp3"])  # no tag: dropped
    with open(os.path.join(root, "1", "broken.mp3"), "wb") as f:  # unreadable: reported and skipped
        f.write(b"ID3garbage" * 50)
    rows.append([str(len(rows))] + ["1", "0", "1", "0", "0", "0"] + ["1/broken.mp3"])
    with open(os.path.join(root, "annotations_final.csv"), "w") as f:
        for r in [["clip_id"] + TAGS + ["mp3_path"]] + rows:
            f.write("\t".join(f'"{c}"' for c in r) + "\n")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """GTZAN and MTAT fixtures built with the console script at 16 kHz (ours) and 44.1 kHz (hearbaseline)."""
    base = tmp_path_factory.mktemp("hear")
    make_gtzan(str(base / "gtzan"))
    make_mtat(str(base / "mtat"))
    out = base / "tasks"
    script = os.path.join(BIN, "mart-hear-task")
    rates = ["--sample-rates", "16000,44100", "--duration", "2"]
    logs = [_run([script, "gtzan", base / "gtzan", "--out", out, *rates], base),
            _run([script, "mtat", base / "mtat", "--out", out, "--top-k", "4", "--workers", "2", *rates], base)]
    return {"base": base, "out": out, "gtzan": out / "tfds_gtzan-1.0.0-full", "mtat": out / "mtat_top4-1.0.0-full",
            "log": "\n".join(logs)}


def _split_files(task, split):
    return json.loads((task / f"{split}.json").read_text())


# -- load_model -----------------------------------------------------------------------------------
def test_empty_path_reads_the_packaged_checkpoint_or_fails_clearly(tmp_path, monkeypatch, ckpts):
    assert hear_adapter.default_checkpoint("mart") == os.path.join(ROOT, "mart_upstream", "checkpoints", "mart.ckpt")
    monkeypatch.setattr(mart_checkpoint, "PACKAGED_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"no packaged mart checkpoint at .*mart\.ckpt"):
        hear_mart.load_model("")
    shutil.copy(ckpts["mart"], tmp_path / "mart.ckpt")
    model = hear_mart.load_model()
    assert not model.training and model.sample_rate == 16000


def test_load_model_refuses_missing_files_and_other_models(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        hear_pemr.load_model(str(tmp_path / "absent.ckpt"))
    with pytest.raises(CheckpointError, match="holds a 'pemr' model; load it with hear_api.pemr"):
        hear_mart.load_model(ckpts["pemr"])


@pytest.mark.parametrize("name", list(MODULES))
def test_model_attributes_and_eval_mode(models, name):
    m = models[name]
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    summary = 2 if m.model.window_summary == "mean_std" else 1  # mean ‖ std doubles the scene vector
    assert m.sample_rate == 16000 and m.scene_embedding_size == m.model.embedding_dim * summary
    assert m.timestamp_embedding_size == m.model.embedding_dim * (2 if name == "mart" else 1)
    assert m.timestamp_hop_ms == {"mart": 25.0, "pemr": 32.0, "simclr": 32.0}.get(name, m.timestamp_hop_ms)
    assert m.timestamp_hop_ms <= 50.0  # HEAR's bound


# -- embeddings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("batch, seconds", [(1, 0.1), (6, 1.3), (2, 7.9)])
def test_timestamp_embeddings_shapes_hop_and_dtype(models, name, batch, seconds):
    m = models[name]
    audio = torch.rand(batch, int(seconds * 16000)) * 2 - 1
    emb, ts = MODULES[name].get_timestamp_embeddings(audio, m)
    n = math.ceil(audio.shape[1] / (m.timestamp_hop_ms * 16))
    assert emb.shape == (batch, n, m.timestamp_embedding_size) and ts.shape == (batch, n)
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32 and torch.isfinite(emb).all()
    assert torch.allclose(ts[0], (torch.arange(n) + 0.5) * m.timestamp_hop_ms)
    assert m.timestamp_hop_ms <= 50


def test_mart_fine_grid_holds_the_native_frames_and_interpolates_between(models):
    m = models["mart"]
    audio = torch.rand(1, 3 * 16000) * 2 - 1
    emb, _ = hear_mart.get_timestamp_embeddings(audio, m)
    layers = frame_features(m.model, audio)
    native = torch.cat([layers[0], layers[-1]], dim=-1)[0]  # [frames, 2D] at 125 ms
    r = m.upsample
    assert r == 5
    # native frame i is centred at (i + 0.5) * 125 ms = fine point 5 i + 2
    assert torch.allclose(emb[0, 2::r][: native.shape[0]], native, atol=1e-6)
    mid = emb[0, 2 + 1]  # 1/5 of the way from frame 0 to frame 1
    assert torch.allclose(mid, 0.8 * native[0] + 0.2 * native[1], atol=1e-5)
    assert torch.allclose(emb[0, :2], native[0].expand(2, -1))  # held before the first centre


@pytest.mark.parametrize("name", list(MODULES))
def test_scene_embeddings_are_the_clip_embeddings(models, name):
    m = models[name]
    audio = torch.rand(6, int(2.5 * m.model.clip_samples)) * 2 - 1
    emb = MODULES[name].get_scene_embeddings(audio, m)
    assert emb.shape == (6, m.scene_embedding_size) and emb.dtype == torch.float32
    assert torch.allclose(emb, clip_embeddings(m.model, audio), atol=1e-5)


@pytest.mark.parametrize("name", ["mart", "pemr"])
def test_a_sound_gets_the_same_embedding_in_any_batch(models, name):
    m = models[name]
    audio = torch.rand(7, 20000) * 2 - 1
    alone = torch.cat([MODULES[name].get_timestamp_embeddings(a[None], m)[0] for a in audio])
    assert torch.allclose(MODULES[name].get_timestamp_embeddings(audio, m)[0], alone, atol=1e-5)
    scenes = torch.cat([MODULES[name].get_scene_embeddings(a[None], m) for a in audio])
    assert torch.allclose(MODULES[name].get_scene_embeddings(audio, m), scenes, atol=1e-5)


@pytest.mark.parametrize("name", ["mart", "pemr"])
def test_timestamps_do_not_recompute_overlapping_windows(models, name):
    """Every frontend together sees the signal about once per hierarchy level, never once per timestamp."""
    m = models[name]
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].numel()))
             for mod in m.model.modules() if type(mod).__name__ == "LogMel"]
    t = 20 * 16000
    try:
        emb, _ = MODULES[name].get_timestamp_embeddings(torch.rand(1, t) * 2 - 1, m)
    finally:
        for h in hooks:
            h.remove()
    passes = m.model.config.levels + 1 if name == "mart" else 1  # MART: each level's crops + the finest map
    # one window per timestamp would see (window / hop) x t samples: 115 t for 3.7 s windows at 32 ms
    assert emb.shape[1] > 500 and sum(seen) <= 2 * passes * t


def test_ten_minute_clip_in_flat_memory(models):
    m = models["pemr"]
    audio = torch.rand(1, 600 * 16000) * 2 - 1
    emb, ts = hear_pemr.get_timestamp_embeddings(audio, m)
    assert emb.shape == (1, 18750, m.timestamp_embedding_size) and ts[0, -1] == pytest.approx(599984.0)
    assert hear_pemr.get_scene_embeddings(audio, m).shape == (1, m.scene_embedding_size)


# -- bad input ------------------------------------------------------------------------------------
BAD = [
    (torch.rand(2, 2, 16000), ValueError, r"mono \[n_sounds, n_samples\].*stereo"),
    ((torch.rand(2, 16000) * 32767).to(torch.int16), ValueError, r"float in \[-1, 1\].*int16"),
    (torch.full((2, 16000), float("nan")), ValueError, "NaN or Inf"),
    (torch.cat([torch.zeros(1, 16000), torch.full((1, 16000), float("inf"))]), ValueError, r"NaN or Inf.*\[1\]"),
    (torch.rand(2, 16000) * 32767, ValueError, r"not a waveform in \[-1, 1\].*32768"),
    (torch.zeros(1, 0), ValueError, "empty"),
    (torch.zeros(0, 16000), ValueError, "empty"),
    (torch.rand(16000), ValueError, r"one sound\? use audio\[None\]"),
    (np.zeros((1, 16000), np.float32), TypeError, "torch.Tensor"),
]


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("audio, err, msg", BAD)
def test_bad_audio_gets_a_clear_error(models, name, audio, err, msg):
    mod = MODULES[name]
    with pytest.raises(err, match=msg):
        mod.get_timestamp_embeddings(audio, models[name])
    with pytest.raises(err, match=msg):
        mod.get_scene_embeddings(audio, models[name])


def test_other_models_and_rates_are_refused_or_converted(models):
    m = models["pemr"]
    with pytest.raises(TypeError, match="load_model"):
        hear_pemr.get_scene_embeddings(torch.zeros(1, 16000), m.model)
    for rate in (-1, 0.5, 22050.5, float("nan")):
        with pytest.raises(ValueError, match="sample_rate must be a whole number"):
            hear_pemr.get_scene_embeddings(torch.zeros(1, 16000), m, sample_rate=rate)
    # documented conversions: float64 -> float32; audio at another rate, with sample_rate= -> resampled
    x = torch.rand(2, 44100, dtype=torch.float64) * 2 - 1
    x16 = AF.resample(x.float(), 44100, 16000)
    emb, ts = hear_pemr.get_timestamp_embeddings(x, m, sample_rate=44100)
    ref, ref_ts = hear_pemr.get_timestamp_embeddings(x16, m)
    assert emb.dtype == torch.float32 and torch.allclose(emb, ref, atol=1e-5) and torch.equal(ts, ref_ts)
    assert torch.allclose(hear_pemr.get_scene_embeddings(x, m, sample_rate=44100),
                          hear_pemr.get_scene_embeddings(x16, m), atol=1e-5)


# -- task builders --------------------------------------------------------------------------------
@pytest.mark.slow
def test_gtzan_task_matches_hear_tfds_gtzan(tasks):
    task = tasks["gtzan"]
    meta = json.loads((task / "task_metadata.json").read_text())
    assert {k: meta[k] for k in ("task_name", "version", "mode", "embedding_type", "prediction_type",
                                 "split_mode", "nfolds")} == {
        "task_name": "tfds_gtzan", "version": "1.0.0", "mode": "full", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "new_split_kfold", "nfolds": 10}
    assert meta["evaluation"][0] == "top1_acc" and set(meta["evaluation"]) == {"top1_acc", "mAP", "d_prime", "aucroc"}
    assert meta["splits"] == [f"fold{i:02d}" for i in range(10)]
    with open(task / "labelvocabulary.csv") as f:
        assert list(csv.reader(f)) == [["idx", "label"], ["0", "blues"], ["1", "rock"]]
    seen = {}
    for fold in meta["splits"]:
        files = _split_files(task, fold)
        assert {lab[0] for lab in files.values()} == set(GENRES)  # every fold holds every genre
        for name, labels in files.items():
            assert name not in seen and len(labels) == 1 and name.startswith(labels[0])
            seen[name] = fold
            for sr in (16000, 44100):
                info = sf.info(str(task / str(sr) / fold / name))
                assert info.samplerate == sr and info.channels == 1 and info.frames == 2 * sr
    assert len(seen) == 20 and "blues.00054.wav" not in seen  # the corrupt file is skipped ...
    assert "skipped" in tasks["log"] and "blues.00054.wav" in tasks["log"]  # ... and reported
    assert not [p for p in os.listdir(tasks["out"]) if p.startswith(".")]  # no temp folders left


def test_mtat_task_uses_the_s3prl_downstream_split(tasks):
    task = tasks["mtat"]
    meta = json.loads((task / "task_metadata.json").read_text())
    assert meta["split_mode"] == "trainvaltest" and meta["prediction_type"] == "multilabel"
    assert meta["evaluation"] == ["aucroc", "mAP"] and meta["splits"] == ["train", "valid", "test"]
    with open(task / "labelvocabulary.csv") as f:
        assert sorted(r[1] for r in list(csv.reader(f))[1:]) == sorted(["guitar", "classical", "slow", "techno"])
    for hear_split, s3prl_split in [("train", "train"), ("valid", "dev"), ("test", "test")]:
        files = _split_files(task, hear_split)
        ds = MtatDataset(str(tasks["base"] / "mtat"), s3prl_split, top_k=4)
        ours = {name.split("-", 1)[1][: -len(".wav")]: sorted(labels) for name, labels in files.items()}
        theirs = {os.path.basename(p)[: -len(".mp3")]: sorted(t for t, v in zip(ds.tags, y) if v)
                  for p, y in zip(ds.paths, ds.labels)}
        assert ours == theirs and ours
    assert "broken.mp3" in tasks["log"]


def test_builders_refuse_bad_input_and_leave_nothing_behind(tmp_path, capsys):
    make_gtzan(str(tmp_path / "g"), per_genre=2)
    out = tmp_path / "tasks"
    assert hear_task_main(["gtzan", str(tmp_path / "g"), "--out", str(out), "--duration", "1"]) == 2
    assert "cannot fill 10 folds" in capsys.readouterr().err
    assert not out.exists() or not os.listdir(out)
    assert hear_task_main(["folder", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        hear_task_main(["gtzan", str(tmp_path / "g"), "--out", str(out), "--sample-rates", "8000"])
    # the folder task: any label tree, default duration from the clips, and no silent overwrite
    assert hear_task_main(["folder", str(tmp_path / "g" / "genres"), "--out", str(out), "--nfolds", "3",
                           "--name", "toy"]) == 0
    meta = json.loads((out / "toy-1.0.0-full" / "task_metadata.json").read_text())
    assert meta["sample_duration"] == 2.0 and meta["splits"] == ["fold00", "fold01", "fold02"]
    assert hear_task_main(["folder", str(tmp_path / "g" / "genres"), "--out", str(out), "--name", "toy"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    spec, items = sources.folder(str(tmp_path / "g" / "genres"))
    assert spec.nfolds == 5 and len(items) == 5


# -- the real harness -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.slow
def test_hear_validator_says_looks_good(ckpts, models, tmp_path, name):
    out = _run([os.path.join(BIN, "hear-validator"), f"hear_api.{name}", "-m", ckpts[name], "-d", "cpu"], tmp_path)
    assert "Looks good!" in out
    hop = {"mart": 25.0, "pemr": 32.0, "simclr": 32.0}.get(name, models[name].timestamp_hop_ms)
    assert hop <= 50.0
    said = re.search(r"Interval between timestamps is ([0-9.]+)ms", out)
    assert said and abs(float(said.group(1)) - hop) < 1e-4  # the validator measures it in float32


@pytest.mark.slow
def test_heareval_runs_end_to_end_on_gtzan_and_mtat(tasks, ckpts, tmp_path):
    """The slowest test (about 1.5 minutes on 2 cores): embeddings for hear_api.mart, hear_api.pemr and
    hearbaseline, then one predictions run over all six task folders with heareval's smallest grid
    ("faster", 1 grid point: a probe of at most 10 epochs, so the scores only show the run is whole)."""
    import hearbaseline

    baseline = tmp_path / "naive.pt"  # heareval's embeddings runner needs a model file; hearbaseline's weights
    torch.save(hearbaseline.load_model().state_dict(), baseline)
    emb = tmp_path / "embeddings"
    for module, model in [("hear_api.mart", ckpts["mart"]), ("hear_api.pemr", ckpts["pemr"]),
                          ("hearbaseline", baseline)]:
        _run([sys.executable, "-m", "heareval.embeddings.runner", module, "--model", model,
              "--tasks-dir", tasks["out"], "--embeddings-dir", emb], tmp_path)
    dirs = sorted(str(p) for p in emb.glob("*/*"))
    assert len(dirs) == 6
    _run([sys.executable, "-m", "heareval.predictions.runner", *dirs, "--grid", "faster", "--grid-points", "1"],
         tmp_path, timeout=500)
    report = {}
    for d in dirs:
        module, task = d.split(os.sep)[-2:]
        scores = json.loads((emb / module / task / "test.predicted-scores.json").read_text())
        if task.startswith("tfds_gtzan"):
            assert sorted(k for k in scores if k.startswith("fold")) == [f"fold{i:02d}" for i in range(10)]
            agg = scores["aggregated_scores"]
            got = {m: agg[f"test_{m}_mean"] for m in ("top1_acc", "mAP", "d_prime", "aucroc")}
            assert 0.0 <= got["top1_acc"] <= 1.0 and 0.0 <= got["mAP"] <= 1.0
        else:
            got = {m: scores["test"][f"test_{m}"] for m in ("aucroc", "mAP")}
            assert 0.0 <= got["aucroc"] <= 1.0 and 0.0 <= got["mAP"] <= 1.0
        split = "fold00" if task.startswith("tfds_gtzan") else "train"
        dim = json.loads((emb / module / task / f"{split}.embedding-dimensions.json").read_text())
        report[f"{module} {task}"] = {"dim": dim[1], **{k: round(float(v), 3) for k, v in got.items()}}
    assert report["hear_api.mart mtat_top4-1.0.0-full"]["dim"] == TINY["mart"]["encoder"]["channels"][-1]
    assert report["hearbaseline mtat_top4-1.0.0-full"]["dim"] == 4096
    print("\nHEAR tiny-task test scores:\n" + json.dumps(report, indent=1))
