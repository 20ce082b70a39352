"""The checkpoints installed with the package: present, small, documented, and loaded by default by the
HEAR modules, the S3PRL upstreams and the cover-song tool."""
import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from mart_upstream.benchmarks.run.pretraining import initial_model
from mart_upstream.checkpoint import packaged_checkpoint, read_checkpoint

NAMES = ["mart", "pemr", "simclr"]
BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_packaged_checkpoints_are_small_and_have_model_cards():
    sizes = 0
    for name in NAMES:
        path = packaged_checkpoint(name)
        assert os.path.isfile(path), f"{path} missing"
        sizes += os.path.getsize(path)
        state = read_checkpoint(path)
        card = state["pretrain"]["model_card"]
        assert state["model_name"] == name and state["optimizer"] is None and card["steps"] > 0
        text = open(path[: -len(".ckpt")] + ".md").read()
        for fact in (f"seed {card['seed']}", f"{card['steps']} steps", card["commit"].split()[0], "Data:"):
            assert fact in text, (name, fact)
    assert sizes < 20e6, f"packaged checkpoints take {sizes / 1e6:.1f} MB"


@pytest.mark.parametrize("name", NAMES)
def test_hear_load_model_default_reads_trained_weights(name):
    import importlib

    mod = importlib.import_module(f"hear_api.{name}")
    model = mod.load_model()
    state = read_checkpoint(packaged_checkpoint(name))
    # the run's own start: its config, its seed
    init = initial_model(name, state["pretrain"]["model_card"]["seed"], state["config"]).state_dict()
    trained = model.model.state_dict()
    moved = [k for k in init if init[k].is_floating_point() and not torch.allclose(init[k], trained[k].float(), atol=1e-3)]
    assert len(moved) > len(init) // 2, "the packaged weights look like the random initialisation"
    x = torch.randn(2, 3 * 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    emb = mod.get_scene_embeddings(x, model)
    assert emb.shape == (2, model.scene_embedding_size) and torch.isfinite(emb).all()


def test_s3prl_upstream_by_name_needs_no_k():
    from mart_upstream.adapters.s3prl.hubconf import ENTRY_POINTS

    up = ENTRY_POINTS["mart"]()
    hs = up([torch.zeros(16000 * 3)])["hidden_states"]
    assert len(hs) == 5 and hs[0].shape[-1] == read_checkpoint(packaged_checkpoint("mart"))["config"]["encoder"]["channels"][-1]


@pytest.mark.slow
def test_cover_song_tool_runs_with_the_packaged_model(tmp_path):
    from mart_upstream.benchmarks.cover_song.synthetic import CoverSetConfig, make_cover_set

    manifest = make_cover_set(str(tmp_path / "set"), CoverSetConfig(works=3, versions=2, seconds=3.0))
    r = subprocess.run([os.path.join(BIN, "mart-cover-song"), "eval", "--manifest", manifest, "--hear-module",
                        "hear_api.pemr", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary) == ["hear_api.pemr"] and 0.0 < summary["hear_api.pemr"]["map"] <= 1.0


def _number(cell: str) -> float:
    m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)", cell)
    assert m, f"no number at the start of {cell!r}"
    return float(m.group(1))


@pytest.mark.parametrize("name", NAMES)
def test_hear_docs_size_table_is_the_packaged_models(name):
    """docs/hear.md's table (timestamp size, hop, scene size) says what load_model("") gives."""
    rows = {}
    with open(os.path.join(ROOT, "docs", "hear.md")) as f:
        for line in f:
            if line.startswith("| `hear_api."):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                rows[cells[0].strip("`")] = cells
    model = importlib.import_module(f"hear_api.{name}").load_model()
    cells = rows[f"hear_api.{name}"]
    assert _number(cells[1]) == model.timestamp_embedding_size, cells[1]
    assert _number(cells[2]) == pytest.approx(model.timestamp_hop_ms, abs=0.01), cells[2]
    assert _number(cells[3]) == model.scene_embedding_size, cells[3]


def test_s3prl_plugin_upstream_names_are_the_registry():
    from mart_upstream.models import all_names
    from mart_upstream.adapters.s3prl import UPSTREAM_MODELS

    assert sorted(UPSTREAM_MODELS) == all_names()
