"""The pretext diagnostic (benchmarks/run/pretext.py): a run's own task scored on its pool and on
audio it never saw."""
import json

import pytest
import torch

from kit import tiny_overrides
from mart_upstream.benchmarks.run import pretext
from mart_upstream.errors import CheckpointError
from mart_upstream.train.cli import main
from mart_upstream.train.demo import make_synthetic_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pretext")
    pool, other = base / "pool", base / "other"
    make_synthetic_dataset(str(pool), n_files=6, seconds=2.0, sample_rate=16000, seed=0, progress=False)
    make_synthetic_dataset(str(other), n_files=6, seconds=2.0, sample_rate=16000, seed=1, progress=False)
    assert main(["--model", "simclr", "--data", str(pool), "--out", str(base / "run"), "--batch-size", "4",
                 "--steps", "3", "augment.p_pitch=0", "data.num_workers=0", *tiny_overrides("simclr")]) == 0
    return base


def test_scores_pool_and_held_out_on_fixed_crops_without_touching_the_model(run, tmp_path, capsys):
    model, cfg = pretext.load_run(str(run / "run" / "last.ckpt"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = pretext.score_folder(model, cfg, str(run / "pool"), batches=2, batch_size=4)
    b = pretext.score_folder(model, cfg, str(run / "pool"), batches=2, batch_size=4)
    assert a == b and a["files"] == 6 and 0.0 <= a["pair_top1"] <= 1.0 and -1.0 <= a["pos_cos"] <= 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics kept
    c = pretext.score_folder(model, cfg, str(run / "other"), batches=2, batch_size=4)
    assert c["loss"] != a["loss"]  # other audio, other crops
    out = tmp_path / "p.json"
    assert pretext.main([str(run / "run" / "last.ckpt"), "--pool", str(run / "pool"), "--held-out", str(run / "other"),
                         "--batches", "1", "--batch-size", "4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["chance_pair_top1"] == 0.25 and len(res["held_out"]) == 1 and res["pool"]["batches"] == 1


def test_checkpoint_without_run_settings_is_a_clear_error(run, tmp_path):
    from mart_upstream.checkpoint import save_checkpoint

    model, _ = pretext.load_run(str(run / "run" / "last.ckpt"))
    save_checkpoint(str(tmp_path / "w.ckpt"), model, "simclr", step=0)
    with pytest.raises(CheckpointError, match="keeps no pretraining settings"):
        pretext.load_run(str(tmp_path / "w.ckpt"))
