"""mart-bench speed: the SampleCNN reference, FLOP counting, the flag logic and the command's outputs.
No timing assertions: speed goals belong to the benchmark's output."""
import ast
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from mart_upstream.benchmarks.speed.isolate import run_isolated
from mart_upstream.benchmarks.speed.lengths import checks
from mart_upstream.benchmarks.speed.measure import conv_gflops, count_flops
from mart_upstream.benchmarks.speed.samplecnn import SampleCNN, check_size, num_parameters
from mart_upstream.benchmarks.speed.subjects import build, computed_samples, embed_call, prepare, variants_of
from mart_upstream.benchmarks.speed.throughput import relate
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
    assert res["conv"]["gflops"] > 0
    thr = res["throughput"]
    assert {(t["model"], t["path"]) for t in thr} == {(a, b) for a in ("simclr", "samplecnn")
                                                      for b in ("frames", "clip")}
    onnx = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnxscript") is not None
    expected = {("simclr", v) for v in ("plain", "fast") + (("onnx",) if onnx else ())}
    assert {(t["model"], t["variant"]) for t in thr if "error" not in t} == expected | {("samplecnn", "plain"),
                                                                                      ("samplecnn", "fast")}
    assert all("pip install" in t["error"] for t in thr if "error" in t) and (onnx or any("error" in t for t in thr))
    for t in (t for t in thr if "error" not in t):
        assert t["gflop_per_audio_s"] > 0 and t["params"] > 0
        for b in ("b1", "b2"):
            assert t[b]["x_realtime"] > 0 and t[b]["achieved_gflops"] > 0 and t[b]["matmul_fraction"] > 0
            assert t[b]["conv_fraction"] > 0 and t[b]["vs_plain"] > 0 and t[b]["vs_samplecnn"] > 0
    lens = res["lengths"]
    assert sorted((x["path"], x["seconds"]) for x in lens) == [("clip", 2), ("clip", 4), ("frames", 2),
                                                              ("frames", 4)]
    assert all(x["model"] == "simclr" and x["time_s"] > 0 and x["peak_growth_mb"] >= 0 for x in lens)
    assert all(x["variant"] == "fast" for x in lens)  # the default: what the embedding tools run
    assert {c["path"] for c in res["length_checks"]} == {"frames", "clip"}
    assert all(isinstance(c["linear"], bool) and isinstance(c["flat"], bool) for c in res["length_checks"])
    # the real training step (StepLoop) and, beside it, the bare forward-backward loop measured before
    assert sorted(t["loop"] for t in res["training"]) == ["bare", "steploop"]
    for tr in res["training"]:
        assert tr["model"] == "simclr" and tr["batch"] == 2 and tr["clips_per_s"] > 0
    md = (tmp_path / "speed.md").read_text()
    assert "| samplecnn | clip |" in md and "| simclr | frames | fast | 4 s |" in md and md in r.stdout
    assert "| simclr | clip | fast |" in md and "vs SampleCNN" in md
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_variants_compute_the_same_embeddings():
    model = build("simclr", tiny=True)
    wav = 0.1 * torch.randn(2, 9000)
    fast = prepare(model, "fast")
    assert fast is not model and prepare(model, "plain") is model
    for path in ("clip", "frames"):
        a, b = embed_call(model, path)(wav), embed_call(fast, path)(wav)
        for x, y in zip(a if path == "frames" else [a], b if path == "frames" else [b]):
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-4 * float(x.abs().max()))
    ref = build("samplecnn")
    with torch.no_grad():
        x = torch.randn(1, 59049)
        assert torch.allclose(ref(x), prepare(ref, "fast")(x), atol=1e-4)
    assert variants_of("samplecnn", ["plain", "fast", "onnx"]) == ["plain", "fast"]
    assert variants_of("mart", ["onnx", "plain"]) == ["plain", "onnx"]


def test_ratios_to_plain_samplecnn_and_the_measured_rates():
    def row(model, variant, x, gflops):
        return {"model": model, "path": "clip", "variant": variant,
                "b1": {"x_realtime": x, "achieved_gflops": gflops}}

    rows = [row("pemr", "plain", 50.0, 20.0), row("pemr", "fast", 200.0, 80.0), row("samplecnn", "plain", 80.0, 60.0),
            row("samplecnn", "fast", 100.0, 70.0), {"model": "pemr", "path": "clip", "variant": "onnx", "error": "x"}]
    relate(rows, {"matmul": 160.0, "conv": 200.0})
    fast = rows[1]["b1"]
    assert fast["vs_plain"] == 4.0 and fast["vs_samplecnn"] == 2.0  # against the faster SampleCNN variant
    assert fast["matmul_fraction"] == 0.5 and fast["conv_fraction"] == 0.4
    assert rows[0]["b1"]["vs_plain"] == 1.0 and rows[3]["b1"]["vs_samplecnn"] == 1.0
    assert conv_gflops("cpu", frames=16, repeats=1) > 0


def test_isolated_probe_runs_in_a_child_process_without_an_import_cycle():
    """isolate.py (imported by lengths.py and training.py) imports neither; the child entry imports them."""
    tree = ast.parse(open(os.path.join(ROOT, "benchmarks", "speed", "isolate.py")).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and ("lengths" in m or "training" in m or "child" in m)}
    spec = {"model": "simclr", "path": "clip", "variant": "fast", "seconds": 1.0, "device": "cpu", "tiny": True,
            "repeats": 1, "repeat_max_seconds": 60.0, "warmup_seconds": 0.5}
    r = run_isolated("length", spec, timeout=300)
    assert "error" not in r, r
    assert r["variant"] == "fast" and r["time_s"] > 0 and r["peak_growth_mb"] >= 0
    assert run_isolated("nonsense", {}, timeout=300)["error"].startswith("exit 2")


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


def test_length_section_compares_the_clip_path_before_and_after_streaming():
    """``clip-kept`` (every window kept, the input padded) and ``clip`` (streamed summaries read from the
    input) give the same embeddings; only the kept path counts a padded copy of the input."""
    from mart_upstream.benchmarks.speed.lengths import input_copy_samples

    model = build("pemr", tiny=True)
    L = model.clip_samples
    wav = torch.randn(2, 3 * L + 5)
    torch.testing.assert_close(embed_call(model, "clip")(wav), embed_call(model, "clip-kept")(wav), rtol=1e-5, atol=1e-6)
    assert input_copy_samples(model, "clip", 3 * L + 5) == 0
    assert input_copy_samples(model, "clip-kept", 3 * L + 5) == 4 * L
    with pytest.raises(ValueError, match="path must be one of"):
        embed_call(SampleCNN(), "clip-kept")


@pytest.mark.parametrize("loop", ["steploop", "bare"])
def test_training_timing_goes_through_the_real_step_loop(loop, monkeypatch):
    """The steploop timing runs StepLoop's step: the augmentation draws and MoCo's queue advances in
    after_optimizer_step; the bare step, kept for before/after, does neither."""
    from mart_upstream.augment import AugmentationChain
    from mart_upstream.benchmarks.speed.training import make_step, training_setups

    calls = []
    real = AugmentationChain.forward
    monkeypatch.setattr(AugmentationChain, "forward", lambda self, x, g=None, **kw: calls.append(x.shape) or real(self, x, g, **kw))
    (setup,) = training_setups("moco", tiny=True, batch_override=None)
    step, model, facts = make_step({"model": "moco", **setup, "device": "cpu", "loop": loop, "variant": "eager"})
    assert int(model.queue_ptr) == 0 and not facts["bf16_autocast"]
    for _ in range(2):
        step()
    b, q = setup["batch"], model.config.queue_size
    if loop == "steploop":
        assert int(model.queue_ptr) == (2 * b) % q and len(calls) == 2 and calls[0][0] == b * model.num_views
    else:
        assert int(model.queue_ptr) == 0 and not calls


def test_training_variants_are_printed_side_by_side():
    from mart_upstream.benchmarks.speed.report import training_table

    def row(loop, variant, clips):
        return {"model": "simclr", "config": "simclr_cpu.yaml", "loop": loop, "variant": variant, "batch": 32,
                "clip_seconds": 2.0, "step_s": 32 / clips, "clips_per_s": clips, "audio_x_realtime": 1.0,
                "first_step_s": 1.0, "cpu_utilisation": 1.0, "peak_rss_growth_mb": 10.0}

    rows = [row("steploop", "eager", 10.0), row("steploop", "compile", 15.0),
            {"model": "simclr", "config": "simclr_cpu.yaml", "loop": "steploop", "variant": "channels-last",
             "batch": 32, "error": "exit 1: boom"}]
    md = "\n".join(training_table({"machine": {"device": "cpu"}, "training": rows}))
    assert "| steploop eager clips/s | steploop compile clips/s | steploop channels-last clips/s |" in md
    assert "| simclr | simclr_cpu.yaml | 10.00 | 15.00 (1.50x) | failed |" in md


def test_bad_training_variants_are_one_clear_error(tmp_path, capsys):
    from mart_upstream.benchmarks.speed.__main__ import main

    for flag, value in (("--train-variants", "eager,turbo"), ("--train-loops", "fast"), ("--train-configs", "gpu"),
                        ("--length-paths", "clip,all")):
        assert main(["--out", str(tmp_path / "out"), flag, value]) == 2
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and flag in err and "choose from" in err, err
    assert not (tmp_path / "out").exists()


def test_a_failed_measurement_names_the_exception_not_the_hint_printed_after_it():
    from benchmarks.speed.isolate import failure_line

    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
              "torch._dynamo.exc.Unsupported: data-dependent branching\n\n"
              "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace (please do this especially if ...)\n")
    assert failure_line(stderr) == "torch._dynamo.exc.Unsupported: data-dependent branching"
    assert failure_line("RuntimeError: boom\nwarning: x\n") == "RuntimeError: boom"
    assert failure_line("killed\n") == "killed" and failure_line("") == "no output"
