"""The GPU kit on CPU: packing the pool as 16 kHz Opus, the device driver end to end with its bundle,
unpacking, and checkpoints trained elsewhere as benchmark runs."""
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from kit import ROOT, tone
from mart_upstream.benchmarks import mart_bench
from mart_upstream.benchmarks.device import pretrain, unpack
from mart_upstream.benchmarks.run import model_cards, trained_elsewhere
from mart_upstream.checkpoint import load_pretrained, read_checkpoint
from mart_upstream.errors import UsageError
from mart_upstream.models import build_model

SR_IN = 22050
POOL = {"rendered/a.wav": 3.0, "rendered/work/r0.wav": 2.0, "recorded/c.wav": 4.0}  # relative path -> seconds
WHEELS = ["soundfile-0.14.0-py2.py3-none-manylinux_2_28_x86_64.whl",
          "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", "pycparser-3.0-py3-none-any.whl"]


def _tone(seconds, freq):
    left = tone(seconds, freq, SR_IN, amplitude=0.4)
    return np.stack([left, 0.5 * left], axis=1)  # stereo, correlated channels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A pool like `mart-bench data` builds: stereo 22.05 kHz WAVs, a silent file, a groups.csv."""
    root = tmp_path_factory.mktemp("bench")
    for i, (rel, seconds) in enumerate(POOL.items()):
        path = root / "pretrain" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _tone(seconds, 440 * (i + 1)), SR_IN)
    sf.write(str(root / "pretrain" / "recorded" / "silent.wav"), np.zeros((SR_IN, 2), np.float32), SR_IN)
    (root / "pretrain" / "groups.csv").write_text("path,group\nrendered/a.wav,a\nrecorded/c.wav,c\n")
    wheels = root / "wheels"
    wheels.mkdir()
    for w in WHEELS:
        (wheels / w).write_bytes(b"PK not really a wheel")
    return root


@pytest.fixture(scope="module")
def kit(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kit") / "kit"
    assert mart_bench.main(["device-pack", "--out", str(out), "--data", str(data), "--wheels-from",
                            str(data / "wheels"), "--workers", "1"]) == 0
    return out


def test_pack_reencodes_the_pool_as_16k_mono_opus(kit, data):
    m = json.loads((kit / "manifest.json").read_text())
    assert m["format"]["codec"] == "Ogg/Opus" and m["format"]["sample_rate"] == 16000
    by_path = {f["path"]: f for f in m["files"]}
    assert sorted(by_path) == sorted(os.path.splitext(r)[0] + ".ogg" for r in POOL)
    assert [s["source"] for s in m["skipped"]] == ["recorded/silent.wav"]
    for i, (rel, seconds) in enumerate(POOL.items()):
        path = kit / "audio" / (os.path.splitext(rel)[0] + ".ogg")
        info = sf.info(str(path))
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "OGG" and info.subtype == "OPUS"
        assert info.duration == pytest.approx(seconds, abs=0.05)
        entry = by_path[os.path.splitext(rel)[0] + ".ogg"]
        assert entry["seconds"] == pytest.approx(seconds, abs=0.05) and entry["bytes"] == path.stat().st_size
        assert entry["source_rate"] == SR_IN and entry["source_channels"] == 2
        # resampled, not relabelled: the tone is still at its frequency; a seek reads the same samples
        x, sr = sf.read(str(path), dtype="float32")
        spec = np.abs(np.fft.rfft(x[4000:20000]))
        assert sr == 16000 and np.argmax(spec) == pytest.approx(440 * (i + 1), abs=3)
        part, _ = sf.read(str(path), start=8000, frames=4000, dtype="float32")
        assert np.abs(part - x[8000:12000]).max() < 0.05
    assert m["total_seconds"] == pytest.approx(sum(POOL.values()), abs=0.1)
    assert m["audio_bytes"] == sum(f["bytes"] for f in m["files"])
    kit_files = [p for p in kit.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert m["total_bytes"] == sum(p.stat().st_size for p in kit_files)
    assert (kit / "audio" / "groups.csv").read_bytes() == (data / "pretrain" / "groups.csv").read_bytes()
    assert sorted(w["file"] for w in m["wheels"]) == sorted(WHEELS)
    assert sorted(p.name for p in (kit / "wheels").iterdir()) == sorted(WHEELS)
    assert m["source"]["pool"] == str(data / "pretrain") and m["commit"]
    assert not [p for p in kit.parent.iterdir() if p.name.startswith(".tmp-")]


def test_pack_refuses_a_kit_over_the_size_limit_and_leaves_nothing(data, tmp_path, capsys):
    out = tmp_path / "kit"
    code = mart_bench.main(["device-pack", "--out", str(out), "--data", str(data), "--no-wheels", "--workers", "1",
                            "--max-mib", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and "over --max-mib 0.01" in err and "MiB" in err
    assert list(tmp_path.iterdir()) == []
    (data / "few").mkdir(exist_ok=True)
    (data / "few" / WHEELS[0]).write_bytes(b"x")
    code = mart_bench.main(["device-pack", "--out", str(out), "--data", str(data), "--wheels-from", str(data / "few")])
    assert code == 2 and "no wheel for cffi, pycparser" in capsys.readouterr().err and not out.exists()


# -- the device driver on CPU ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def devrun(kit, tmp_path_factory):
    base = tmp_path_factory.mktemp("devrun")
    run_dir, parts = base / "run", base / "parts"
    cmd = [sys.executable, "-m", "benchmarks.device.pretrain", "--kit", str(kit), "--models", "simclr", "--device", "cpu",
           "--minutes", "0.1", "--out", str(run_dir), "--bundle", str(parts), "--num-workers", "0", "--log-every", "2",
           "--override", "model.clip_samples=16000", "--override", "run.batch_size=4"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"base": base, "run": run_dir, "parts": parts, "stdout": r.stdout}


@pytest.mark.slow
def test_driver_exports_a_small_checkpoint_and_reports_the_run(devrun):
    run_dir = devrun["run"]
    state = read_checkpoint(str(run_dir / "simclr.ckpt"))
    assert state["model_name"] == "simclr" and state["step"] > 0
    # the small hand-over form: float16 weights, Adam's second moment factored, the first dropped
    assert state["handover"]["mode"] == "small" and state["optimizer"]["state"]
    assert all("exp_avg" not in st for st in state["optimizer"]["state"].values())
    assert any(v.dtype == torch.float16 for v in state["model"].values())
    assert [w["steps_to"] for w in state["pretrain"]["device_windows"]] == [state["step"]]
    assert state["pretrain"]["device_run"]["device"] == "cpu" and state["config"]["clip_samples"] == 16000
    model, cfg = load_pretrained(str(run_dir / "simclr.ckpt"))
    assert next(model.parameters()).dtype == torch.float32 and cfg.clip_samples == 16000
    summary = json.loads((run_dir / "device_run.json").read_text())
    s = summary["models"]["simclr"]
    assert s["status"] == "ok" and s["steps"] == state["step"] and s["batch_size"] == 4
    assert 0 < s["train_seconds"] <= 6 + 5 and s["clips_per_s"] > 0 and s["step_time_s"] > 0
    assert s["checkpoint"] == "simclr.ckpt" and (run_dir / "simclr" / "metrics.csv").is_file()
    assert summary["environment"]["torch"] == torch.__version__ and summary["environment"]["gpu"] is None
    assert summary["gpu_utilisation"] is None and summary["settings"]["device"] == "cpu"
    assert "data.check_silence=false" in summary["settings"]["overrides"]
    assert "simclr: " in devrun["stdout"] and "clips/s" in devrun["stdout"]


@pytest.mark.slow
def test_a_later_window_continues_the_run_from_its_handover_state(devrun, data, tmp_path):
    """device-unpack, device-pack --resume, then a second device call: the steps add up to one run."""
    back = tmp_path / "back"
    assert mart_bench.main(["device-unpack", str(devrun["parts"]), "--out", str(back)]) == 0
    kit2 = tmp_path / "kit2"
    assert mart_bench.main(["device-pack", "--out", str(kit2), "--data", str(data), "--wheels-from",
                            str(data / "wheels"), "--workers", "1", "--resume", str(back)]) == 0
    assert (kit2 / "resume" / "simclr.ckpt").read_bytes() == (back / "simclr.ckpt").read_bytes()
    first = read_checkpoint(str(back / "simclr.ckpt"))
    run2 = tmp_path / "run2"
    cmd = [sys.executable, "-m", "benchmarks.device.pretrain", "--kit", str(kit2), "--models", "simclr", "--device", "cpu",
           "--minutes", "0.1", "--out", str(run2), "--num-workers", "0", "--log-every", "2",
           "--override", "model.clip_samples=16000", "--override", "run.batch_size=4"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    second = read_checkpoint(str(run2 / "simclr.ckpt"))
    assert second["step"] > first["step"]
    windows = second["pretrain"]["device_windows"]
    assert [(w["steps_from"], w["steps_to"]) for w in windows] == [(0, first["step"]), (first["step"], second["step"])]
    s = json.loads((run2 / "device_run.json").read_text())["models"]["simclr"]
    assert s["resumed_from_step"] == first["step"] and s["window_steps"] == second["step"] - first["step"]
    with open(run2 / "simclr" / "metrics.csv") as f:
        assert int(next(csv.DictReader(f))["step"]) > first["step"]  # the second window logs its own steps
    # a file there that is not a run to continue is named
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copyfile(os.path.join(ROOT, "mart_upstream", "checkpoints", "simclr.ckpt"), bad / "simclr.ckpt")  # weights only
    cmd[cmd.index("--out") + 1] = str(tmp_path / "run3")
    r = subprocess.run(cmd + ["--resume-from", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "is not a run of simclr to continue" in r.stderr


def test_bundle_parts_come_back_and_unpack_to_the_run(devrun, tmp_path):
    files = sorted(os.listdir(devrun["parts"]))
    parts = [p for p in files if p != "device_run.json"]
    assert len(files) == len(parts) + 1 <= 8
    assert all(p.startswith("run.tar.part") and (devrun["parts"] / p).stat().st_size <= 15 * 2**20 for p in parts)
    bundle = json.loads((devrun["parts"] / "device_run.json").read_text())["bundle"]
    assert bundle["parts"] == parts and bundle["tar_bytes"] == sum((devrun["parts"] / p).stat().st_size for p in parts)
    out = tmp_path / "back"
    assert mart_bench.main(["device-unpack", str(devrun["parts"]), "--out", str(out)]) == 0
    assert (out / "simclr.ckpt").read_bytes() == (devrun["run"] / "simclr.ckpt").read_bytes()
    assert (out / "simclr" / "metrics.csv").is_file() and (out / "simclr" / "pretrain.log").is_file()
    assert (out / "device_run.json").is_file()
    assert not (out / "simclr" / "last.ckpt").exists() and not (out / "simclr" / "data_index.json").exists()


def test_unpack_refuses_missing_damaged_and_unsafe_parts(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / "m").mkdir(parents=True)
    (run_dir / "m" / "metrics.csv").write_bytes(os.urandom(5000))
    (run_dir / "m" / "last.ckpt").write_bytes(b"left out")
    (run_dir / "device_run.json").write_text("{}")
    monkeypatch.setattr(pretrain, "PART_BYTES", 4096)
    parts = tmp_path / "parts"
    b = pretrain.bundle(str(run_dir), str(parts), str(run_dir / "device_run.json"))
    assert len(b["parts"]) >= 3
    monkeypatch.setattr(pretrain, "PART_BYTES", 1024)  # now more than 8 files: refused
    with pytest.raises(UsageError, match="more than the 8 files"):
        pretrain.bundle(str(run_dir), str(tmp_path / "many"), str(run_dir / "device_run.json"))
    assert os.listdir(tmp_path / "many") == ["device_run.json"]  # the numbers still come back
    data = bytearray((parts / "run.tar.part01").read_bytes())
    data[100] ^= 0xFF
    (parts / "run.tar.part01").write_bytes(bytes(data))
    assert mart_bench.main(["device-unpack", str(parts), "--out", str(tmp_path / "o")]) == 2
    assert "do not match the sha256" in capsys.readouterr().err and not (tmp_path / "o").exists()
    (parts / "run.tar.part01").unlink()
    with pytest.raises(UsageError, match="run.tar.part01 missing"):
        unpack.unpack(str(parts), str(tmp_path / "o"))
    evil = tmp_path / "evil"
    evil.mkdir()
    with tarfile.open(evil / "run.tar.part00", "w") as tar:
        tar.add(str(run_dir / "device_run.json"), arcname="../outside.json")
    with pytest.raises(UsageError, match="unsafe path"):
        unpack.unpack(str(evil), str(tmp_path / "o"))
    assert not (tmp_path / "outside.json").exists() and not (tmp_path / "o").exists()


def test_cuda_requested_without_cuda_is_one_clear_error(kit, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pretrain.main(["--kit", str(kit), "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "CUDA was requested (--device cuda) but torch.cuda.is_available() is False" in capsys.readouterr().err


def test_device_checkpoints_become_benchmark_runs_with_their_own_random_init(devrun, tmp_path):
    (run,) = trained_elsewhere.runs_from(str(devrun["run"]), "abc")
    assert {"model", "seed", "checkpoint", "steps", "train_minutes", "batch_size", "budget", "commit",
            "wall_s"} <= set(run)
    assert run["model"] == "simclr" and run["batch_size"] == 4 and run["device"] == "cpu" and run["steps"] > 0
    assert run["throughput"]["clips_per_s"] > 0 and run["config"] is not None  # clip_samples was overridden
    path = trained_elsewhere.random_init(run, str(tmp_path))
    init = read_checkpoint(path)
    assert init["step"] == 0 and init["config"] == read_checkpoint(run["checkpoint"])["config"]
    torch.manual_seed(run["seed"])
    ref = build_model("simclr", init["config"]).state_dict()
    assert all(torch.equal(ref[k], v) for k, v in init["model"].items())
    # the exported card says where it trained
    entry = {"style": {"top1_acc": 0.5, "mAP": 0.4}, "covers": {"map": 0.3, "p_at_10": 0.2, "mr1": 3.0}}
    gpu = dict(run, device="cuda", gpu="NVIDIA H200", entry=entry,
               throughput={"clips_per_s": 812.0, "step_time_s": 0.059, "peak_mem_gb": 12.5, "models_together": 3})
    model_cards.export({"simclr": gpu}, str(tmp_path / "ckpts"), {"data": "d", "commit": "c", "device": "cpu"})
    text = (tmp_path / "ckpts" / "simclr.md").read_text()
    assert "min of training on NVIDIA H200 (cuda)" in text and "812 clips/s" in text and "on CPU" not in text
    assert "--config" not in text and "3 models trained at once" in text


def test_a_kit_split_in_parts_is_joined_on_the_device_and_a_missing_part_is_named(data, tmp_path):
    """--split: KIT, KIT.part2, ... each under --max-mib (carried in successive calls); the driver joins them."""
    import shutil as sh

    kit = tmp_path / "kit"
    limit = 0.012  # MiB: the fixture's files need at least two parts
    assert mart_bench.main(["device-pack", "--out", str(kit), "--data", str(data), "--wheels-from",
                            str(data / "wheels"), "--workers", "1", "--split", "--max-mib", str(limit)]) == 0
    m = json.loads((kit / "manifest.json").read_text())
    assert m["parts"] >= 2 and {e["part"] for e in m["files"]} == set(range(1, m["parts"] + 1))
    folders = [kit] + [tmp_path / f"kit.part{k}" for k in range(2, m["parts"] + 1)]
    for k, f in enumerate(folders, 1):
        assert sum(p.stat().st_size for p in f.rglob("*") if p.is_file()) <= limit * 2**20
        if k > 1:
            assert json.loads((f / "part.json").read_text())["part"] == k
    # on the device: each part arrived as its own folder beside the kit
    device = tmp_path / "device"
    device.mkdir()
    for f in folders[:-1]:
        sh.copytree(f, device / f.name)
    with pytest.raises(UsageError, match=f"from part\\(s\\) kit.part{m['parts']}: carry every part"):
        pretrain.join_parts(str(device / "kit"))
    sh.copytree(folders[-1], device / folders[-1].name)
    assert pretrain.join_parts(str(device / "kit")) == m["parts"]
    for e in m["files"]:
        assert (device / "kit" / "audio" / e["path"]).stat().st_size == e["bytes"]
    assert pretrain.join_parts(str(device / "kit")) == m["parts"]  # a second call finds everything joined
    # packing again in one part removes the parts of the earlier kit
    assert mart_bench.main(["device-pack", "--out", str(kit), "--data", str(data), "--wheels-from",
                            str(data / "wheels"), "--workers", "1"]) == 0
    assert not (tmp_path / "kit.part2").exists()
