"""mart-bench speed: the comparison SampleCNN, FLOP counting and the benchmark's output (no timing asserts)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.speedbench import SampleCNN, build, flops_per_second_of_audio

BENCH = os.path.join(os.path.dirname(sys.executable), "mart-bench")


def test_samplecnn_is_clmr_sized():
    m = SampleCNN()
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(2.4e6, rel=0.05)
    assert m(torch.zeros(2, 59049)).shape == (2, 512)
    assert m.embed(torch.zeros(1, 100000)).shape == (1, 512)


def test_flops_grow_linearly_with_audio():
    m = build("simclr", "cpu")
    w = m.clip_samples / 16000  # whole windows, so no padding enters the count
    a, b = flops_per_second_of_audio(m, "cpu", 2 * w), flops_per_second_of_audio(m, "cpu", 4 * w)
    assert a > 0 and b == pytest.approx(a, rel=0.1)  # per second of audio: constant


def test_speed_command_writes_json_and_table(tmp_path):
    r = subprocess.run([BENCH, "speed", "--out", str(tmp_path), "--models", "simclr,samplecnn", "--lengths", "2,4",
                        "--repeats", "1", "--batch", "2", "--clip-seconds", "4", "--train-steps", "1",
                        "--train-batch", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "speed.json").read_text())
    assert res["matmul_gflops"] > 0
    assert {t["model"] for t in res["throughput"]} == {"simclr", "samplecnn"}
    assert all(t["clip_b2_x_realtime"] > 0 for t in res["throughput"])
    assert len(res["lengths"]) == 2 * 2 + 2 and all(x["time_s"] > 0 for x in res["lengths"])
    assert [p["config"] for p in res["pretrain"]] == ["paper", "cpu"]
    assert "| samplecnn |" in (tmp_path / "speed.md").read_text()


def test_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = subprocess.run([BENCH, "speed", "--out", str(tmp_path), "--device", "cuda"], capture_output=True, text=True)
    assert r.returncode == 2 and "torch sees no CUDA device" in r.stderr and not os.listdir(tmp_path)
