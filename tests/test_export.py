"""mart-export: the frozen embedding functions as ONNX, run by ONNX Runtime through the same embedding
path, give the PyTorch model's embeddings."""
import importlib.util
import json
import os

import pytest
import torch

from mart_upstream.checkpoint import save_checkpoint
from mart_upstream.embedding import clip_embeddings, frame_features
from mart_upstream.errors import UsageError
from mart_upstream.models import build_model

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from mart_upstream.export import load_onnx, main  # noqa: E402

REL = 1e-4


def _close(a, b):
    scale = max(float(a.abs().max()), 1e-6)
    assert a.shape == b.shape and float((a - b).abs().max()) <= REL * scale


def _export(name, tiny, folder):
    torch.manual_seed(0)
    model = build_model(name, tiny[name]).eval()
    ckpt = os.path.join(folder, f"{name}.ckpt")
    save_checkpoint(ckpt, model, name, step=0)
    out = os.path.join(folder, "onnx")
    assert main(["--format", "onnx", ckpt, out, "--no-check"]) == 0
    return model, out


def _same_embeddings(model, exported):
    gen = torch.Generator().manual_seed(1)
    for t in (77, model.clip_samples, 3 * model.clip_samples + 123, model.feature_chunk + 4321):
        wav = 0.1 * torch.randn(3, t, generator=gen)
        _close(clip_embeddings(model, wav), clip_embeddings(exported, wav))
        ours, theirs = frame_features(model, wav), frame_features(exported, wav)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _close(a, b)


@pytest.fixture(scope="module")
def simclr_export(tmp_path_factory):
    from kit import TINY

    return _export("simclr", TINY, str(tmp_path_factory.mktemp("export")))


def test_onnx_runtime_gives_the_pytorch_embeddings(simclr_export):
    model, out = simclr_export
    assert sorted(os.listdir(out)) == ["clip.onnx", "export.json", "frames.onnx"]
    exported = load_onnx(out, threads=1)
    m = json.load(open(os.path.join(out, "export.json")))
    assert m["model"] == "simclr" and m["clip_samples"] == model.clip_samples and len(m["checkpoint_sha256"]) == 64
    assert m["layers"] == len(frame_features(model, torch.zeros(1, 100)))
    assert (exported.frame_hop, exported.embedding_dim) == (model.frame_hop, model.embedding_dim)
    _same_embeddings(model, exported)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mart", "pemr"])
def test_onnx_export_of_mart_and_pemr(name, tiny, tmp_path):
    model, out = _export(name, tiny, str(tmp_path))
    _same_embeddings(model, load_onnx(out, threads=1))


def test_export_command_checks_its_output(tiny, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = str(tmp_path / "s.ckpt")
    save_checkpoint(ckpt, build_model("simclr", tiny["simclr"]), "simclr", step=0)
    assert main(["--format", "onnx", ckpt, str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "ONNX Runtime vs PyTorch" in err and "clip embeddings" in err


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["--format", "onnx", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mart-export: error:") and "not found" in err[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="export.json"):
        load_onnx(str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install"):
        load_onnx(str(tmp_path))
