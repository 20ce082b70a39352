"""mart-bench speed: the SampleCNN reference, FLOP counting, the flag logic and the command's outputs.
No timing assertions: speed goals belong to the benchmark's output."""
import json
import os
import subprocess
import sys

import pytest
import torch

from mart_upstream.benchmarks.speed.lengths import checks
from mart_upstream.benchmarks.speed.measure import count_flops
from mart_upstream.benchmarks.speed.samplecnn import SampleCNN, check_size, num_parameters
from mart_upstream.benchmarks.speed.subjects import build, computed_samples, embed_call
from mart_upstream.encoders import FCN, fcn4_config
from mart_upstream.frontend import FrontendConfig, LogMel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(os.path.dirname(sys.executable), "mart-bench")


def speed_command():
    return [BENCH, "speed"]


def test_samplecnn_is_clmr_sized_and_shaped():
    torch.manual_seed(0)
    m = SampleCNN().eval()
    n = num_parameters(m)
    assert n == pytest.approx(2.4e6, rel=0.05) and check_size(m) == n
    with torch.no_grad():
        assert m(torch.randn(2, 59049)).shape == (2, 512)
        assert m.window_embeddings(torch.randn(1, 100000)).shape == (1, 2, 512)  # 2 windows, last padded
        assert m.clip_embeddings(torch.randn(3, 59049)).shape == (3, 512)
    with pytest.raises(ValueError):
        m(torch.randn(1, 16000))


def test_fcn4_flops_are_positive_and_linear_in_length():
    torch.manual_seed(0)
    front, enc = LogMel(FrontendConfig()).eval(), FCN(fcn4_config()).eval()
    fcn4 = lambda s: count_flops(lambda: enc(front(torch.randn(1, int(s * 16000)))))  # noqa: E731
    a, b = fcn4(2.0), fcn4(4.0)
    assert a > 0 and b / a == pytest.approx(2.0, rel=0.1)


def test_flops_of_the_embedding_path_grow_with_whole_windows():
    model = build("simclr")
    fn = embed_call(model, "clip")
    w = model.clip_samples
    a, b = (count_flops(lambda: fn(torch.randn(1, k * w))) for k in (1, 2))
    assert a > 0 and b / a == pytest.approx(2.0, rel=0.1)
    assert computed_samples(model, "clip", w + 1) == 2 * w


def _row(seconds, per_s, working):
    return {"model": "m", "path": "frames", "seconds": seconds, "time_per_audio_s": per_s,
            "working_mb": working, "peak_growth_mb": working + seconds}


def test_linear_and_flat_flags():
    ok = checks([_row(10, 3.0, 100), _row(60, 1.0, 100), _row(600, 1.1, 110), _row(3600, 1.2, 115)], 1.5, 0.2, 60)
    assert ok[0]["linear"] and not ok[0]["linear_all"] and ok[0]["flat"] and ok[0]["compared"] == [600, 3600]
    bad = checks([_row(60, 1.0, 100), _row(600, 2.0, 100), _row(3600, 1.0, 300)], 1.5, 0.2, 60)
    assert not bad[0]["linear"] and not bad[0]["flat"]


@pytest.mark.slow
def test_speed_command_writes_json_and_tables(tmp_path):
    cmd = speed_command() + ["--out", str(tmp_path), "--quick", "--tiny", "--models", "simclr,samplecnn",
                             "--lengths", "2,4", "--repeats", "1", "--batch", "2", "--clip-seconds", "2",
                             "--train-steps", "1", "--train-warmup", "0", "--matmul-size", "512"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "speed.json").read_text())
    assert {"machine", "settings", "matmul", "throughput", "lengths", "length_checks", "training"} <= set(res)
    m = res["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] == torch.__version__ and m["device"] == "cpu"
    assert m["torch_threads"] >= 1
    assert res["matmul"]["gflops"] > 0
    assert res["samplecnn_params"] == pytest.approx(2.4e6, rel=0.05)
    thr = res["throughput"]
    assert {(t["model"], t["path"]) for t in thr} == {(a, b) for a in ("simclr", "samplecnn")
                                                      for b in ("frames", "clip")}
    for t in thr:
        assert t["gflop_per_audio_s"] > 0 and t["params"] > 0
        for b in ("b1", "b2"):
            assert t[b]["x_realtime"] > 0 and t[b]["achieved_gflops"] > 0 and t[b]["matmul_fraction"] > 0
    lens = res["lengths"]
    assert sorted((x["path"], x["seconds"]) for x in lens) == [("clip", 2), ("clip", 4), ("frames", 2),
                                                              ("frames", 4)]
    assert all(x["model"] == "simclr" and x["time_s"] > 0 and x["peak_growth_mb"] >= 0 for x in lens)
    assert {c["path"] for c in res["length_checks"]} == {"frames", "clip"}
    assert all(isinstance(c["linear"], bool) and isinstance(c["flat"], bool) for c in res["length_checks"])
    (tr,) = res["training"]
    assert tr["model"] == "simclr" and tr["batch"] == 2 and tr["clips_per_s"] > 0
    md = (tmp_path / "speed.md").read_text()
    assert "| samplecnn | clip |" in md and "| simclr | frames | 4 s |" in md and md in r.stdout
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = tmp_path / "out"
    r = subprocess.run(speed_command() + ["--out", str(out), "--device", "cuda"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "CUDA" in lines[0], r.stderr
    assert not out.exists()
