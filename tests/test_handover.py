"""A run carried between machines: split into three parts, each handed over in a reduced state and
continued with --resume, against one uninterrupted run (mart_upstream/train/handover.py)."""
import csv

import numpy as np
import pytest
import torch

from kit import tiny_overrides
from mart_upstream.checkpoint import read_checkpoint
from mart_upstream.errors import CheckpointError, UsageError
from mart_upstream.train import handover
from mart_upstream.train.cli import main
from mart_upstream.train.demo import make_synthetic_dataset

STEPS = (8, 16, 24)  # three parts
FAST = ["augment.p_pitch=0", "data.num_workers=0", "run.log_every=1", "run.ckpt_every=100"]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    make_synthetic_dataset(str(d), n_files=6, seconds=2.0, sample_rate=16000, seed=0, progress=False)
    return str(d)


def _run(model, data, out, steps, *extra):
    assert main(["--model", model, "--data", data, "--out", str(out), "--batch-size", "4", "--steps", str(steps),
                 *extra, *FAST, *tiny_overrides(model)]) == 0


def _losses(folder):
    with open(folder / "metrics.csv") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f)])


@pytest.fixture(scope="module")
def uninterrupted(audio_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    _run("mart", audio_dir, out, STEPS[-1])
    return _losses(out)


def _in_parts(audio_dir, out, mode):
    sizes = []
    for i, steps in enumerate(STEPS):
        _run("mart", audio_dir, out, steps, *(["--resume"] if i else []))
        if i < len(STEPS) - 1:  # hand over: only the reduced state travels on
            sizes.append(handover.write_handover(str(out / "last.ckpt"), str(out / "last.ckpt"), mode))
    return _losses(out), sizes


# measured on this tiny MART (relative loss difference per step, 24 steps): compact at most 0.0002;
# small up to 0.058 on single steps after a hand-over (Adam's first moment starts again), 0.014 and
# 0.029 on the means of the two parts after a hand-over
@pytest.mark.parametrize("mode,step_tol,part_tol", [("full", 1e-6, 1e-6), ("compact", 1e-3, 1e-3),
                                                    ("small", 0.10, 0.04)])
def test_three_parts_follow_the_uninterrupted_loss_curve(mode, step_tol, part_tol, audio_dir, uninterrupted,
                                                        tmp_path):
    parts, sizes = _in_parts(audio_dir, tmp_path, mode)
    assert len(parts) == len(uninterrupted) == STEPS[-1]
    # up to the first hand-over the runs are the same run
    np.testing.assert_allclose(parts[: STEPS[0]], uninterrupted[: STEPS[0]], atol=1e-5)
    rel = np.abs(parts - uninterrupted) / np.abs(uninterrupted)
    assert rel.max() <= step_tol, (mode, rel.round(4).tolist())
    for lo, hi in zip(STEPS[:-1], STEPS[1:]):  # each part after a hand-over, on average
        assert abs(parts[lo:hi].mean() / uninterrupted[lo:hi].mean() - 1) <= part_tol, (mode, lo, hi)
    s = sizes[0]
    if mode == "full":
        assert s["bytes"] == s["bytes_full"]
    elif mode == "compact":  # Adam's moments in bfloat16: half; the weights as they are
        assert s["optimizer_bytes"] <= 0.51 * s["optimizer_bytes_full"] and s["model_bytes"] == s["model_bytes_full"]
    else:  # about 2 of the 12 bytes per parameter: float16 weights, factored second moment
        assert s["optimizer_bytes"] < 0.15 * s["optimizer_bytes_full"]
        assert s["model_bytes"] < 0.6 * s["model_bytes_full"]


def test_reduced_state_rebuilds_an_adam_state_of_the_right_shapes(audio_dir, tmp_path):
    _run("mart", audio_dir, tmp_path, 3)
    state = read_checkpoint(str(tmp_path / "last.ckpt"))
    small = handover.reduce_state(state, "small")
    opt = handover.expand_optimizer(small["optimizer"])
    for i, st in state["optimizer"]["state"].items():
        assert opt["state"][i]["exp_avg_sq"].shape == st["exp_avg_sq"].shape
        assert torch.count_nonzero(opt["state"][i]["exp_avg"]) == 0  # the first moment starts again
        v, w = st["exp_avg_sq"], opt["state"][i]["exp_avg_sq"]
        if v.dim() >= 2:  # Adafactor's factorisation keeps the row and column sums exactly
            assert torch.allclose(w.reshape(v.shape[0], -1).sum(1), v.reshape(v.shape[0], -1).sum(1), rtol=1e-4)
    # float64 statistics keep their precision
    assert all(small["model"][k].dtype == torch.float64 for k, v in state["model"].items() if v.dtype == torch.float64)


def test_bad_mode_and_weights_only_checkpoint_are_clear_errors(audio_dir, tmp_path):
    _run("mart", audio_dir, tmp_path, 1)
    state = read_checkpoint(str(tmp_path / "last.ckpt"))
    with pytest.raises(UsageError, match="hand-over mode must be one of full, compact, small"):
        handover.reduce_state(state, "tiny")
    with pytest.raises(CheckpointError, match="no optimizer state"):
        handover.reduce_state(dict(state, optimizer=None), "small")
