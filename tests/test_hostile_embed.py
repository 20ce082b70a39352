"""mart-embed on hostile input: changed audio under the same names, names with a carriage return or not
UTF-8, damaged run state, unusable --out and list files, and a worker whose torchrun agent is gone.
Changes that could give wrong results are followed end to end, to the cover-song evaluation."""
import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from mart_upstream.benchmarks.subprocesses import child_env
from hostile_kit import cover, default_name, embed, scores, tiny_checkpoint, write_set

from mart_upstream.embed import read_catalogue


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "simclr.ckpt")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, ckpt):
    """Clean runs: the plain set and the scrambled set, each embedded into its own folder and evaluated."""
    root = tmp_path_factory.mktemp("clean")
    out = {}
    for key, scramble in (("plain", False), ("scrambled", True)):
        manifest = write_set(str(root / key / "audio"), scramble=scramble)
        assert embed(root / key / "audio", root / key / "emb", ckpt) == 0
        rc, result = cover(manifest, root / key / "emb", root / key / "eval")
        assert rc == 0
        out[key] = scores(result)
    assert out["plain"] != out["scrambled"]  # the two sets can be told apart by the evaluation
    return out


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("mart-embed: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# -- 1. a changed input is embedded again -------------------------------------------------------------------
def test_another_input_with_the_same_names_is_not_given_the_old_rows(tmp_path, ckpt, clean, capsys):
    a = write_set(str(tmp_path / "a"))
    b = write_set(str(tmp_path / "b"), scramble=True)  # the same file names, other audio
    out = tmp_path / "emb"
    assert embed(tmp_path / "a", out, ckpt) == 0
    rc = embed(tmp_path / "b", out, ckpt)
    if rc == 0:  # any run that takes B must have embedded B
        assert "0 files embedded" not in capsys.readouterr().out
    else:
        _one_error_line(capsys, "input", "another --out")
    rc, result = cover(b, out, tmp_path / "eval-b")
    assert rc == 2 or scores(result) == clean["scrambled"]  # never A's rows scored as B's
    rc, result = cover(a, out, tmp_path / "eval-a")
    assert rc == 2 or scores(result) == clean["plain"]


def test_a_file_overwritten_in_place_is_embedded_again(tmp_path, ckpt, clean, capsys):
    manifest = write_set(str(tmp_path / "audio"))
    out = tmp_path / "emb"
    assert embed(tmp_path / "audio", out, ckpt) == 0
    assert scores(cover(manifest, out, tmp_path / "e0")[1]) == clean["plain"]
    write_set(str(tmp_path / "audio"), scramble=True)  # every file rewritten under its name
    capsys.readouterr()
    assert embed(tmp_path / "audio", out, ckpt) == 0
    assert "8 files embedded" in capsys.readouterr().out
    rc, result = cover(manifest, out, tmp_path / "e1")
    assert rc == 0 and scores(result) == clean["scrambled"]
    assert embed(tmp_path / "audio", out, ckpt) == 0  # and now nothing is left to do
    assert "already embedded" in capsys.readouterr().out


# -- 3. a carriage return in a file name --------------------------------------------------------------------
def test_a_carriage_return_in_a_file_name_is_indexed_once(tmp_path, ckpt, clean, capsys):
    def name(w, v):
        return "w0\rodd_v1.wav" if (w, v) == (0, 1) else default_name(w, v)

    manifest = write_set(str(tmp_path / "audio"), name=name)
    out = tmp_path / "emb"
    assert embed(tmp_path / "audio", out, ckpt) == 0
    capsys.readouterr()
    assert embed(tmp_path / "audio", out, ckpt) == 0
    assert "already embedded" in capsys.readouterr().out
    assert sorted(n for n in os.listdir(out / "shards") if n.endswith(".csv")) == ["shard-00000.csv"]
    with open(out / "index.csv", newline="") as f:
        assert "w0\rodd_v1.wav" in [r["path"] for r in csv.DictReader(f)]
    rc, result = cover(manifest, out, tmp_path / "eval")
    assert rc == 0 and scores(result) == clean["plain"]


# -- 4. an orphaned torchrun worker gives up ----------------------------------------------------------------
def test_a_worker_whose_torchrun_agent_is_gone_gives_up(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: the agent's store is gone
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = child_env(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = ("import sys; from datetime import timedelta; import mart_upstream.embed as c; "
            "c.GROUP_TIMEOUT = timedelta(seconds=1); sys.exit(c.main(sys.argv[1:]))")
    (tmp_path / "list.txt").write_text("x.wav\n")
    cmd = [sys.executable, "-c", code, "--model", "simclr=nowhere.ckpt", "--input", "list.txt", "--out",
           str(tmp_path / "o"), "--device", "cpu"]
    try:
        r = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker still waits for its process group after 40 s")
    assert r.returncode == 2 and "cannot join torchrun's process group" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_only_the_final_barrier_waits_long(monkeypatch):
    import torch.distributed as dist

    from mart_upstream import embed as catalogue

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.setdefault("join", kw["timeout"]))
    monkeypatch.setattr(catalogue.distributed, "init_from_env",
                        lambda _: catalogue.distributed.DistInfo(1, 2, 1, launched=True))
    monkeypatch.setattr(dist, "new_group", lambda **kw: seen.setdefault("final", kw["timeout"]))
    catalogue._start_distributed()
    assert seen["join"].total_seconds() <= 3600 and seen["final"].days >= 7


# -- 6. one line instead of a traceback; damaged run state is recovered ------------------------------------
def _unwritable(tmp_path):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked / "out"
    try:
        os.mkdir("/sys/mart-hostile")
    except OSError:
        return "/sys/mart-hostile/out"  # not even root creates folders in sysfs
    os.rmdir("/sys/mart-hostile")
    pytest.skip("no unwritable place for root")


@pytest.mark.parametrize("where", ["file", "under_file", "unwritable"])
def test_an_unusable_out_is_one_line(tmp_path, ckpt, capsys, where):
    write_set(str(tmp_path / "audio"))
    (tmp_path / "f").write_text("a file")
    out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "out", "unwritable": _unwritable(tmp_path)}[where]
    assert embed(tmp_path / "audio", out, ckpt) == 2
    _one_error_line(capsys, "--out")
    assert (tmp_path / "f").read_text() == "a file"


def test_a_list_that_is_not_utf8_is_one_line(tmp_path, ckpt, capsys):
    write_set(str(tmp_path / "audio"))
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"audio/w0_v0.wav\naudio/caf\xe9.wav\n")
    assert embed(listing, tmp_path / "out", ckpt) == 2
    _one_error_line(capsys, "list.txt", "UTF-8")


def test_a_damaged_run_json_is_one_line(tmp_path, ckpt, capsys):
    write_set(str(tmp_path / "audio"))
    out = tmp_path / "out"
    assert embed(tmp_path / "audio", out, ckpt) == 0
    (out / "shards" / "run.json").write_bytes(b'{"model": "sim\xff')
    assert embed(tmp_path / "audio", out, ckpt) == 2
    _one_error_line(capsys, "run.json", "damaged", "another --out")


@pytest.mark.parametrize("damage", ["csv_binary", "csv_one_line", "csv_columns", "csv_offsets", "npy_truncated", "npy_garbage",
                                    "npy_object"])
def test_a_damaged_shard_is_embedded_again(tmp_path, ckpt, capsys, damage):
    write_set(str(tmp_path / "audio"))
    out, again = tmp_path / "out", tmp_path / "again"
    assert embed(tmp_path / "audio", out, ckpt, "--shard-size", "3") == 0
    clean = np.load(out / "embeddings.npy")
    shard = out / "shards" / "shard-00001"
    csv_path, npy_path = shard.with_suffix(".csv"), shard.with_suffix(".npy")
    if damage == "csv_binary":
        csv_path.write_bytes(os.urandom(300))
    elif damage == "csv_one_line":  # bytes with no line end: the reader sees a header and no rows
        csv_path.write_bytes(bytes(b for b in os.urandom(600) if b not in b"\r\n")[:300])
    elif damage == "csv_columns":
        csv_path.write_text("path,n_rows\nw1_v1.wav,1\n")
    elif damage == "csv_offsets":
        csv_path.write_text(csv_path.read_text().replace('"2","1"', '"9","1"'))
    elif damage == "npy_truncated":
        npy_path.write_bytes(npy_path.read_bytes()[:-7])
    elif damage == "npy_garbage":
        npy_path.write_bytes(b"\x93NUMPY garbage" + os.urandom(100))
    else:
        np.save(npy_path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    capsys.readouterr()
    assert embed(tmp_path / "audio", out, ckpt, "--shard-size", "3") == 0
    captured = capsys.readouterr()
    assert "shard-00001 is damaged" in captured.err and "3 files embedded" in captured.out
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"), clean)
    assert embed(tmp_path / "audio", again, ckpt) == 0
    assert read_catalogue(str(out)).paths == read_catalogue(str(again)).paths


def test_a_file_name_that_is_not_utf8_is_embedded_once(tmp_path, ckpt, capsys):
    write_set(str(tmp_path / "audio"))
    odd = os.path.join(os.fsencode(str(tmp_path / "audio")), b"caf\xe9.wav")
    os.rename(os.fsencode(str(tmp_path / "audio" / "w0_v1.wav")), odd)
    out = tmp_path / "out"
    assert embed(tmp_path / "audio", out, ckpt) == 0
    capsys.readouterr()
    assert embed(tmp_path / "audio", out, ckpt) == 0
    assert "already embedded" in capsys.readouterr().out
    cat = read_catalogue(str(out))
    assert os.fsdecode(odd) in cat.paths and len(cat.paths) == 8
    meta = json.loads((out / "meta.json").read_text())
    assert meta["embedded"] == 8 and meta["errors"] == 0
