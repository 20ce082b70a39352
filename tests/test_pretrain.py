"""The pretraining entry point end to end on CPU: runs, resume, DDP, checkpoints, bad input."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from kit import ROOT, tiny_overrides
from mart_upstream.checkpoint import FORMAT_VERSION, CheckpointError, load_pretrained, read_checkpoint
from mart_upstream.embedding import clip_embeddings
from mart_upstream.train.cli import main
from mart_upstream.train.demo import make_synthetic_dataset

FAST = ["augment.p_pitch=0", "data.num_workers=0", "run.log_every=1"]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    make_synthetic_dataset(str(d), n_files=6, seconds=2.0, sample_rate=16000, seed=0, progress=False)
    return str(d)


def run(model, data, out, *extra):
    return main(["--model", model, "--data", data, "--out", str(out), "--batch-size", "4",
                 *extra, *FAST, *tiny_overrides(model)])


@pytest.mark.parametrize("model", ["mart", "pemr", "simclr"])
def test_pretrain_writes_a_weights_only_checkpoint_and_metrics(model, audio_dir, tmp_path):
    assert run(model, audio_dir, tmp_path, "--steps", "3") == 0
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["step"] == 3 and state["model_name"] == model and state["format_version"] == FORMAT_VERSION
    assert state["optimizer"] is not None and state["config"]["clip_samples"] > 0
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["loss"])) and float(r["clips_per_s"]) > 0 for r in rows)
    # learning diagnostics beside the loss
    for r in rows:
        assert -1.0 <= float(r["pos_cos"]) <= 1.0 and 0.0 <= float(r["pair_top1"]) <= 1.0
        assert 0.0 < float(r["emb_rank"]) <= 4.0 and float(r["emb_std"]) >= 0.0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_bf16_autocast_path_and_kept_steps(audio_dir, tmp_path):
    """The CUDA run's bf16 autocast path, on the CPU; weights kept at chosen steps for learning curves."""
    assert run("mart", audio_dir, tmp_path, "--steps", "3", "--keep-steps", "1,2", "run.bf16_cpu=true") == 0
    state = read_checkpoint(str(tmp_path / "last.ckpt"))
    assert state["pretrain"]["settings"]["run"]["bf16_cpu"] == "true"
    for step in (1, 2):
        kept = read_checkpoint(str(tmp_path / f"step_{step}.ckpt"))
        assert kept["step"] == step and kept["optimizer"] is None
    assert not (tmp_path / "step_3.ckpt").exists()
    w1 = read_checkpoint(str(tmp_path / "step_1.ckpt"))["model"]
    assert any(not torch.equal(w1[k], state["model"][k]) for k in w1 if w1[k].is_floating_point())


@pytest.mark.parametrize("model", ["cnn5_infonce", "cnn5_multilevel", "melcpc", "byol", "moco"])
def test_bf16_autocast_trains_every_strategies_and_momentum_model(model, audio_dir, tmp_path):
    """bf16 autocast (the CUDA path, here on the CPU): steps that update the weights, all finite, and
    float32 weights and buffers in the checkpoint (momentum copies, MoCo's queue, input statistics)."""
    assert run(model, audio_dir, tmp_path, "--steps", "2", "run.bf16_cpu=true") == 0
    state = read_checkpoint(str(tmp_path / "last.ckpt"))
    assert state["step"] == 2 and state["pretrain"]["bad_batches"] == 0
    floats = {k: v for k, v in state["model"].items() if v.is_floating_point()}
    assert all(torch.isfinite(v).all() for v in floats.values())
    assert all(v.dtype in (torch.float32, torch.float64) for v in floats.values())


def test_loader_returns_frozen_eval_encoder(audio_dir, tmp_path):
    run("mart", audio_dir, tmp_path, "--steps", "1")
    model, cfg = load_pretrained(str(tmp_path / "last.ckpt"))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert cfg.clip_samples == 8000 and model.model_name == "mart"
    emb = clip_embeddings(model, torch.randn(3, 20000))
    assert emb.shape == (3, model.embedding_dim) and torch.isfinite(emb).all()
    # the same audio gives the same embedding (eval mode, no dropout)
    x = torch.randn(1, 9000)
    assert torch.equal(clip_embeddings(model, x), clip_embeddings(model, x))


def _weights(path):
    return read_checkpoint(str(path))["model"]


@pytest.mark.parametrize("model", ["mart", "pemr"])
def test_resume_continues_exactly(model, audio_dir, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(model, audio_dir, full, "--steps", "4") == 0
    assert run(model, audio_dir, part, "--steps", "2") == 0
    assert run(model, audio_dir, part, "--steps", "4", "--resume") == 0
    a, b = _weights(full / "last.ckpt"), _weights(part / "last.ckpt")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    with open(part / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_killed_run_resumes_from_its_last_checkpoint(audio_dir, tmp_path):
    cmd = [sys.executable, "-m", "mart_upstream.train", "--model", "simclr", "--data", audio_dir,
           "--out", str(tmp_path), "--steps", "100000", "--batch-size", "2", "--ckpt-every", "2",
           *FAST, *tiny_overrides("simclr")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "last.ckpt"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (ckpt.exists() and read_checkpoint(str(ckpt))["step"] >= 4):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = read_checkpoint(str(ckpt))["step"]  # the checkpoint is complete despite the kill
    assert killed_at >= 4 and killed_at % 2 == 0
    assert main(["--model", "simclr", "--data", audio_dir, "--out", str(tmp_path), "--steps", str(killed_at + 2),
                 "--batch-size", "2", "--resume", *FAST, *tiny_overrides("simclr")]) == 0
    assert read_checkpoint(str(ckpt))["step"] == killed_at + 2
    with open(tmp_path / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == killed_at + 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_interrupted_run_saves_a_checkpoint_and_resume_continues_from_it(sig, audio_dir, tmp_path):
    """Ctrl-C (or SIGTERM) mid-run: a checkpoint at the step reached (ckpt_every is far away), exit 130, a line
    naming the checkpoint; --resume continues from that step. Data workers ignore the terminal's SIGINT."""
    cmd = [sys.executable, "-m", "mart_upstream.train", "--model", "simclr", "--data", audio_dir,
           "--out", str(tmp_path), "--steps", "100000", "--batch-size", "2", "--ckpt-every", "100000",
           *FAST, "data.num_workers=1", *tiny_overrides("simclr")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        # the time-per-step line comes after the 4th step: the loop is running
        while time.time() < deadline and proc.poll() is None and not any("s per step" in ln for ln in lines):
            time.sleep(0.1)
        os.killpg(proc.pid, sig)  # the whole group, workers included, as Ctrl-C does
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines)
    metrics = tmp_path / "metrics.csv"
    assert proc.returncode == 130, err[-2000:]
    stopped_at = read_checkpoint(str(tmp_path / "last.ckpt"))["step"]
    assert stopped_at >= 4
    assert f"stopped by {sig.name} at step {stopped_at}; checkpoint {tmp_path / 'last.ckpt'}" in err
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    assert main(["--model", "simclr", "--data", audio_dir, "--out", str(tmp_path), "--steps", str(stopped_at + 2),
                 "--batch-size", "2", "--resume", *FAST, *tiny_overrides("simclr")]) == 0
    assert read_checkpoint(str(tmp_path / "last.ckpt"))["step"] == stopped_at + 2
    with open(metrics) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, stopped_at + 3))


def test_resume_without_a_checkpoint_says_it_starts_fresh(audio_dir, tmp_path, capsys):
    assert run("simclr", audio_dir, tmp_path, "--steps", "1", "--resume") == 0
    assert f"--resume: no checkpoint at {tmp_path / 'last.ckpt'} yet; starting a new run from step 0" \
        in capsys.readouterr().err


def test_cpu_run_of_the_paper_config_points_at_the_cpu_config(audio_dir, tmp_path, capsys):
    """The hint names the packaged CPU settings, which exist and build; a CPU config gives no hint."""
    from mart_upstream.config import cpu_config_path, load_file
    from mart_upstream.models import build_model

    assert main(["--model", "simclr", "--data", audio_dir, "--out", str(tmp_path / "a"), "--steps", "1",
                 "--batch-size", "2", "--device", "cpu", "model.clip_samples=16000", *FAST]) == 0
    assert "no CUDA device" not in capsys.readouterr().err  # not the paper's configuration
    for name in ("mart", "pemr", "simclr"):
        build_model(name, load_file(cpu_config_path(name))["model"])
    from mart_upstream.train.cli import build_parser
    from mart_upstream.train.console import cpu_hint
    from mart_upstream.train.settings import build_settings

    args = build_parser().parse_args(["--model", "mart", "--out", str(tmp_path)])
    model_cfg, settings = build_settings(args)
    cpu_hint(args, model_cfg, settings.run)
    assert f"add --config cpu ({cpu_config_path('mart')})" in capsys.readouterr().err
    args = build_parser().parse_args(["--model", "mart", "--out", str(tmp_path), "--config", "cpu"])
    model_cfg, settings = build_settings(args)
    assert settings.run.batch_size == 32 and model_cfg.frontend.n_mels == 64
    cpu_hint(args, model_cfg, settings.run)
    assert "no CUDA device" not in capsys.readouterr().err


def test_settings_layers_defaults_file_command_line_then_the_resumed_run(tmp_path, capsys):
    """defaults < --config file < key=value overrides < flags < a resumed run's own settings, except the
    budget and how the run is carried out; what a resumed run ignores is named."""
    from mart_upstream.config import to_dict
    from mart_upstream.train.cli import build_parser
    from mart_upstream.train.settings import build_settings

    cfg = tmp_path / "run.yaml"
    cfg.write_text("model:\n  temperature: 0.2\nrun:\n  steps: 7\n  seed: 3\n  log_every: 5\n")
    args = build_parser().parse_args(["--model", "simclr", "--out", str(tmp_path), "--config", str(cfg),
                                      "--steps", "9", "--num-workers", "1", "run.steps=8", "run.seed=4",
                                      "--keep-steps", "5,8"])
    model_cfg, settings = build_settings(args)
    assert (settings.run.steps, settings.run.seed, settings.run.log_every, settings.run.batch_size) == (9, 4, 5, 48)
    assert model_cfg.temperature == 0.2 and settings.data.num_workers == 1
    stored = to_dict(settings)
    stored["run"].update(seed=11, steps=2, batch_size=6)
    stored["data"]["num_workers"] = 0
    stored["run"]["keep_steps"] = [1]
    resumed = {"config": dict(to_dict(model_cfg), temperature=0.3), "pretrain": {"settings": stored}}
    model_cfg, settings = build_settings(args, resumed)
    assert model_cfg.temperature == 0.3 and (settings.run.seed, settings.run.batch_size) == (11, 6)
    assert settings.run.steps == 9 and settings.data.num_workers == 1 and settings.run.log_every == 5
    assert tuple(settings.run.keep_steps) == (5, 8)  # a continued run can keep more curve points
    err = capsys.readouterr().err
    assert "--resume continues with the settings the run started with; ignored: " in err
    assert "model.temperature=0.2 (the run's: 0.3)" in err and "run.seed=4 (the run's: 11)" in err
    assert "run.batch_size=48 (the run's: 6)" in err and "run.steps" not in err and "num_workers" not in err
    assert "keep_steps" not in err


def _torchrun(processes, data, out, steps, model="simclr", *extra):
    """``mart-pretrain`` of a tiny model (default simclr) under torchrun (gloo on CPU) -> its checkpoint."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "mart_upstream.train", "--model", model, "--data", data, "--out", str(out),
           "--steps", str(steps), "--batch-size", "2", *FAST, *tiny_overrides(model), *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return read_checkpoint(str(out / "last.ckpt"))


@pytest.mark.slow
def test_two_process_ddp_on_cpu_finishes(audio_dir, tmp_path):
    state = _torchrun(2, audio_dir, tmp_path, 3)
    assert state["step"] == 3 and state["pretrain"]["world_size"] == 2 and state["pretrain"]["ddp"]


@pytest.mark.slow
def test_two_process_moco_enqueues_the_keys_of_every_rank(audio_dir, tmp_path):
    """MoCo under DDP: each step's keys are gathered from both ranks into the queue (MoCo §3.1), and the
    momentum encoder follows the query encoder on every rank."""
    state = _torchrun(2, audio_dir, tmp_path, 3, "moco", "model.queue_size=64")
    assert state["step"] == 3 and state["pretrain"]["world_size"] == 2
    assert int(state["model"]["queue_ptr"]) == 3 * 2 * 2  # steps x batch per rank x ranks
    weights = state["model"]
    assert not torch.equal(weights["key_encoder.blocks.0.0.weight"], weights["encoder.blocks.0.0.weight"])


@pytest.mark.slow
def test_two_process_adjacent_strategy_trains_the_multilevel_model(audio_dir, tmp_path):
    state = _torchrun(2, audio_dir, tmp_path, 2, "cnn5_multilevel", "--strategy", "adjacent")
    assert state["step"] == 2 and state["pretrain"]["ddp"] and state["config"]["strategy"] == "adjacent"


@pytest.mark.slow
def test_torchrun_with_one_process_still_runs_ddp(audio_dir, tmp_path):
    state = _torchrun(1, audio_dir, tmp_path, 2)
    assert state["pretrain"]["world_size"] == 1 and state["pretrain"]["ddp"]


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("simclr", str(tmp_path / "empty"), tmp_path / "out", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "error" in err and "empty" in err
    assert not (tmp_path / "out" / "last.ckpt").exists()


def test_silent_and_short_files_are_skipped_then_error_when_nothing_left(tmp_path, capsys, caplog):
    d = tmp_path / "bad"
    d.mkdir()
    sf.write(d / "silent.wav", np.zeros(32000, dtype=np.float32), 16000)
    sf.write(d / "short.wav", (0.3 * np.random.randn(800)).astype(np.float32), 16000)
    assert run("simclr", str(d), tmp_path / "out", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "mart-pretrain: error:" in err and str(d) in err
    logged = caplog.text
    assert "silent.wav" in logged and "short.wav" in logged


def test_cuda_requested_without_gpu_is_a_clear_error(audio_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert run("simclr", audio_dir, tmp_path, "--steps", "1", "--device", "cuda") == 2
    assert "CUDA was requested" in capsys.readouterr().err


def test_unknown_override_is_a_clear_error(audio_dir, tmp_path, capsys):
    assert run("simclr", audio_dir, tmp_path, "--steps", "1", "model.nonsense=3") == 2
    assert "nonsense" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(str(tmp_path / "nope.ckpt"))
