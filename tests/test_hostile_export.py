"""mart-export on hostile ground: killed midway (OUT never mixes two exports), OUT a file, under a file,
unwritable or holding other files, and opsets the exporter does not write."""
import json
import os
import subprocess

import pytest
import torch
from kit import TINY

from mart_upstream.checkpoint import save_checkpoint
from mart_upstream.models import build_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from mart_upstream.export import main  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "simclr.ckpt")
    save_checkpoint(path, build_model("simclr", TINY["simclr"]), "simclr", step=0)
    return path


def fake_exporter(monkeypatch, marker, opset=None, fail_on=None):
    """torch.onnx.export replaced by one that writes a small valid ONNX file naming ``marker`` (with
    ``opset``, default the one asked for); ``fail_on``: the call (1 clip, 2 frames) that is interrupted."""
    calls = []

    def export(fn, args, path, opset_version=18, **kw):
        calls.append(path)
        if len(calls) == fail_on:
            raise KeyboardInterrupt
        x = onnx.helper.make_tensor_value_info("wav", onnx.TensorProto.FLOAT, ["n", 4])
        y = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["n", 4])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["wav"], ["out"])], marker, [x], [y])
        model = onnx.helper.make_model(graph, producer_name=marker,
                                       opset_imports=[onnx.helper.make_opsetid("", opset or opset_version)])
        onnx.save(model, path)

    monkeypatch.setattr(torch.onnx, "export", export)
    return calls


def _markers(out):
    return {n: onnx.load(os.path.join(out, n)).producer_name for n in ("clip.onnx", "frames.onnx")}


def _one_line(capsys, *words):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1 and lines[0].startswith("mart-export: error:") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def test_an_export_killed_midway_leaves_the_earlier_one_whole(ckpt, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "onnx")
    fake_exporter(monkeypatch, "first")
    assert main(["--format", "onnx", ckpt, out, "--no-check"]) == 0
    manifest = (tmp_path / "onnx" / "export.json").read_bytes()
    fake_exporter(monkeypatch, "second", fail_on=2)  # killed after clip.onnx was written
    with pytest.raises(KeyboardInterrupt):
        main(["--format", "onnx", ckpt, out, "--no-check"])
    assert _markers(out) == {"clip.onnx": "first", "frames.onnx": "first"}
    assert (tmp_path / "onnx" / "export.json").read_bytes() == manifest
    assert sorted(os.listdir(tmp_path)) == ["onnx"]
    # a SIGKILL leaves the staging folder: the next export removes it
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".tmp-onnx-{dead.pid}-abc").mkdir()
    fake_exporter(monkeypatch, "third")
    assert main(["--format", "onnx", ckpt, out, "--no-check"]) == 0
    assert _markers(out) == {"clip.onnx": "third", "frames.onnx": "third"}
    assert sorted(os.listdir(tmp_path)) == ["onnx"]


def _unwritable(tmp_path):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return str(locked / "onnx")
    return "/sys/mart-hostile/onnx"  # not even root creates folders in sysfs


@pytest.mark.parametrize("where", ["file", "under_file", "unwritable", "other_files"])
def test_an_unusable_out_is_one_line(ckpt, tmp_path, monkeypatch, capsys, where):
    fake_exporter(monkeypatch, "x")
    (tmp_path / "f").write_text("a file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    out = {"file": str(tmp_path / "f"), "under_file": str(tmp_path / "f" / "onnx"),
           "unwritable": _unwritable(tmp_path), "other_files": str(tmp_path / "mine")}[where]
    assert main(["--format", "onnx", ckpt, out, "--no-check"]) == 2
    _one_line(capsys, os.path.basename(out))
    assert (tmp_path / "f").read_text() == "a file" and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_an_opset_onnx_does_not_know_is_refused(ckpt, tmp_path, capsys):
    assert main(["--format", "onnx", ckpt, str(tmp_path / "onnx"), "--no-check", "--opset", "99"]) == 2
    _one_line(capsys, "--opset 99")
    assert not (tmp_path / "onnx").exists()


def test_the_opset_recorded_is_the_one_written(ckpt, tmp_path, monkeypatch, capsys):
    fake_exporter(monkeypatch, "old", opset=18)  # an exporter that quietly writes another opset
    assert main(["--format", "onnx", ckpt, str(tmp_path / "onnx"), "--no-check", "--opset", "20"]) == 2
    _one_line(capsys, "--opset 20", "opset 18")
    assert not (tmp_path / "onnx").exists() and os.listdir(tmp_path) == []
    fake_exporter(monkeypatch, "ok")
    assert main(["--format", "onnx", ckpt, str(tmp_path / "onnx"), "--no-check", "--opset", "20"]) == 0
    assert json.loads((tmp_path / "onnx" / "export.json").read_text())["opset"] == 20
    assert {onnx.load(str(tmp_path / "onnx" / n)).opset_import[0].version for n in ("clip.onnx", "frames.onnx")} == {20}
