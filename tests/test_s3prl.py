"""The S3PRL plugin, end to end: the ``s3prl`` console script drives s3prl's own, unmodified runners
on tiny generated datasets written in the real datasets' on-disk layouts."""
import csv
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch

from kit import TINY
from mart_upstream.checkpoint import save_checkpoint
from mart_upstream.models import build_model, model_names

pytest.importorskip("s3prl")

BIN = os.path.join(os.path.dirname(sys.executable), "s3prl")
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


# --------------------------------------------------------------------------------------- fixtures
def tone(freq, seconds, sr, seed, noise=0.05):
    """A tone with a few harmonics and noise: different frequencies give separable classes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3))
    return (0.3 * x / 1.8 + noise * rng.standard_normal(t.size)).astype(np.float32)


def write_gtzan(root, per_split=(2, 1, 1), genres=GENRES[:3], seconds=1.0, sr=22050):
    """``genres/<genre>/<genre>.000NN.wav`` at 22.05 kHz, clips named after the fault-filtered lists."""
    from mart_upstream.tasks.gtzan import split_list

    for split, n in zip(("train", "dev", "test"), per_split):
        for gi, genre in enumerate(genres):
            for j, rel in enumerate([p for p in split_list(split) if p.startswith(genre + "/")][:n]):
                path = os.path.join(root, "genres", rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                x = tone(220 * (gi + 1), seconds, sr, seed=zlib.crc32(rel.encode()))
                sf.write(path, x, sr, subtype="PCM_16")
    return str(root)


def write_mtat(root, n_train=8, n_dev=3, n_test=3, seconds=1.0, sr=16000):
    """``annotations_final.csv`` (tab separated, quoted: clip_id, 188 tags, mp3_path) + mp3s in hex folders."""
    tags = [f"tag{i:03d}" for i in range(188)]
    rows = []
    folders = {"train": "0123456789ab", "dev": "c", "test": "def"}
    clip = 0
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        for j in range(n):
            folder = folders[split][j % len(folders[split])]
            rel = f"{folder}/artist_{clip}-album-01-track_{clip}-0-29.mp3"
            on = {clip % 3, 3 + clip % 2, 5}  # three tag groups, one tag on every clip
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sf.write(path, tone(200 * (1 + clip % 3), seconds, sr, seed=clip), sr, format="MP3")
            rows.append([str(clip)] + ["1" if i in on else "0" for i in range(188)] + [rel])
            clip += 1
    rows.append([str(clip)] + ["0"] * 188 + ["0/untagged-clip-0-29.mp3"])  # no tag: dropped, never read
    with open(os.path.join(root, "annotations_final.csv"), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(["clip_id"] + tags + ["mp3_path"])
        w.writerows(rows)
    return str(root)


def write_covers(root, works=6, versions=3, seconds=1.0, sr=16000):
    """manifest.csv (work_id, version_id, path relative to it) + wavs; versions of a work share a pitch."""
    rows = []
    for w in range(works):
        for v in range(versions):
            rel = f"audio/work{w}_v{v}.wav"
            os.makedirs(os.path.join(root, "audio"), exist_ok=True)
            sf.write(os.path.join(root, rel), tone(150 + 60 * w, seconds + 0.1 * v, sr, seed=10 * w + v), sr)
            rows.append({"work_id": f"W{w}", "version_id": f"W{w}-V{v}", "path": rel})
    path = os.path.join(root, "manifest.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["work_id", "version_id", "path"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def ckpts(untrained_checkpoint):
    return {name: untrained_checkpoint(name) for name in model_names()}


def s3prl(*args, cwd=None, check=True):
    # one intra-op thread: the tiny models run mostly small ops, where a second thread only adds waiting
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1")
    r = subprocess.run([BIN, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"s3prl {' '.join(map(str, args))} exited {r.returncode}\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def tiny_run(override, steps=4):
    """-o overrides for a few-step run that evaluates dev and test twice and saves checkpoints."""
    half = max(1, steps // 2)
    return ",,".join([
        f"config.runner.total_steps={steps}", f"config.runner.log_step={half}",
        f"config.runner.eval_step={half}", f"config.runner.save_step={half}", "config.runner.max_keep=4",
        "config.downstream_expert.datarc.num_workers=0",
    ] + override)


def scores(expdir, split):
    with open(os.path.join(expdir, f"{split}-scores.json")) as f:
        return json.load(f)


def write_hear_gtzan(root, folds=3, per_fold=2, genres=GENRES[:2], seconds=1.0, sr=48000):
    """A HEAR 2021 task folder like tfds_gtzan-1.0.0-full: foldNN.json ({file: [label]}), 48000/foldNN/*.wav."""
    os.makedirs(root, exist_ok=True)
    labels = {}
    for k in range(folds):
        fold = f"fold{k:02d}"
        os.makedirs(os.path.join(root, "48000", fold), exist_ok=True)
        meta = {}
        for gi, genre in enumerate(genres):
            for j in range(per_fold):
                name = f"{genre}.{k * per_fold + j:05d}.wav"
                x = tone(220 * (gi + 1), seconds, sr, seed=k * 50 + j)
                sf.write(os.path.join(root, "48000", fold, name), x, sr)
                meta[name] = [genre]
        labels[fold] = meta
        with open(os.path.join(root, f"{fold}.json"), "w") as f:
            json.dump(meta, f)
    with open(os.path.join(root, "task_metadata.json"), "w") as f:
        json.dump({"task_name": "gtzan", "mode": "full", "embedding_type": "scene",
                   "prediction_type": "multiclass", "sample_duration": seconds, "evaluation": ["top1_acc"],
                   "split_mode": "new_split_kfold", "nfolds": folds}, f)
    with open(os.path.join(root, "labelvocabulary.csv"), "w") as f:
        f.write("idx,label\n" + "".join(f"{i},{g}\n" for i, g in enumerate(genres)))
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    out = {"gtzan": write_gtzan(d / "gtzan"), "covers": write_covers(d / "covers", works=9),
           "hear_gtzan": write_hear_gtzan(d / "hear_gtzan")}
    if "MP3" in sf.available_formats():
        out["mtat"] = write_mtat(d / "mtat")
    return out


def last_error_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------ the console script
@pytest.mark.slow
def test_help_lists_our_upstreams_and_downstreams():
    r = s3prl("run_downstream", "-h")
    listed = " ".join(r.stdout.split()).split("Available options in S3PRL:")[1]  # argparse wraps lines
    for name in ("mart", "mart_local", "pemr", "pemr_local", "simclr", "fbank"):
        assert f"'{name}'" in listed
    usage = s3prl().stdout
    for name in ("mtat_tagging", "gtzan_genre", "cover_song", "mart_local"):
        assert name in usage


# --------------------------------------------------------------------------- the upstream adapter
FCN_MODELS = ("mart", "pemr", "simclr", "byol", "moco")


@pytest.mark.parametrize("name", model_names())
def test_upstream_layers_share_one_integer_frame_grid(name, tmp_path):
    from mart_upstream.embedding import frame_features
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    ckpt = str(tmp_path / "m.ckpt")
    save_checkpoint(ckpt, build_model(name, TINY[name]), name, step=0)
    up = ENTRY_POINTS[f"{name}_local"](ckpt)
    rate = up.get_downsample_rates("hidden_states")
    assert isinstance(rate, int) and 16000 % rate == 0
    wavs = [torch.randn(16000), torch.randn(7001), torch.randn(90)]  # the last is shorter than any window
    out = up(wavs)
    hs = out["hidden_states"]
    assert len(hs) >= (4 if name in FCN_MODELS else 1) and out["last_hidden_state"] is hs[-1]
    assert len({tuple(h.shape) for h in hs}) == 1 and hs[0].shape[:2] == (3, -(-16000 // rate))
    assert all(torch.isfinite(h).all() for h in hs)
    # the same numbers as the core embedding path, each native frame repeated onto the finer grid
    native = frame_features(up.model, torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True))
    rep = up.model.frame_hop // rate
    assert rep == {"mart": 1, "pemr": 4, "simclr": 4}.get(name, rep) and rep * rate == up.model.frame_hop
    for h, n in zip(hs, native):
        torch.testing.assert_close(h, n.repeat_interleave(rep, dim=1)[:, : h.shape[1]])
    up.train()
    assert not up.model.training  # frozen: dropout and batch norm stay in inference mode


def test_upstream_processes_long_audio_in_windows(tmp_path):
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    ckpt = str(tmp_path / "p.ckpt")
    save_checkpoint(ckpt, build_model("pemr", TINY["pemr"]), "pemr", step=0)
    up = ENTRY_POINTS["pemr"](ckpt)
    n = up.model.feature_chunk * 2 + 12345  # three chunks of the core's windowed path
    hs = up([torch.randn(n)])["hidden_states"]
    assert hs[-1].shape[1] == -(-n // 128)


def test_upstream_without_checkpoint_is_an_error_not_random_weights(tmp_path, monkeypatch):
    from mart_upstream import checkpoint
    from mart_upstream.adapters.s3prl import PluginError
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    with pytest.raises(PluginError, match="-k CKPT"):
        ENTRY_POINTS["mart_local"]()
    monkeypatch.setattr(checkpoint, "PACKAGED_DIR", str(tmp_path))  # an install without packaged checkpoints
    with pytest.raises(PluginError, match=r"packaged checkpoint .*mart\.ckpt is missing"):
        ENTRY_POINTS["mart"]()
    with pytest.raises(PluginError, match="not found"):
        ENTRY_POINTS["pemr_local"]("/nonexistent/pemr.ckpt")


def test_checkpoint_of_another_model_is_refused(ckpts):
    from mart_upstream.adapters.s3prl import PluginError
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    with pytest.raises(PluginError, match="holds a pemr model"):
        ENTRY_POINTS["mart_local"](ckpts["pemr"])


@pytest.mark.parametrize("wav, msg", [
    ((torch.rand(8000) * 32767).to(torch.int16), "must be float"),
    (torch.rand(8000) * 32767, "not a waveform"),
    (torch.full((8000,), float("nan")), "NaN or Inf"),
])
def test_upstream_refuses_audio_that_is_not_a_waveform(ckpts, wav, msg):
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    upstream = ENTRY_POINTS["pemr_local"](ckpts["pemr"])
    with pytest.raises(ValueError, match=msg):
        upstream([torch.rand(8000) * 2 - 1, wav])


# ------------------------------------------------------------------------------- dataset loaders
def test_gtzan_fault_filtered_lists_ship_with_the_package():
    from mart_upstream.tasks.gtzan import GENRES as G, split_list

    lists = {s: split_list(s) for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in lists.items()} == {"train": 443, "dev": 197, "test": 290}
    every = sum(lists.values(), [])
    assert len(set(every)) == 930
    assert {p.split("/")[0] for p in every} == set(G)
    assert all(p.split("/")[1].startswith(p.split("/")[0] + ".000") for p in every)


def test_gtzan_reads_genre_folders_and_resamples(data):
    from mart_upstream.adapters.s3prl.downstream.gtzan_genre.dataset import GtzanDataset

    ds = GtzanDataset(data["gtzan"], "train")
    assert len(ds) == 6 and sorted(set(ds.labels)) == [0, 1, 2]
    wav, label, name = ds[0]
    assert wav.dtype == np.float32 and wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    assert name.startswith(("blues/", "classical/", "country/"))


def test_mtat_split_by_hex_folder_top_tags_and_label_fraction(data):
    if "mtat" not in data:
        pytest.skip("this libsndfile cannot write MP3")
    from mart_upstream.adapters.s3prl.downstream.mtat_tagging.dataset import MtatDataset

    train, dev = MtatDataset(data["mtat"], "train"), MtatDataset(data["mtat"], "dev")
    assert (len(train), len(dev)) == (8, 3)  # the untagged clip is dropped
    assert all(p.split("/")[-2] in "0123456789ab" for p in train.paths)
    assert all(p.split("/")[-2] == "c" for p in dev.paths)
    assert len(train.tags) == 50 and train.tags[0] == "tag005"  # the tag on every clip is most frequent
    assert train.labels.shape == (8, 50)
    wav, y, _ = train[0]
    assert wav.dtype == np.float32 and y.shape == (50,)
    small = MtatDataset(data["mtat"], "train", label_fraction=0.25, seed=1)
    assert len(small) == 2 and set(small.paths) <= set(train.paths)
    assert MtatDataset(data["mtat"], "train", label_fraction=0.25, seed=1).paths == small.paths


def test_cover_song_splits_works_not_versions(data):
    from mart_upstream.adapters.s3prl.downstream.cover_song.dataset import CoverSongDataset

    sets = {s: CoverSongDataset(data["covers"], s, dev_fraction=0.34, test_fraction=0.34)
            for s in ("train", "dev", "test")}
    works = {s: set(d.works) for s, d in sets.items()}
    assert works["train"].isdisjoint(works["dev"]) and works["dev"].isdisjoint(works["test"])
    assert sum(len(d) for d in sets.values()) == 27
    assert sets["train"].labels == [sets["train"].train_works.index(w) for w in sets["train"].works]


def test_tagging_scores_are_sklearn_macro_averages():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from mart_upstream.adapters.s3prl.downstream.mtat_tagging.expert import tagging_scores

    rng = np.random.default_rng(0)
    y = (rng.random((40, 6)) < 0.4).astype(float)
    y[:, 5] = 1  # one tag with no negative clip: not scorable
    p = rng.random((40, 6))
    s = tagging_scores(p, y)
    assert s["n_tags"] == 5
    assert s["roc_auc"] == pytest.approx(roc_auc_score(y[:, :5], p[:, :5], average="macro"))
    assert s["pr_auc"] == pytest.approx(average_precision_score(y[:, :5], p[:, :5], average="macro"))


def test_mtat_expert_probes_its_top_tags_and_scores_the_whole_dev_split(data, tmp_path):
    if "mtat" not in data:
        pytest.skip("this libsndfile cannot write MP3")
    import json
    from collections import defaultdict

    from mart_upstream.adapters.s3prl.downstream.mtat_tagging.expert import DownstreamExpert

    class Logger:
        def add_scalar(self, *args, **kwargs):
            pass

    datarc = {"root": data["mtat"], "train_batch_size": 4, "eval_batch_size": 2, "num_workers": 0}
    expert = DownstreamExpert(8, {"datarc": datarc, "modelrc": {"probe": "linear"}}, str(tmp_path))
    assert len(expert.tags) == 50 and expert.probe.net[-1].out_features == 50
    records = defaultdict(list)
    for wavs, labels, names in expert.get_dataloader("dev"):
        loss = expert("dev", [torch.randn(3, 8) for _ in wavs], labels, names, records)
        assert torch.isfinite(loss)
    assert expert.log_records("dev", records, Logger(), 10) == ["dev-best.ckpt"]
    scores = json.loads((tmp_path / "dev-scores.json").read_text())
    assert scores["n_clips"] == 3 and scores["step"] == 10 and "roc_auc" in scores


def test_batch_hard_triplet_and_work_batches():
    from mart_upstream.adapters.s3prl.downstream.cover_song.dataset import WorkBatchSampler
    from mart_upstream.adapters.s3prl.downstream.cover_song.expert import batch_hard_triplet

    labels = torch.tensor([0, 0, 1, 1])
    close = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    assert batch_hard_triplet(close, labels, margin=0.3) == 0
    swapped = close[[0, 2, 1, 3]]  # each anchor's positive is now the far point
    assert batch_hard_triplet(swapped, labels, margin=0.3) > 1
    assert batch_hard_triplet(close, torch.tensor([0, 1, 2, 3]), 0.3) == 0  # no positives: no loss

    work_of = [i // 5 for i in range(30)]  # 6 works x 5 versions
    batches = list(WorkBatchSampler(work_of, works_per_batch=4, versions_per_work=2, seed=0, epoch=3))
    assert len(batches) == 2
    assert {work_of[i] for b in batches for i in b} == set(range(6))
    for b in batches:
        works = [work_of[i] for i in b]
        assert len(set(works)) <= 4 and max(works.count(w) for w in works) == 2
    again = list(WorkBatchSampler(work_of, 4, 2, seed=0, epoch=3))
    assert again == batches and list(WorkBatchSampler(work_of, 4, 2, seed=0, epoch=4)) != batches


def test_soundfile_stand_ins_for_torchaudio_io(tmp_path):
    from mart_upstream.adapters.s3prl.compat import sf_info, sf_load, sf_save

    x = torch.rand(2, 4800) * 1.6 - 0.8
    path = str(tmp_path / "a.wav")
    sf_save(path, x, 48000)
    y, sr = sf_load(path)
    assert sr == 48000 and y.shape == (2, 4800) and y.dtype == torch.float32
    torch.testing.assert_close(y, x, atol=1e-4, rtol=0)
    part, _ = sf_load(path, frame_offset=100, num_frames=50)
    torch.testing.assert_close(part, y[:, 100:150])
    info = sf_info(path)
    assert (info.sample_rate, info.num_frames, info.num_channels, info.bits_per_sample) == (48000, 4800, 2, 16)


def test_levenshtein_stand_in():
    from mart_upstream.adapters.s3prl.compat import levenshtein

    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein(["a", "b"], []) == 2 and levenshtein("", "") == 0


# ------------------------------------------------------------------ s3prl's runner, end to end
@pytest.mark.slow
def test_mart_on_gtzan_trains_writes_scores_and_resumes(ckpts, data, tmp_path):
    exp = tmp_path / "exp"
    s3prl("run_downstream", "-m", "train", "-u", "mart", "-k", ckpts["mart"], "-d", "gtzan_genre", "-p", exp,
          "-o", tiny_run([f"config.downstream_expert.datarc.root={data['gtzan']}"]))
    for split in ("dev", "test"):
        s = scores(exp, split)
        assert s["step"] == 4 and 0 <= s["accuracy"] <= 1 and s["n_clips"] == 3
    for name in ("states-2.ckpt", "states-4.ckpt", "dev-best.ckpt"):
        assert (exp / name).exists()

    r = s3prl("run_downstream", "-m", "train", "-e", exp / "states-4.ckpt", "-o", "config.runner.total_steps=6")
    out = r.stdout + r.stderr
    assert "Resume from" in out and "Loading Downstream weights from the previous experiment" in out
    assert "Loading Optimizer weights" in out
    assert scores(exp, "dev")["step"] == 6 and (exp / "states-6.ckpt").exists()
    # continued from step 4: nothing was trained again from step 1
    assert len(list(exp.glob("states-*.ckpt"))) == 3

    s3prl("run_downstream", "-m", "evaluate", "-e", exp / "dev-best.ckpt", "-t", "test")
    s = json.loads((exp / "test-scores-dev-best.json").read_text())
    assert s["split"] == "test" and 0 <= s["accuracy"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in model_names() if m not in ("mart", "pemr", "simclr")])
def test_every_other_model_runs_a_downstream(name, ckpts, data, tmp_path):
    exp = tmp_path / "exp"
    s3prl("run_downstream", "-m", "train", "-u", f"{name}_local", "-k", ckpts[name], "-d", "gtzan_genre", "-p", exp,
          "-o", tiny_run([f"config.downstream_expert.datarc.root={data['gtzan']}"], steps=2))
    s = scores(exp, "test")
    assert s["step"] == 2 and 0 <= s["accuracy"] <= 1 and s["n_clips"] == 3


@pytest.mark.slow
def test_upstream_by_name_without_k_uses_the_packaged_checkpoint(data, tmp_path):
    exp = tmp_path / "exp"
    r = s3prl("run_downstream", "-m", "train", "-u", "pemr", "-d", "gtzan_genre", "-p", exp,
              "-o", tiny_run([f"config.downstream_expert.datarc.root={data['gtzan']}"], steps=2))
    assert "pemr.ckpt" in r.stdout + r.stderr  # the expert names the checkpoint it loaded
    assert scores(exp, "test")["step"] == 2


@pytest.mark.slow
def test_gtzan_probe_learns_the_fixture_genres(data, tmp_path):
    """fbank_no_cmvn (no download) separates the fixture's tones: labels, pooling and training fit together.
    (fbank and mel standardise every clip over time, so their clip means, what the probes see, are zero.)"""
    exp = tmp_path / "exp"
    s3prl("run_downstream", "-m", "train", "-u", "fbank_no_cmvn", "-d", "gtzan_genre", "-p", exp,
          "-o", tiny_run([f"config.downstream_expert.datarc.root={data['gtzan']}", "config.optimizer.lr=1.0e-2"],
                         steps=30))
    assert scores(exp, "dev")["accuracy"] == 1.0 and scores(exp, "test")["accuracy"] == 1.0


@pytest.mark.parametrize("upstream", ["pemr", "fbank"])
@pytest.mark.slow
def test_mtat_tagging_with_pemr_and_a_baseline_upstream(upstream, ckpts, data, tmp_path):
    if "mtat" not in data:
        pytest.skip("this libsndfile cannot write MP3")
    exp = tmp_path / "exp"
    k = ["-k", ckpts[upstream]] if upstream in ckpts else []
    s3prl("run_downstream", "-m", "train", "-u", upstream, *k, "-d", "mtat_tagging", "-p", exp,
          "-o", tiny_run([f"config.downstream_expert.datarc.root={data['mtat']}",
                          "config.downstream_expert.datarc.train_batch_size=4"]))
    for split in ("dev", "test"):
        s = scores(exp, split)
        assert s["step"] == 4 and s["n_clips"] == 3 and s["n_tags"] > 0
        assert 0 <= s["roc_auc"] <= 1 and 0 <= s["pr_auc"] <= 1


@pytest.mark.parametrize("head", ["classification", "triplet"])
@pytest.mark.slow
def test_mart_on_cover_song_retrieval(head, ckpts, data, tmp_path):
    exp = tmp_path / "exp"
    s3prl("run_downstream", "-m", "train", "-u", "mart", "-k", ckpts["mart"], "-d", "cover_song", "-p", exp,
          "-o", tiny_run([f"config.downstream_expert.datarc.manifest={data['covers']}",
                          "config.downstream_expert.datarc.dev_fraction=0.34",
                          "config.downstream_expert.datarc.test_fraction=0.34",
                          f"config.downstream_expert.modelrc.head={head}"]))
    for split in ("dev", "test"):
        s = scores(exp, split)
        assert s["n_versions"] == 9 and s["n_queries"] == 9
        assert 0 < s["map"] <= 1 and 0 <= s["p_at_10"] <= 1 and 1 <= s["mr1"] <= 8


@pytest.mark.slow
def test_problem_runner_hear_gtzan_with_mart(ckpts, data, tmp_path):
    target = tmp_path / "hear_exp"
    s3prl("main", "HearGtzan", "--target_dir", target, "--prepare_data.dataset_root", data["hear_gtzan"],
          "--prepare_data.test_fold", "0", "--prepare_data.num_folds", "3",
          "--build_upstream.name", "mart", "--build_upstream.path_or_url", ckpts["mart"], "--num_workers", "0",
          "--build_batch_sampler.train.batch_size", "4", "--train.total_steps", "4", "--train.log_step", "2",
          "--train.eval_step", "2", "--train.save_step", "2")
    result = target / "evaluate" / "valid_best" / "test" / "result.yaml"
    text = result.read_text()
    assert "top1_acc" in text and "mAP" in text
    import yaml

    values = {k: v for k, v in _flat(yaml.safe_load(text)).items() if k.endswith("top1_acc")}
    assert values and all(0.0 <= float(v) <= 1.0 for v in values.values()), values  # scores, not only names


def _flat(tree, prefix=""):
    """A nested result dict (or list) -> {dotted key: leaf value}."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    out = {}
    for k, v in items:
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, (dict, list)) else {key: v})
    return out


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("case", ["unknown_upstream", "no_checkpoint", "missing_checkpoint",
                                  "wrong_sample_rate", "empty_gtzan_folder", "empty_mtat_folder",
                                  "unknown_downstream", "cuda_without_gpu"])
@pytest.mark.slow
def test_bad_input_is_one_clear_error_line(case, ckpts, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    root = f"config.downstream_expert.datarc.root={empty}"
    base = ["run_downstream", "-m", "train", "-p", tmp_path / "exp"]
    if case == "wrong_sample_rate":
        write_gtzan(tmp_path / "g44", per_split=(1, 1, 1), genres=GENRES[:1], sr=44100)
        root = f"config.downstream_expert.datarc.root={tmp_path / 'g44'}"
    args, expect = {
        "unknown_upstream": (["-u", "marty", "-d", "gtzan_genre"],
                             ["unknown upstream 'marty'", "mart_local", "fbank"]),
        "no_checkpoint": (["-u", "mart_local", "-d", "gtzan_genre"], ["needs a checkpoint", "-k CKPT"]),
        "missing_checkpoint": (["-u", "mart_local", "-k", tmp_path / "none.ckpt", "-d", "gtzan_genre"],
                               ["checkpoint not found", "none.ckpt"]),
        "wrong_sample_rate": (["-u", "mart", "-k", ckpts["mart"], "-d", "gtzan_genre", "-o", root],
                              ["blues.000", "44100 Hz", "22050 Hz"]),
        "empty_gtzan_folder": (["-u", "mart", "-k", ckpts["mart"], "-d", "gtzan_genre", "-o", root],
                               ["no genre folders", str(empty)]),
        "empty_mtat_folder": (["-u", "pemr", "-k", ckpts["pemr"], "-d", "mtat_tagging", "-o", root],
                              ["annotations_final.csv not found", str(empty)]),
        "unknown_downstream": (["-u", "fbank", "-d", "gtzan"], ["unknown downstream 'gtzan'", "gtzan_genre"]),
        "cuda_without_gpu": (["-u", "pemr", "-k", ckpts["pemr"], "-d", "gtzan_genre", "--device", "cuda"],
                             ["--device cuda: no CUDA device"]),
    }[case]
    if case == "cuda_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = s3prl(*base, *args, check=False)
    line = last_error_line(r)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert line.startswith("s3prl: error: ")
    for text in expect:
        assert text in line
    if case in ("unknown_upstream", "no_checkpoint", "missing_checkpoint", "unknown_downstream", "cuda_without_gpu"):
        assert not (tmp_path / "exp").exists()  # refused before s3prl starts an experiment


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_device_without_a_gpu_is_one_clear_error():
    """Both s3prl commands get --device cpu when none is given; cuda asked for is one clear line."""
    from mart_upstream.adapters.s3prl import PluginError
    from mart_upstream.adapters.s3prl.launcher import _device_args

    assert _device_args(None) == ["--device", "cpu"] and _device_args("cpu") == []
    for device in ("cuda", "cuda:1"):
        with pytest.raises(PluginError, match=f"--device {device}: no CUDA device"):
            _device_args(device)


@pytest.mark.parametrize("text, ok", [
    ("config.runner.total_steps=10", True),
    ("config.runner.total_steps=10,,config.downstream_expert.datarc.root=/d,,args.seed=3", True),
    ("config.runner.total_steps", False),
    ("runner.total_steps=10", False),
    ("config.a=b=c", False),
    ("config.runner.total_steps=10,,", False),
    ("args.a.b=1", False),
])
def test_overrides_are_checked_before_s3prl_parses_them(text, ok):
    from mart_upstream.adapters.s3prl import PluginError
    from mart_upstream.adapters.s3prl.launcher import check_overrides

    if ok:
        check_overrides(text)
    else:
        with pytest.raises(PluginError, match="-o "):
            check_overrides(text)
