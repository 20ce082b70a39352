"""The opt-in speed-ups of the training step (``run.compile``, ``run.channels_last``) give the eager step's
losses on a fixed batch and seed, and settings that cannot work are one clear error. No timing here."""
import csv
import functools
import os

import pytest
import torch

from kit import TINY
from mart_upstream.errors import ConfigError, UsageError
from mart_upstream.train import speedups
from mart_upstream.train.loop import step_loop
from mart_upstream.train.settings import Job, settings_for


def _losses(name, tmp_path, steps=2, optim=(), **run):
    """Losses of the first ``steps`` steps of a tiny run on one fixed batch, and the loop."""
    overrides = ["run.batch_size=4", "data.num_workers=0"] + [f"run.{k}={v}" for k, v in run.items()] + list(optim)
    settings = settings_for(name, overrides=overrides, model_config=TINY[name])
    loop = step_loop(Job(name, str(tmp_path)), settings, torch.device("cpu"))
    batch = 0.1 * torch.randn(4, loop.model.num_views, loop.model.clip_samples,
                              generator=torch.Generator().manual_seed(0))
    losses = []
    for step in range(steps):
        out, skipped = loop.train_step(step, batch)
        assert not skipped
        losses.append(float(out["loss"].detach()))
    return losses, loop


@pytest.mark.parametrize("name", ["simclr", "pemr"])
def test_fused_adam_steps_equal_the_per_tensor_loop(name, tmp_path):
    fused, loop = _losses(name, tmp_path / "fused", steps=3)
    assert loop.optim.defaults["fused"]  # the default
    plain, loop = _losses(name, tmp_path / "plain", steps=3, optim=["optim.fused=false"])
    assert not loop.optim.defaults["fused"]
    assert fused == pytest.approx(plain, rel=1e-4, abs=1e-5)  # losses 2 and 3 follow the updates


@pytest.mark.parametrize("name", ["simclr", "mart"])
def test_channels_last_step_equals_eager(name, tmp_path):
    eager, _ = _losses(name, tmp_path / "eager")
    fast, loop = _losses(name, tmp_path / "cl", channels_last="true")
    conv = next(m for m in loop.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert fast == pytest.approx(eager, rel=1e-4, abs=1e-5)  # the second loss follows the first update


def test_compiled_step_plumbing_equals_eager(tmp_path, monkeypatch):
    """run.compile through the step loop (graph capture and AOTAutograd's backward; the aot_eager backend
    stands in for TorchInductor's code generation, which the slow test below runs)."""
    eager, _ = _losses("simclr", tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled, loop = _losses("simclr", tmp_path / "compiled", compile="reduce-overhead")
    assert loop.net is not loop.model and hasattr(loop.net, "_orig_mod")
    assert loop.net._orig_mod is loop.model  # the optimizer's parameters are the compiled module's
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MART_TEST_INDUCTOR") != "1",
                    reason="TorchInductor compiles for 1-2 min on 2 CPU cores (cached afterwards): MART_TEST_INDUCTOR=1")
def test_inductor_compiled_step_equals_eager(tmp_path):
    """TorchInductor (C++ on the CPU): about 85 s of compilation on 2 busy CPU cores the first time, so it
    runs where MART_TEST_INDUCTOR=1 asks for it (the plumbing test above runs everywhere)."""
    import torch._inductor.config as inductor

    if speedups.cpp_compiler() is None:
        pytest.skip("no C++ compiler for TorchInductor")
    eager, _ = _losses("simclr", tmp_path / "eager")
    with inductor.patch(fallback_random=True):  # dropout draws as in eager mode
        compiled, _ = _losses("simclr", tmp_path / "compiled", compile="default")
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)


def test_speedup_settings_that_cannot_work_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^run.compile must be one of none, default, reduce-overhead"):
        settings_for("simclr", overrides=["run.compile=fastest"])
    with pytest.raises(ConfigError, match="run.channels_last"):
        settings_for("simclr", overrides=["run.channels_last=maybe"])
    monkeypatch.setattr(speedups, "cpp_compiler", lambda: None)
    settings = settings_for("simclr", overrides=["run.compile=default"], model_config=TINY["simclr"])
    with pytest.raises(UsageError, match=r"run.compile=default needs a C\+\+ compiler") as e:
        step_loop(Job("simclr", str(tmp_path)), settings, torch.device("cpu"))
    assert "\n" not in str(e.value)
    speedups.check_compile_possible("none", torch.device("cpu"))  # eager needs nothing


def test_mart_pretrain_resumes_an_eager_run_in_channels_last(tmp_path, capsys):
    """mart-pretrain applies run.channels_last; a run may switch to it on --resume (not listed as ignored)
    and its losses stay the eager run's within float rounding."""
    from kit import tiny_overrides
    from mart_upstream.checkpoint import read_checkpoint
    from mart_upstream.train.cli import main
    from mart_upstream.train.demo import make_synthetic_dataset

    data = tmp_path / "audio"
    make_synthetic_dataset(str(data), n_files=4, seconds=2.0, sample_rate=16000, seed=0, progress=False)

    def run(out, *extra):
        return main(["--model", "pemr", "--data", str(data), "--out", str(out), "--batch-size", "4", *extra,
                     "augment.p_pitch=0", "data.num_workers=0", "run.log_every=1", *tiny_overrides("pemr")])

    assert run(tmp_path / "eager", "--steps", "3") == 0
    assert run(tmp_path / "cl", "--steps", "1") == 0
    capsys.readouterr()
    assert run(tmp_path / "cl", "--steps", "3", "--resume", "--", "run.channels_last=true") == 0
    assert "ignored" not in capsys.readouterr().err
    a, b = (read_checkpoint(str(tmp_path / d / "last.ckpt")) for d in ("eager", "cl"))
    assert b["pretrain"]["settings"]["run"]["channels_last"] is True
    # the losses, not the weights, are compared: Adam turns rounding differences in near-zero gradients
    # into weight differences of the order of its step size
    assert a["model"].keys() == b["model"].keys()
    conv = next(k for k, w in a["model"].items() if w.dim() == 4 and w.shape[1] > 1)
    assert b["model"][conv].is_contiguous(memory_format=torch.channels_last)  # the run did train channels-last
    assert a["model"][conv].is_contiguous()
    losses = [[float(r["loss"]) for r in csv.DictReader(open(tmp_path / d / "metrics.csv"))] for d in ("eager", "cl")]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_large_batch_mode_scales_the_learning_rate_by_the_stated_rule(tmp_path):
    """optim.lr holds at a global batch of optim.lr_batch (48, the papers'); lr_scaling says how other
    batches scale it. The default keeps the papers' rate at any batch."""
    def lr(*optim):
        _, loop = _losses("simclr", tmp_path / "_".join(optim or ("default",)), steps=1, optim=optim)
        return loop.optim.param_groups[0]["lr"]

    base = settings_for("simclr").pretrain.optim.lr
    assert lr() == pytest.approx(base)  # batch 4, no scaling
    assert lr("optim.lr_scaling=linear") == pytest.approx(base * 4 / 48)
    assert lr("optim.lr_scaling=sqrt", "optim.lr_batch=16") == pytest.approx(base * 0.5)
    with pytest.raises(ConfigError, match=r"^optim.lr_scaling must be one of none, linear, sqrt, got 'cubic'"):
        settings_for("simclr", overrides=["optim.lr_scaling=cubic"])
