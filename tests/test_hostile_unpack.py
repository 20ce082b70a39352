"""``mart-bench device-unpack`` on hostile parts: pipes and links to devices, sparse, truncated and
ambiguous tars, damaged summaries, overlong names, a run killed mid-extraction, --out over its own
input; and a seeded fuzz of the bundle reader."""
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from mart_upstream.benchmarks.subprocesses import child_env

from mart_upstream.benchmarks import mart_bench
from mart_upstream.benchmarks.device import pretrain, unpack
from mart_upstream.errors import UsageError

FILES = {"simclr.ckpt": b"weights" * 300, "simclr/metrics.csv": b"step,loss\n1,0.5\n", "device_run.json": b"{}"}


def _run_dir(tmp_path):
    run = tmp_path / "run"
    for rel, data in FILES.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    return run


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A real bundle in three parts, with its device_run.json."""
    run = _run_dir(tmp_path)
    monkeypatch.setattr(pretrain, "PART_BYTES", 4096)
    pretrain.bundle(str(run), str(tmp_path / "parts"), str(run / "device_run.json"))
    assert len([n for n in os.listdir(tmp_path / "parts") if n.startswith("run.tar.part")]) >= 3
    return tmp_path / "parts"


def _tar(members, cut=None):
    """A tar of (TarInfo, data or None) in memory; ``cut``: keep only that many bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return raw if cut is None else raw[:cut]


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _parts(tmp_path, raw, name="parts"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "run.tar.part00").write_bytes(raw)
    return folder


def _no_debris(tmp_path):
    left = [n for n in os.listdir(tmp_path) if n.startswith((".join-", ".tmp-", ".old-"))]
    assert not left, left


def _refused(tmp_path, parts, capsys, *words, out="o"):
    assert mart_bench.main(["device-unpack", str(parts), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    assert not (tmp_path / out).exists()
    _no_debris(tmp_path)


@pytest.fixture
def bounded_writes():
    """Files this process writes stop at 64 MiB with an error (the unfixed join of a link to /dev/zero
    would fill the disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, hard))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def _unblock_later(fifo, seconds=3.0):
    """Open ``fifo`` for writing after ``seconds`` (or once ``done`` is set) and close it: a reader blocked
    on it sees its end. -> (done, blocked: non-empty if a reader was waiting)."""
    done, blocked = threading.Event(), []

    def run():
        done.wait(seconds)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            blocked.append(True)
        except OSError:  # nobody is reading it
            pass

    threading.Thread(target=run, daemon=True).start()
    return done, blocked


# -- 5. what the parts and the tar may not be ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_part_that_is_not_a_regular_file_is_refused_before_it_is_read(bundle, tmp_path, bounded_writes, kind):
    last = sorted(n for n in os.listdir(bundle) if n.startswith("run.tar.part"))[-1]
    os.unlink(bundle / last)
    os.unlink(bundle / "device_run.json")
    if kind == "fifo":
        os.mkfifo(bundle / last)
        done, blocked = _unblock_later(str(bundle / last))
    else:
        os.symlink("/dev/zero", bundle / last)
    with pytest.raises(UsageError, match="not a regular file"):
        unpack.unpack(str(bundle), str(tmp_path / "o"))
    if kind == "fifo":
        done.set()
        time.sleep(0.1)
        assert not blocked, "device-unpack waited on the pipe"
    assert not (tmp_path / "o").exists()
    _no_debris(tmp_path)


def test_parts_larger_than_a_device_run_sends_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(unpack, "MAX_TAR_BYTES", 20000)
    parts = _parts(tmp_path, _tar([_file("big.bin", os.urandom(30000))]))
    _refused(tmp_path, parts, capsys, "MiB")


def test_a_sparse_member_is_refused(tmp_path, capsys):
    info, _ = _file("huge.bin", b"abcd")
    info.pax_headers = {"GNU.sparse.size": str(1 << 40), "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,4"}
    raw = _tar([(info, b"abcd")])
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getmembers()[0].issparse() and tar.getmembers()[0].size == 1 << 40  # as crafted
    _refused(tmp_path, _parts(tmp_path, raw), capsys, "sparse")


def test_a_tar_cut_at_a_header_boundary_is_refused(tmp_path, capsys):
    members = [_file("a.txt", b"a" * 600), _file("b.txt", b"b" * 100), _file("c.ckpt", b"c" * 100)]
    whole = _tar(members)
    cut = 512 + 1024 + 512 + 512  # a's header and two blocks of data, b's header and its block
    assert whole[cut: cut + 6] == b"c.ckpt"
    _refused(tmp_path, _parts(tmp_path, whole[:cut]), capsys, "complete tar")


def test_a_member_name_twice_is_refused(tmp_path, capsys):
    raw = _tar([_file("simclr.ckpt", b"good"), _file("simclr.ckpt", b"evil")])
    _refused(tmp_path, _parts(tmp_path, raw), capsys, "twice")


# -- 8. one line, no debris, the input kept -------------------------------------------------------------------
@pytest.mark.parametrize("text", ["{not json", '{"bundle": [1, 2]}', '{"bundle": {"sha256": 5}}', "[" * 50000,
                                  "\udcff"])
def test_a_damaged_device_run_json_is_one_line(bundle, tmp_path, capsys, text):
    (bundle / "device_run.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    _refused(tmp_path, bundle, capsys, "device_run.json")


@pytest.mark.parametrize("members", [
    [_dir("m"), _file("m", b"file")],
    [_file("m", b"file"), _file("m/inner.csv", b"x")],
], ids=["folder_then_file", "file_then_inside"])
def test_a_folder_and_a_file_of_one_name_is_one_line(tmp_path, capsys, members):
    _refused(tmp_path, _parts(tmp_path, _tar(members)), capsys, "a file and a folder")


def test_a_300_character_name_is_one_line(tmp_path, capsys):
    _refused(tmp_path, _parts(tmp_path, _tar([_file("n" * 300 + ".csv")])), capsys, "longer than")


def test_a_run_killed_mid_extraction_leaves_nothing_the_next_run_keeps(bundle, tmp_path):
    env = child_env()
    code = ("import os, signal, sys, tarfile\n"
            "from mart_upstream.benchmarks.device import unpack\n"
            "def killed(self, path, members=None, **kw):\n"
            "    self.extract(members[0], path, filter='data')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "tarfile.TarFile.extractall = killed\n"
            "unpack.unpack(sys.argv[1], sys.argv[2])\n")
    r = subprocess.run([sys.executable, "-c", code, str(bundle), str(tmp_path / "back")], env=env,
                       capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not (tmp_path / "back").exists()
    unpack.unpack(str(bundle), str(tmp_path / "back"))
    assert (tmp_path / "back" / "simclr.ckpt").read_bytes() == FILES["simclr.ckpt"]
    _no_debris(tmp_path)


@pytest.mark.parametrize("where", ["parts", "above"])
def test_out_over_the_parts_is_refused_and_they_are_kept(bundle, tmp_path, capsys, where):
    before = {n: (bundle / n).read_bytes() for n in os.listdir(bundle)}
    out = bundle if where == "parts" else tmp_path
    assert mart_bench.main(["device-unpack", str(bundle), "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert "would delete them" in err and "Traceback" not in err
    assert {n: (bundle / n).read_bytes() for n in os.listdir(bundle)} == before


def test_an_out_under_a_file_is_one_line(bundle, tmp_path, capsys):
    (tmp_path / "f").write_text("a file")
    _refused(tmp_path, bundle, capsys, "f", out="f/run")


# -- the fuzz --------------------------------------------------------------------------------------------
def test_fuzz_the_bundle_reader(tmp_path, monkeypatch):
    """Damaged parts, with or without device_run.json: the run folder as it was, or a UsageError and
    nothing written; never another exception."""
    run = _run_dir(tmp_path)
    monkeypatch.setattr(pretrain, "PART_BYTES", 2048)
    clean = tmp_path / "clean"
    pretrain.bundle(str(run), str(clean), str(run / "device_run.json"))
    names = sorted(os.listdir(clean))
    originals = {n: (clean / n).read_bytes() for n in names}
    joined = b"".join(originals[n] for n in names[1:])
    rng = np.random.default_rng(5)
    outcomes = {"refused": 0, "read": 0}
    for trial in range(300):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        for n in names:
            (folder / n).write_bytes(originals[n])
        part = names[int(rng.integers(1, len(names)))]  # one of the run.tar.partNN
        data = bytearray(originals[part])
        kind = int(rng.integers(0, 5))
        if kind == 0:  # one part cut anywhere, or at a block boundary (where a header could start)
            at = int(rng.integers(0, len(data)))
            data = data[: at - at % 512 if rng.random() < 0.5 else at]
        elif kind == 1:
            for i in rng.integers(0, len(data), int(rng.integers(1, 4))):
                data[i] ^= int(rng.integers(1, 256))
        elif kind == 2:
            at = int(rng.integers(0, len(data)))
            data = data[:at] + bytes(rng.integers(0, 256, 512, dtype=np.uint8)) + data[at:]
        elif kind == 3:
            os.unlink(folder / part)
        else:  # the tar cut at a block boundary: the part holding it cut there, the later ones lost
            at = 512 * int(rng.integers(0, len(joined) // 512))
            start = 0
            for n in names[1:]:
                size = len(originals[n])
                if start >= at:
                    os.unlink(folder / n)
                elif start + size > at:
                    (folder / n).write_bytes(originals[n][: at - start])
                start += size
        if kind in (0, 1, 2):
            (folder / part).write_bytes(bytes(data))
        checked = rng.random() < 0.5
        if not checked:
            os.unlink(folder / "device_run.json")
        out = tmp_path / f"out{trial}"
        try:
            names_out = unpack.unpack(str(folder), str(out))
        except UsageError as e:
            assert "\n" not in str(e)
            assert not out.exists()
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        assert out.is_dir() and all(isinstance(n, str) for n in names_out)
        # with the sha256, or a tar cut at its end (its last part cut or lost): only the run as it was comes
        # out (without a checksum, a part cut in the middle can shift later headers into valid places)
        if checked or kind == 4 or (kind in (0, 3) and part == names[-1]):
            assert sorted(names_out) == sorted(FILES), trial
            for rel, content in FILES.items():
                assert (out / rel).read_bytes() == content, trial
    _no_debris(tmp_path)
    assert outcomes["refused"] > 150, outcomes
