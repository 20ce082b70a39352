"""The GPU profile script (``benchmarks.device.profile``) run on the CPU on tiny shapes: the same code path
(the real training step under torch.profiler), the report's structure, and CUDA asked for without CUDA
as one clear error. No timing assertions."""
import json
from types import SimpleNamespace

import pytest
import torch

from mart_upstream.benchmarks.device import profile

CUDA, CPU = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU


def test_profile_of_the_real_step_on_the_cpu_writes_the_report(tmp_path, monkeypatch):
    from mart_upstream.augment import AugmentationChain

    augmented = []
    real = AugmentationChain.forward
    monkeypatch.setattr(AugmentationChain, "forward", lambda self, x, g=None, **kw: augmented.append(1) or real(self, x, g, **kw))
    out = tmp_path / "prof"
    assert profile.main(["--out", str(out), "--device", "cpu", "--tiny", "--models", "moco", "--batches", "2",
                         "--variants", "eager,channels-last", "--warmup", "1", "--steps", "2"]) == 0
    assert len(augmented) == 2 * 3  # warm-up and profiled steps of both variants go through StepLoop
    rep = json.loads((out / "profile.json").read_text())
    assert rep["device"] == "cpu" and [(r["model"], r["variant"]) for r in rep["runs"]] == \
        [("moco", "eager"), ("moco", "channels-last")]
    for r in rep["runs"]:
        assert r["batch"] == 2 and r["steps"] == 2 and r["step_s"] > 0 and r["clips_per_s"] > 0
        assert r["timeline"].startswith("cpu") and r["kernels_per_step"] > 10 and r["distinct_kernels"] > 5
        assert 0 < len(r["top_kernels"]) <= profile.TOP
        k = r["top_kernels"][0]
        assert set(k) == {"name", "calls_per_step", "ms_per_step", "share"} and 0 < k["share"] <= 1
        assert any("conv" in t["name"] for t in r["top_kernels"])  # forward and backward were profiled
        g = r["host_gaps"]
        assert 0 <= g["idle_fraction"] < 1 and len(g["largest_us"]) <= profile.GAPS and g["window_ms"] > 0
    md = (out / "profile.md").read_text()
    assert "| moco | 2 | eager |" in md and "top kernels" in md


def test_gaps_and_kernels_of_a_cuda_timeline():
    """The CUDA branch of the analysis on a synthetic timeline: 2 steps, kernels 0-10, 5-20 (overlapping),
    30-40, 100-150 us in a 200 us window: busy 20 + 10 + 50 us, gaps 10 and 60 us."""
    def kernel(name, start, end):
        return SimpleNamespace(name=name, device_type=CUDA, is_async=False, cpu_parent=None,
                               time_range=SimpleNamespace(start=start, end=end, elapsed_us=lambda: end - start))

    events = [kernel("gemm", 0, 10), kernel("gemm", 5, 20), kernel("relu", 30, 40), kernel("gemm", 100, 150),
              SimpleNamespace(name="aten::mm", device_type=CPU, is_async=False, cpu_parent=None,
                              self_cpu_time_total=500.0,
                              time_range=SimpleNamespace(start=0, end=200, elapsed_us=lambda: 200))]
    r = profile.analyse(events, steps=2, window_us=200.0, cuda=True)
    assert r["kernels_per_step"] == 2 and r["distinct_kernels"] == 2 and r["kernel_ms_per_step"] == pytest.approx(0.04)
    assert r["host_gaps"]["idle_fraction"] == pytest.approx(1 - 80 / 200)
    assert r["host_gaps"]["largest_us"] == [60, 10] and r["host_gaps"]["gaps_per_step"] == 1
    assert [k["name"] for k in r["top_kernels"]] == ["gemm", "relu"]
    assert r["top_kernels"][0]["share"] == pytest.approx(75 / 85)


def test_cuda_without_cuda_and_bad_settings_are_one_clear_error(tmp_path, capsys):
    if not torch.cuda.is_available():
        assert profile.main(["--out", str(tmp_path / "a"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "torch.cuda.is_available() is False" in err and "--device cpu" in err
        assert not (tmp_path / "a").exists()
    for args, says in ((["--variants", "turbo"], "unknown variant"), (["--models", "nope"], "unknown model"),
                       (["--batches", "x"], "--batches"), (["--variants", "compile", "--warmup", "0"], "--warmup")):
        assert profile.main(["--out", str(tmp_path / "b"), "--device", "cpu"] + args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
