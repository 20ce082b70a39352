"""The strategies paper as printed: eq. (1)'s dot product by default, the paper's augmentation
chain for its models (CLMR's chain for the others, unchanged), time stretch without trailing silence,
an audible noise SNR, MelCPC's context/prediction layouts, the CNN-5 mel bands, random playlist queries
and the playlist filters, the SVM probe, the MFCC-40 reference, the FMA-small, IRMAS and MSD tagging
loaders and MoCo's Shuffle-BN."""
import math

import numpy as np

import pytest
import torch

from kit import tone_tensor, write_tone
from mart_upstream.losses import info_nce
from mart_upstream.models import build_model, tiny_config


def _model(name, **overrides):
    torch.manual_seed(0)
    return build_model(name, {**tiny_config(name), **overrides})


# -- 1. eq. (1): a dot product without temperature, by default ----------------------------------------
def test_the_default_info_nce_is_eq_1_by_hand():
    a = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    p = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # logits a pᵀ: row 0 [2, 3], row 1 [1, -0.5]; positives on the diagonal
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(3)))
    row1 = -math.log(math.exp(-0.5) / (math.exp(1) + math.exp(-0.5)))
    assert float(info_nce(a, p)) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # cosine with a temperature is a different number on the same vectors (the option)
    assert float(info_nce(a, p, 0.05, "cosine")) != pytest.approx((row0 + row1) / 2, rel=1e-3)


@pytest.mark.parametrize("name", ["cnn5_infonce", "cnn5_multilevel", "melcpc"])
def test_siamese_and_melcpc_share_the_printed_similarity(name):
    cfg = _model(name).config
    assert (cfg.similarity, cfg.temperature) == ("dot", 1.0)


def test_the_siamese_loss_is_the_dot_product_of_its_unnormalised_vectors():
    model = _model("cnn5_infonce")
    out = model(0.1 * torch.randn(4, 2, model.clip_samples, generator=torch.Generator().manual_seed(1)))
    z1, z2 = out["z1"].double(), out["z2"].double()
    logits = z1 @ z2.t()
    by_hand = float((torch.logsumexp(logits, 1) - logits.diagonal()).mean())
    assert float(out["loss"].detach()) == pytest.approx(by_hand, rel=1e-4)
    cos = _model("cnn5_infonce", similarity="cosine", temperature=0.05)
    assert cos.config.similarity == "cosine"  # the option still builds


# -- 2 and 4. the paper's augmentation chain, read-ahead time stretch, audible noise -----------------------
from mart_upstream.augment import AugmentationChain, AugmentConfig, Noise, read_samples  # noqa: E402
from mart_upstream.config import from_dict, to_dict  # noqa: E402
from mart_upstream.models import get_entry  # noqa: E402
from mart_upstream.models.siamese import STRATEGIES_AUGMENT  # noqa: E402

SR = 16000
# The effective augmentation settings of the models on the CLMR chain, as they were before the paper's chain became theirs.
CLMR_EFFECTIVE = {"sample_rate": 16000, "p_polarity": 0.8, "p_noise": 0.01, "noise_snr": (0.0001, 0.01),
                  "p_gain": 0.3, "gain_db": (-20.0, -1.0), "p_filter": 0.8, "lowpass_hz": (2200.0, 4000.0),
                  "highpass_hz": (200.0, 1200.0), "p_delay": 0.3, "delay_ms": (200, 500), "delay_step_ms": 50,
                  "delay_volume": 0.5, "p_pitch": 0.6, "pitch_semitones": (-7, 7), "p_reverb": 0.0,
                  "reverb_rt60_s": (0.2, 1.5), "p_stretch": 0.0, "stretch_rate": (0.8, 1.2)}


def _effective_augment(name) -> AugmentConfig:
    return from_dict(AugmentConfig, (get_entry(name).model_cls.pretrain_defaults or {}).get("augment", {}))


@pytest.mark.parametrize("name", ["mart", "pemr", "simclr", "byol", "moco"])
def test_the_clmr_models_keep_exactly_their_augmentations(name):
    cfg = _effective_augment(name)
    got = {k: v for k, v in to_dict(cfg).items() if k in CLMR_EFFECTIVE}
    assert got == {k: (list(v) if isinstance(v, tuple) else v) for k, v in CLMR_EFFECTIVE.items()}
    # the new settings are inert for them: noise as CLMR's ratio, crops read at the views' length
    assert cfg.noise_snr_db is None and read_samples(59049, cfg) == 59049
    chain = AugmentationChain(cfg)
    assert chain.transforms[1].snr_db is None and chain.stretch.p == 0.0


@pytest.mark.parametrize("name", ["cnn5_infonce", "cnn5_multilevel", "melcpc"])
def test_the_strategies_models_train_with_the_papers_chain(name):
    cfg = _effective_augment(name)
    chain = AugmentationChain(cfg)
    pitch = chain.transforms[5]
    assert pitch.choices == [-2, -1, 1, 2] and pitch.p == 1.0  # §2.3.1
    assert chain.stretch.rate == (0.8, 1.2) and chain.stretch.p == 1.0
    assert (cfg.p_reverb, cfg.p_noise, cfg.p_gain, cfg.p_filter, cfg.p_delay) == (0.5, 0.5, 0.0, 0.0, 0.0)
    assert tuple(cfg.noise_snr_db) == (5.0, 40.0)
    assert read_samples(48000, cfg) == 57600  # 1.2 x 3 s read, 3 s views


def _tone(n, rows=3):
    return torch.stack([tone_tensor(n, 220.0 * (k + 1), SR, amplitude=0.5) for k in range(rows)])


def test_a_sped_up_view_read_ahead_has_no_trailing_silence():
    clip = 8000
    only = {f: 0.0 for f in ("p_polarity", "p_noise", "p_gain", "p_filter", "p_delay", "p_pitch", "p_reverb")}
    cfg = AugmentConfig(**only, p_stretch=1.0, stretch_rate=(1.2, 1.2))
    chain = AugmentationChain(cfg)
    tail = slice(clip - 800, clip)  # the last 50 ms of the view
    read = read_samples(clip, cfg)
    ahead = chain(_tone(read), torch.Generator().manual_seed(0), out_samples=clip)
    assert read == 9600 and ahead.shape == (3, clip)
    rms = ahead[:, tail].pow(2).mean(1).sqrt()
    assert (rms > 0.2).all()  # a 0.5-amplitude tone: rms 0.35
    # without the read-ahead the same stretch ends in digital silence (what the views had before)
    short = chain(_tone(clip), torch.Generator().manual_seed(0))
    assert short[:, clip - 1000:].abs().max() == 0


def _snr_db(x, y):
    return (10 * torch.log10(x.var(1) / (y - x).var(1))).tolist()


def test_the_strategies_noise_is_audible_and_clmrs_is_not():
    x = _tone(16000, rows=64)
    loud = Noise(1.0, snr_db=tuple(STRATEGIES_AUGMENT["noise_snr_db"]))(x, torch.Generator().manual_seed(0))
    snr = _snr_db(x, loud)
    assert all(4.5 < s < 40.5 for s in snr) and min(snr) < 12 and max(snr) > 33  # spread over 5-40 dB
    clmr = Noise(1.0, snr=CLMR_EFFECTIVE["noise_snr"])(x, torch.Generator().manual_seed(0))
    assert all(s > 39.5 for s in _snr_db(x, clmr))  # 40-80 dB below the signal
    with pytest.raises(ValueError, match="SNR range"):
        Noise(1.0, snr_db=(20, 10))


def test_a_run_writes_its_effective_settings_and_reads_ahead(tmp_path):
    import json

    from kit import tiny_overrides
    from mart_upstream.train.cli import main

    assert main(["--model", "melcpc", "--demo", "2", "--out", str(tmp_path), "--steps", "1", "--batch-size", "2",
                 "data.num_workers=0", *tiny_overrides("melcpc")]) == 0
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["model"] == "melcpc" and settings["augment"]["noise_snr_db"] == [5.0, 40.0]
    assert settings["augment"]["p_stretch"] == 1.0 and settings["augment"]["p_gain"] == 0.0
    assert settings["crop_samples"] == {"read": 9600, "view": 8000}  # tiny MelCPC: 4 x 2000 samples


# -- 3. MelCPC: the printed 12 s sequence by default, the authors' 4 + 4 as an option ---------------------
def test_melcpc_defaults_to_the_printed_12_s_and_takes_the_authors_layout():
    with torch.device("meta"):
        cfg = build_model("melcpc").config
    assert (cfg.clip_samples, cfg.segment_samples, cfg.context_segments, cfg.prediction_steps) == (192000, 48000, 2, 2)
    code = _model("melcpc", context_segments=4, prediction_steps=4, clip_samples=0)
    seg = code.config.segment_samples
    assert code.clip_samples == 8 * seg and len(code.predictors) == 4
    x = 0.1 * torch.randn(3, 1, code.clip_samples, generator=torch.Generator().manual_seed(0))
    out = code(x)
    assert sorted(k for k in out if k.startswith("cpc_k")) == ["cpc_k1", "cpc_k2", "cpc_k3", "cpc_k4"]
    # c_4 (the GRU after 4 segments) predicts y_5..y_8: the loss is eq. (3) over those 4 steps
    y = code.segment_embeddings(x[:, 0])
    ctx = code.context(y)
    pred = torch.stack([w(ctx[:, 3]) for w in code.predictors], 1)
    from mart_upstream.losses import cpc_step_losses
    by_hand = cpc_step_losses(pred, y[:, 4:8]).sum().detach()
    assert float(out["loss"].detach()) == pytest.approx(float(by_hand), rel=1e-5)


# -- 5. the recommendation protocol: random queries by default, the paper's filters as options ---------------
def test_queries_are_seeded_random_draws_by_default():
    from mart_upstream.tasks import playlists as pl

    ids = [f"t{i:02d}" for i in range(40)]
    lists = [pl.Playlist(str(k), ids[5 * k:5 * k + 8]) for k in range(6)]
    a, b = pl.sample_protocol(lists, ids, seed=1), pl.sample_protocol(lists, ids, seed=1)
    assert a.query_choice == "random" and np.array_equal(a.queries, b.queries)
    firsts = [[ids.index(t) for t in p.tracks[:3]] for p in lists]
    assert a.queries.tolist() != firsts  # not the playlists' openings
    assert pl.sample_protocol(lists, ids, seed=1, queries="first").queries.tolist() == firsts
    assert pl.evaluate(np.eye(40), ids, lists, seed=1)["queries"] == "random"


def test_the_papers_playlist_filters_are_options_and_counted(tmp_path, caplog):
    import logging

    from mart_upstream.tasks import playlists as pl

    lists = [pl.Playlist("1", ["a", "b", "c", "d", "e"], "Rock"), pl.Playlist("2", ["a", "f", "g", "h"], "Mixed Genre"),
             pl.Playlist("3", ["i", "j", "k", "l", "m", "n", "o", "p", "q"], "Jazz"),
             pl.Playlist("4", ["r", "s", "t", "u"], "Folk")]
    path = tmp_path / "playlists.jsonl"
    pl.write_playlists(lists, str(path))
    (tmp_path / "pretrain").mkdir()
    for t in ("a", "r"):
        (tmp_path / "pretrain" / f"{t}.wav").write_bytes(b"")
    pretrain = pl.track_ids_in(str(tmp_path / "pretrain"))
    assert pretrain == {"a", "r"}
    with caplog.at_level(logging.INFO, logger="mart_upstream.tasks.playlists"):
        got = pl.read_playlists(str(path), min_tracks=4, max_tracks=8, exclude_tracks=pretrain,
                                exclude_categories=["mixed genre"])
    # "a" and "r" removed (2 tracks); "Mixed Genre" dropped; "4" left with 3 tracks; "3" has 9 > 8
    assert [p.id for p in got.playlists] == ["1"] and got.playlists[0].tracks == ["b", "c", "d", "e"]
    assert (got.overlap, got.excluded_category, got.too_short, got.too_long) == (2, 1, 1, 1)
    assert "1 playlists of 4 tracks" in caplog.text and "2 pretraining tracks removed" in caplog.text
    assert len(pl.read_playlists(str(path)).playlists) == 4  # the defaults keep them all


# -- 8. MoCo's Shuffle-BN ----------------------------------------------------------------------------------
def _bn_means(model, views):
    """The per-channel batch means the first BatchNorm of the query and of the key encoder normalise with, one
    row per BatchNorm call (per sub-batch)."""
    seen = {"q": [], "k": []}
    hooks = [enc.blocks[0][1].register_forward_hook(lambda m, i, o, key=key: seen[key].append(i[0].mean((0, 2, 3))))
             for enc, key in ((model.encoder, "q"), (model.key_encoder, "k"))]
    torch.manual_seed(0)
    out = model(views)
    for h in hooks:
        h.remove()
    return out, torch.stack(seen["q"]), torch.stack(seen["k"])


def test_shuffle_bn_gives_the_keys_other_statistics_than_the_queries():
    x = 0.1 * torch.randn(8, 1, tiny_config("moco")["clip_samples"], generator=torch.Generator().manual_seed(0))
    views = torch.cat([x, x], 1)  # identical views, and the key encoder is the query encoder's copy at init
    plain = _model("moco", shuffle_bn=False).train()
    out, q_stats, k_stats = _bn_means(plain, views)
    assert torch.equal(q_stats, k_stats) and torch.allclose(out["z1"], out["z2"], atol=1e-6)  # the leak
    model = _model("moco").train()
    assert model.config.shuffle_bn and model.config.shuffle_bn_splits == 2  # the default, as the paper
    out, q_stats, k_stats = _bn_means(model, views)
    assert q_stats.shape[0] == k_stats.shape[0] == 2  # two sub-batches each
    assert not torch.allclose(q_stats, k_stats, atol=1e-4)  # the keys' sub-batches hold other examples
    assert not torch.allclose(out["z1"], out["z2"], atol=1e-4)
    # the keys come back in their examples' order: redo the shuffled split by hand with the same draw
    torch.manual_seed(0)
    perm = torch.randperm(8)
    with torch.no_grad():
        spec = model.frontend(x[:, 0])[perm]
        by_hand = model.key_head(torch.cat([model.key_encoder(spec[:4]), model.key_encoder(spec[4:])]))[perm.argsort()]
    assert torch.allclose(out["z2"], by_hand, atol=1e-5)
    # eval mode (embedding): no shuffling, no splitting (running statistics, the key encoder's its own)
    model.eval()
    with torch.no_grad():
        e = model(views)
        spec = model.frontend(x[:, 0])
        assert torch.allclose(e["z2"], model.key_head(model.key_encoder(spec)), atol=1e-6)
        assert torch.allclose(e["z1"], model.head(model.encoder(spec)), atol=1e-6)


def _ddp_shuffle_worker(rank, port, out):
    import torch.distributed as dist

    from mart_upstream.distributed import batch_shuffle, batch_unshuffle

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # rank 0's draw is the one used
        x = torch.arange(4.0)[:, None] + 10 * rank  # rank 0: 0..3, rank 1: 10..13
        mine, unshuffle = batch_shuffle(x)
        back = batch_unshuffle(mine * 2, unshuffle)
        out[rank] = (mine.squeeze(1).tolist(), back.squeeze(1).tolist())
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_shuffles_across_ranks_and_back():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_shuffle_worker, args=(port, out), nprocs=2)
    (mine0, back0), (mine1, back1) = out[0], out[1]
    assert sorted(mine0 + mine1) == [0, 1, 2, 3, 10, 11, 12, 13]  # a permutation of the global batch
    assert set(mine0) != {0, 1, 2, 3}  # rank 0 encodes examples of rank 1 (seeded draw on rank 0)
    assert back0 == [0, 2, 4, 6] and back1 == [20, 22, 24, 26]  # each rank gets its own examples' outputs back


# -- 6. the linear SVM probe beside the logistic one, and the MFCC-40 reference ---------------------------
def test_grouped_cv_takes_a_linear_svm_and_keeps_the_logistic_default():
    from mart_upstream.benchmarks.run import paired

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 12)
    groups = np.array([f"{lab}{i // 3}" for i, lab in enumerate(labels)])  # 4 works of 3 clips per class
    centres = {"a": [3, 0], "b": [0, 3], "c": [-3, -3]}
    X = np.array([centres[lab] for lab in labels]) + rng.normal(size=(36, 2))
    svm = paired.grouped_cv(X, labels, groups, repeats=1, probe="svm")
    assert svm["probe"] == "svm" and svm["top1_acc"] > 0.9 and svm["mAP"] > 0.9
    noise = paired.grouped_cv(rng.normal(size=(36, 2)), labels, groups, repeats=1, probe="svm")
    assert noise["top1_acc"] < 0.7  # chance is 1/3: the probe learns the classes, not the folds
    assert paired.grouped_cv(X, labels, groups, repeats=1)["probe"] == "logistic"
    with pytest.raises(ValueError, match="probe must be one of"):
        paired.grouped_cv(X, labels, groups, probe="knn")


def test_the_mfcc40_reference_is_its_own_hear_module():
    from hear_api import mfcc as hear_mfcc, mfcc40 as hear_mfcc40

    model = hear_mfcc40.load_model()
    audio = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    emb, ts = hear_mfcc40.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 63, 40) and model.timestamp_hop_ms == 16.0  # hop 256 at 16 kHz: 1 + 16000 // 256
    scene = hear_mfcc40.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 80)
    assert torch.allclose(scene[:, :40], emb.mean(1), atol=1e-4)
    old = hear_mfcc.load_model()  # unchanged: 20 MFCCs + deltas at hop 320
    assert (old.timestamp_embedding_size, old.scene_embedding_size, old.timestamp_hop_ms) == (40, 80, 20.0)


# -- 7. FMA-small and IRMAS in their distributed layouts, through both harnesses ---------------------------
FMA_HEADER = ("track_id,album,set,set,track,track\n"
              ",title,split,subset,genre_top,title\n"
              "track_id,,,,,\n")  # tracks.csv's 3-row header (column group, column, index name)


def _tone_file(path, sr, seconds, fmt=None):
    write_tone(path, seconds, 440, sr, format=fmt)


@pytest.fixture
def fma_root(tmp_path):
    root = tmp_path / "fma"
    rows = [(2, "training", "small", "Hip-Hop"), (5, "validation", "small", "Pop"), (140, "test", "small", "Folk"),
            (141, "training", "small", "Rock"),  # listed, no audio
            (3, "training", "medium", "Hip-Hop")]  # not in fma_small
    (root / "fma_metadata").mkdir(parents=True)
    (root / "fma_metadata" / "tracks.csv").write_text(
        FMA_HEADER + "".join(f"{tid},Album {tid},{split},{subset},{genre},Song {tid}\n"
                             for tid, split, subset, genre in rows))
    for tid in (2, 5, 140):
        _tone_file(root / "fma_small" / f"{tid:06d}"[:3] / f"{tid:06d}.mp3", 44100, 0.5, "MP3")
    return root


def test_fma_small_is_read_from_tracks_csv_and_the_mp3_folders(fma_root, tmp_path):
    from mart_upstream.errors import TaskError
    from mart_upstream.tasks import fma

    found = fma.fma_small(str(fma_root))
    assert [(t.name, t.genre, t.split) for t in found.tracks] == [
        ("000002", "Hip-Hop", "train"), ("000005", "Pop", "dev"), ("000140", "Folk", "test")]
    assert found.missing == [141] and found.tracks[2].path.endswith("fma_small/000/000140.mp3")
    bad = tmp_path / "bad"
    (bad / "fma_metadata").mkdir(parents=True)
    (bad / "fma_small").mkdir()
    (bad / "fma_metadata" / "tracks.csv").write_text("track_id,genre\n2,Rock\n")  # a 1-row header
    with pytest.raises(TaskError, match="not FMA's tracks.csv"):
        fma.fma_small(str(bad))


@pytest.fixture
def irmas_root(tmp_path):
    from mart_upstream.tasks import irmas

    root = tmp_path / "irmas"
    wanted, names = {"train", "dev", "test"}, []
    for k in range(200):  # one recording in each split, two excerpts each, in two instruments
        inst = ("cel", "voi")[k % 2]
        split = irmas.split_of(f"{inst}/[{inst}][cla]{k:04d}")
        if split in wanted:
            wanted.discard(split)
            names += [(inst, f"[{inst}][cla]{k:04d}__{e}.wav") for e in (1, 2)]
        if not wanted:
            break
    for inst, name in names:
        _tone_file(root / "IRMAS-TrainingData" / inst / name, 44100, 0.3)
    return root


def test_irmas_is_labelled_by_folder_and_split_by_recording(irmas_root):
    from mart_upstream.errors import TaskError
    from mart_upstream.tasks import irmas

    found = irmas.irmas_training(str(irmas_root))
    assert len(found) == 6 and {e.split for e in found} == {"train", "dev", "test"}
    by_rec = {}
    for e in found:
        assert f"[{e.instrument}]" in e.path and e.name.startswith(e.instrument + "/")
        by_rec.setdefault(e.recording, set()).add(e.split)
    assert len(by_rec) == 3 and all(len(s) == 1 for s in by_rec.values())  # excerpts of one recording together
    (irmas_root / "IRMAS-TrainingData" / "cel" / "[flu][jaz]0001__1.wav").write_bytes(b"")
    with pytest.raises(TaskError, match=r"lacks \[cel\]"):
        irmas.irmas_training(str(irmas_root))


def test_fma_and_irmas_become_hear_tasks(fma_root, irmas_root, tmp_path):
    import json

    from mart_upstream.adapters.hear.tasks import main

    assert main(["fma", str(fma_root), "--out", str(tmp_path / "tasks")]) == 0
    assert main(["irmas", str(irmas_root), "--out", str(tmp_path / "tasks")]) == 0
    fma_meta = json.loads((tmp_path / "tasks" / "fma_small_genre-1.0.0-full" / "task_metadata.json").read_text())
    irmas_meta = json.loads((tmp_path / "tasks" / "irmas_instrument-1.0.0-full" / "task_metadata.json").read_text())
    assert (fma_meta["sample_duration"], fma_meta["split_mode"], fma_meta["missing_audio"]) == (30.0, "trainvaltest", 1)
    assert irmas_meta["sample_duration"] == 3.0 and irmas_meta["split"] == "80/10/10 by recording"
    vocab = (tmp_path / "tasks" / "fma_small_genre-1.0.0-full" / "labelvocabulary.csv").read_text().splitlines()
    assert len(vocab) == 1 + 8  # all 8 FMA genres
    labels = json.loads((tmp_path / "tasks" / "fma_small_genre-1.0.0-full" / "train.json").read_text())
    assert labels == {"000002.wav": ["Hip-Hop"]}


@pytest.mark.parametrize("task", ["fma_genre", "irmas_instrument"])
def test_fma_and_irmas_are_s3prl_downstreams(task, fma_root, irmas_root, tmp_path):
    import importlib
    from collections import defaultdict

    expert_cls = importlib.import_module(f"mart_upstream.adapters.s3prl.downstream.{task}.expert").DownstreamExpert
    root = fma_root if task == "fma_genre" else irmas_root
    datarc = {"root": str(root), "train_batch_size": 2, "eval_batch_size": 2, "num_workers": 0}
    expert = expert_cls(8, {"datarc": datarc, "modelrc": {"probe": "linear"}}, str(tmp_path))
    assert all(len(expert.datasets[s]) >= 1 for s in ("train", "dev", "test"))
    wavs, labels, names = next(iter(expert.get_dataloader("train")))
    assert wavs[0].ndim == 1 and wavs[0].dtype == np.float32 and len(wavs[0]) > 4000  # 16 kHz mono
    records = defaultdict(list)
    loss = expert("train", [torch.randn(5, 8) for _ in wavs], labels, names, records)
    assert torch.isfinite(loss) and len(records["correct"]) == len(wavs)


# -- 7. MSD tagging: the published split files (Python 2 pickles) and the 7digital clip folders ------------
MSD_TAGS = ("rock\npop\nalternative\nindie\nelectronic\nfemale vocalists\ndance\n00s\nalternative rock\njazz\n"
            "beautiful\nmetal\nchillout\nmale vocalists\nclassic rock\nsoul\nindie rock\nMellow\nelectronica\n80s\n"
            "folk\n90s\nchill\ninstrumental\npunk\noldies\nblues\nhard rock\nambient\nacoustic\nexperimental\n"
            "female vocalist\nguitar\nHip-Hop\n70s\nparty\ncountry\neasy listening\nsexy\ncatchy\nfunk\nelectro\n"
            "heavy metal\nProgressive rock\n60s\nrnb\nindie pop\nsad\nHouse\nhappy\n")  # MSD_split/50tagList.txt
# (MSD ID, 7digital ID, tags): the training list's first two are train, the next two valid (valid_from=2)
MSD_TRAIN = [("TRAAAAW128F429D538", "8947470", ["rock", "indie"]), ("TRAAABD128F429CF47", "1234567", ["jazz"]),
             ("TRAAADZ128F9348C2E", "3612242", ["Hip-Hop", "female vocalists"]), ("TRAAAEF128F4273421", "5551234", [])]
MSD_TEST = [("TRAAAFD128F92F423A", "7000001", ["pop", "happy"]), ("TRAAAGR128F425B14B", "2000002", ["rock"])]


def _py2_pickle(obj) -> bytes:
    """``obj`` as Python 2's cPickle.dump writes it (protocol 0, what the published files are): str as STRING,
    numpy arrays rebuilt by numpy.core.multiarray._reconstruct from their raw bytes in a STRING."""
    def string(data: bytes) -> bytes:
        return b"S" + repr(data)[1:].encode() + b"\n"

    if isinstance(obj, str):
        return string(obj.encode())
    if isinstance(obj, list):
        return b"(l" + b"".join(_py2_pickle(x) + b"a" for x in obj)
    if isinstance(obj, dict):
        return b"(d" + b"".join(_py2_pickle(k) + _py2_pickle(v) + b"s" for k, v in obj.items())
    shape = b"".join(b"I%d\n" % n for n in obj.shape)
    return (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR(I1\n(" + shape
            + b"tcnumpy\ndtype\n(" + string(obj.dtype.str[1:].encode()) + b"I0\nI1\ntR(I3\nS'<'\nNNNI-1\nI-1\nI0\ntb"
            + b"I00\n" + string(obj.tobytes()) + b"tb")


def _write_py2_pickle(path, obj):
    path.write_bytes(_py2_pickle(obj) + b".")


@pytest.fixture
def msd_root(tmp_path):
    root = tmp_path / "msd"
    split = root / "MSD_split"
    split.mkdir(parents=True)
    tags = MSD_TAGS.splitlines()
    (split / "50tagList.txt").write_text(MSD_TAGS)
    _write_py2_pickle(split / "filtered_list_train.cP", [i for i, _, _ in MSD_TRAIN])
    _write_py2_pickle(split / "filtered_list_test.cP", [i for i, _, _ in MSD_TEST])
    _write_py2_pickle(split / "MSD_id_to_7D_id.pkl", {i: d for i, d, _ in MSD_TRAIN + MSD_TEST})
    _write_py2_pickle(split / "msd_id_to_tag_vector.cP", {  # (50, 1) columns, as the published file's users read it
        i: np.array([[int(t in on)] for t in tags], dtype=np.int64) for i, _, on in MSD_TRAIN + MSD_TEST})
    for _, id7d, _ in MSD_TRAIN + MSD_TEST[:1]:  # the last test track has no clip
        _tone_file(root / id7d[0] / id7d[1] / f"{id7d}.clip.mp3", 22050, 0.5, "MP3")
    return root


def test_msd_is_read_from_the_published_split_files_and_the_7digital_folders(msd_root):
    from mart_upstream.tasks import msd

    found = msd.msd_tagging(str(msd_root), valid_from=2)
    assert len(found.tags) == 50 and found.tags[17] == "Mellow"
    assert [(t.msd_id, t.split) for t in found.tracks] == [
        (MSD_TRAIN[0][0], "train"), (MSD_TRAIN[1][0], "train"), (MSD_TRAIN[2][0], "dev"), (MSD_TRAIN[3][0], "dev"),
        (MSD_TEST[0][0], "test")]
    assert found.missing == [MSD_TEST[1][0]]
    assert found.tracks[0].path == str(msd_root / "8" / "9" / "8947470.clip.mp3")
    assert [found.tag_names(t) for t in found.tracks] == [
        ["rock", "indie"], ["jazz"], ["female vocalists", "Hip-Hop"], [], ["pop", "happy"]]  # untagged kept
    assert found.tracks[0].vector.dtype == np.float32 and found.tracks[0].vector.shape == (50,)


def test_msd_split_files_are_unpickled_without_running_code_and_checked(msd_root, tmp_path):
    from mart_upstream.errors import TaskError
    from mart_upstream.tasks import msd

    # the published cut: 201,680 train and 11,774 valid IDs of the 213,454 in filtered_list_train.cP
    train = [f"TR{k:016d}" for k in range(213454)]
    cut = msd.published_split(train, ["TRAAAFD128F92F423A"])
    assert (len(cut["train"]), len(cut["dev"]), len(cut["test"])) == (201680, 11774, 1)
    with pytest.raises(TaskError, match="has 4 IDs; the split takes the first 201680"):
        msd.msd_tagging(str(msd_root))
    split = msd_root / "MSD_split"
    marker = tmp_path / "ran"
    (split / "MSD_id_to_7D_id.pkl").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(TaskError, match=r"MSD_id_to_7D_id.pkl names os.system; .* not loaded"):
        msd.msd_tagging(str(msd_root), valid_from=2)
    assert not marker.exists()
    _write_py2_pickle(split / "MSD_id_to_7D_id.pkl", {i: d for i, d, _ in MSD_TRAIN + MSD_TEST})
    _write_py2_pickle(split / "msd_id_to_tag_vector.cP", {i: np.zeros((49, 1), np.int64) for i, _, _ in MSD_TRAIN})
    with pytest.raises(TaskError, match=rf"tag vector of {MSD_TRAIN[0][0]} in .*msd_id_to_tag_vector.cP .* 50 values"):
        msd.msd_tagging(str(msd_root), valid_from=2)
    _write_py2_pickle(split / "filtered_list_test.cP", ["TRAAAFD128F92F423A", "7000001"])
    with pytest.raises(TaskError, match=r"entry 1 of .*filtered_list_test.cP is '7000001', not an MSD track ID"):
        msd.msd_tagging(str(msd_root), valid_from=2)


def test_msd_becomes_a_hear_task(msd_root, tmp_path):
    import json

    from mart_upstream.adapters.hear.tasks import main

    assert main(["msd", str(msd_root), "--out", str(tmp_path / "tasks"), "--valid-from", "2"]) == 0
    task = tmp_path / "tasks" / "msd_top50-1.0.0-full"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert (meta["prediction_type"], meta["split_mode"], meta["sample_duration"], meta["missing_audio"]) == (
        "multilabel", "trainvaltest", 29.1, 1)
    assert len((task / "labelvocabulary.csv").read_text().splitlines()) == 1 + 50
    valid = json.loads((task / "valid.json").read_text())
    assert valid == {f"{MSD_TRAIN[2][0]}.wav": ["Hip-Hop", "female vocalists"], f"{MSD_TRAIN[3][0]}.wav": []}
    assert main(["msd", str(msd_root), "--out", str(tmp_path / "t2")]) == 2  # the published cut on 4 IDs: one line


def test_msd_is_an_s3prl_downstream(msd_root, tmp_path):
    from collections import defaultdict

    from mart_upstream.adapters.s3prl.downstream.msd_tagging.expert import DownstreamExpert

    datarc = {"root": str(msd_root), "valid_from": 2, "train_batch_size": 2, "eval_batch_size": 2, "num_workers": 0}
    expert = DownstreamExpert(8, {"datarc": datarc, "modelrc": {"probe": "linear"}}, str(tmp_path))
    assert [len(expert.datasets[s]) for s in ("train", "dev", "test")] == [2, 2, 1] and len(expert.tags) == 50
    wavs, labels, names = next(iter(expert.get_dataloader("dev")))
    assert wavs[0].ndim == 1 and wavs[0].dtype == np.float32 and len(wavs[0]) > 4000  # 16 kHz mono
    assert labels[0].shape == (50,) and labels[0].dtype == np.float32
    records = defaultdict(list)
    loss = expert("dev", [torch.randn(5, 8) for _ in wavs], labels, names, records)
    assert torch.isfinite(loss) and np.concatenate(records["labels"]).shape == (2, 50)


# -- 4. CNN-5's mel bands and pooling -------------------------------------------------------------------
def test_cnn5_reads_the_authors_96_bands_and_pools_in_ceil_mode_with_floor_an_option():
    import dataclasses

    from mart_upstream.encoders import FCN, cnn5_config

    cfg = cnn5_config()
    assert (cfg.n_mels, cfg.freq_pools, cfg.time_pools, cfg.ceil_mode) == (96, (2, 2, 2, 4, 3), (2, 2, 2, 4, 5), True)
    narrow = dict(channels=(2, 2, 2, 2, 4))  # the layout, narrow
    spec = torch.randn(1, 96, 188)  # a 3 s segment at hop 256
    ceil = FCN(dataclasses.replace(cfg, **narrow)).eval()
    floor = FCN(dataclasses.replace(cfg, ceil_mode=False, **narrow)).eval()
    assert [m.shape[1] for m in ceil.forward_maps(spec)] == [94, 47, 24, 6, 2]
    assert [m.shape[1] for m in floor.forward_maps(spec)] == [94, 47, 23, 5, 1]  # the code's grid
