"""Damaged and tampered mart-embed catalogues read by ``read_catalogue`` and ``mart-cover-song eval
--embeddings``: refused in one line (never scored, never a traceback), and rewritten by rerunning
mart-embed; a seeded fuzz of ``read_catalogue`` over damaged files."""
import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from hostile_kit import cover, embed, scores, tiny_checkpoint, write_set

from mart_upstream.embed import read_catalogue
from mart_upstream.errors import UsageError


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A clean catalogue of the tiny cover set and its evaluation."""
    root = tmp_path_factory.mktemp("catalogue")
    ckpt = tiny_checkpoint(root / "simclr.ckpt")
    manifest = write_set(str(root / "audio"))
    assert embed(root / "audio", root / "emb", ckpt) == 0
    rc, result = cover(manifest, root / "emb", root / "eval")
    assert rc == 0 and result["map"] > 0
    return {"root": root, "ckpt": ckpt, "manifest": manifest, "emb": root / "emb", "clean": scores(result)}


@pytest.fixture
def emb(made, tmp_path):
    """A copy of the clean catalogue to damage (its shards are left out: only the three files are read)."""
    out = tmp_path / "emb"
    out.mkdir()
    for n in ("meta.json", "index.csv", "embeddings.npy"):
        shutil.copy(made["emb"] / n, out / n)
    return out


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def resign(folder):
    """Tampering that also updates the checksums in meta.json: only the structure checks are left."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["index_sha256"], meta["embeddings_sha256"] = _sha(folder / "index.csv"), _sha(folder / "embeddings.npy")
    (folder / "meta.json").write_text(json.dumps(meta))


def _refused(capsys, made, emb, tmp_path, *words):
    rc, result = cover(made["manifest"], emb, tmp_path / "eval")
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert rc == 2 and result is None, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("mart-cover-song: error:") and "Traceback" not in err, err
    assert "NaN" not in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# -- 2. tampered or inconsistent catalogues are not scored --------------------------------------------------
def test_swapped_rows_are_refused_and_a_rerun_restores_the_clean_result(made, tmp_path, capsys):
    audio = tmp_path / "audio"
    manifest = write_set(str(audio))
    out = tmp_path / "emb"
    assert embed(audio, out, made["ckpt"]) == 0
    e = np.load(out / "embeddings.npy")
    e[[0, 3]] = e[[3, 0]]
    np.save(out / "embeddings.npy", e)
    rc, result = cover(manifest, out, tmp_path / "e0")
    assert rc == 2 or scores(result) == made["clean"]
    assert "embeddings.npy does not match the sha256" in capsys.readouterr().err
    assert embed(audio, out, made["ckpt"]) == 0  # the same command rewrites it
    rc, result = cover(manifest, out, tmp_path / "e1")
    assert rc == 0 and scores(result) == made["clean"]


@pytest.mark.parametrize("signed", [False, True])
def test_a_path_listed_twice_is_refused(made, emb, tmp_path, capsys, signed):
    lines = (emb / "index.csv").read_text().splitlines(keepends=True)
    (emb / "index.csv").write_text("".join(lines + [lines[2]]))
    if signed:
        resign(emb)
    _refused(capsys, made, emb, tmp_path, "listed twice" if signed else "sha256")


@pytest.mark.parametrize("signed", [False, True])
def test_an_array_of_another_dimension_is_refused(made, emb, tmp_path, capsys, signed):
    np.save(emb / "embeddings.npy", np.random.default_rng(0).standard_normal((8, 7)).astype(np.float32))
    if signed:
        resign(emb)
    _refused(capsys, made, emb, tmp_path, "(8, 7)" if signed else "sha256")


# -- 7. every damage is one line naming the file -----------------------------------------------------------
def _npy(emb, array):
    np.save(emb / "embeddings.npy", array, allow_pickle=True)


def _index(emb, column, value, rename=None):
    """index.csv with the first track's ``column`` set to ``value`` (or the column renamed to ``rename``)."""
    with open(emb / "index.csv", newline="") as f:
        rows = list(csv.reader(f))
    at = rows[0].index(column)
    if rename:
        rows[0][at] = rename
    else:
        rows[1][at] = value
    with open(emb / "index.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


DAMAGE = {
    "npy_truncated": (lambda e: (e / "embeddings.npy").write_bytes((e / "embeddings.npy").read_bytes()[:-9]),
                      "embeddings.npy"),
    "npy_empty": (lambda e: (e / "embeddings.npy").write_bytes(b""), "embeddings.npy"),
    "npy_object": (lambda e: _npy(e, np.array([{"x": 1}] * 8, dtype=object)), "embeddings.npy"),
    "npy_1d": (lambda e: _npy(e, np.zeros(8, np.float32)), "embeddings.npy"),
    "npy_float64": (lambda e: _npy(e, np.load(e / "embeddings.npy").astype(np.float64)), "embeddings.npy"),
    "index_binary": (lambda e: (e / "index.csv").write_bytes(os.urandom(200) + b"\xff\xfe"), "index.csv"),
    "index_no_column": (lambda e: _index(e, "n_rows", None, rename="rows"), "index.csv"),
    "index_bad_offset": (lambda e: _index(e, "row_offset", "zero"), "index.csv"),
    "index_offset_out_of_range": (lambda e: _index(e, "row_offset", "99"), "index.csv"),
    "index_negative_offset": (lambda e: _index(e, "row_offset", "-1"), "index.csv"),
    "index_zero_rows": (lambda e: _index(e, "n_rows", "0"), "index.csv"),
    "meta_not_json": (lambda e: (e / "meta.json").write_bytes(b'{"dim": 25'), "meta.json"),
    "meta_a_list": (lambda e: (e / "meta.json").write_text("[1, 2]"), "meta.json"),
    "meta_dim_text": (lambda e: (e / "meta.json").write_text(
        (e / "meta.json").read_text().replace('"dim": ', '"dim": "x", "_": ')), "meta.json"),
    "meta_deep": (lambda e: (e / "meta.json").write_text("[" * 100000 + "]" * 100000), "meta.json"),
}


@pytest.mark.parametrize("signed", [False, True], ids=["as_damaged", "checksums_updated"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_catalogue_is_one_line(made, emb, tmp_path, capsys, damage, signed):
    apply, name = DAMAGE[damage]
    apply(emb)
    if signed and not damage.startswith("meta"):
        resign(emb)
    _refused(capsys, made, emb, tmp_path, name)


def test_a_rerun_rewrites_a_damaged_catalogue(made, tmp_path, capsys):
    audio = tmp_path / "audio"
    manifest = write_set(str(audio))
    out = tmp_path / "emb"
    assert embed(audio, out, made["ckpt"]) == 0
    for damage in ("npy_truncated", "index_zero_rows", "meta_not_json"):
        DAMAGE[damage][0](out)
        assert cover(manifest, out, tmp_path / f"bad-{damage}")[0] == 2
        assert embed(audio, out, made["ckpt"]) == 0
        capsys.readouterr()
        rc, result = cover(manifest, out, tmp_path / f"ok-{damage}")
        assert rc == 0 and scores(result) == made["clean"], damage


# -- the fuzz --------------------------------------------------------------------------------------------
def _mutate(data: bytes, rng) -> bytes:
    if not data:
        return bytes(rng.integers(0, 256, 5, dtype=np.uint8))
    kind, at = rng.integers(0, 5), int(rng.integers(0, len(data)))
    if kind == 0:  # truncated
        return data[:at]
    if kind == 1:  # bytes flipped
        out = bytearray(data)
        for i in rng.integers(0, len(data), int(rng.integers(1, 4))):
            out[i] ^= int(rng.integers(1, 256))
        return bytes(out)
    if kind == 2:  # bytes inserted
        return data[:at] + bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8)) + data[at:]
    if kind == 3:  # a line dropped or repeated
        lines = data.split(b"\n")
        i = int(rng.integers(0, len(lines)))
        return b"\n".join(lines[:i] + lines[i + 1:] if rng.random() < 0.5 else lines[:i + 1] + lines[i:])
    return bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8))  # replaced


def test_fuzz_read_catalogue(made, tmp_path):
    """Damaged copies (with checksums as found, or updated to match): the clean catalogue or a UsageError."""
    clean = read_catalogue(str(made["emb"]))
    rng = np.random.default_rng(27)
    names = ("meta.json", "index.csv", "embeddings.npy")
    originals = {n: (made["emb"] / n).read_bytes() for n in names}
    folder = tmp_path / "fuzz"
    folder.mkdir()
    outcomes = {"refused": 0, "read": 0}
    for trial in range(400):
        for n in names:
            (folder / n).write_bytes(originals[n])
        target = names[int(rng.integers(0, 3))]
        (folder / target).write_bytes(_mutate(originals[target], rng))
        signed = target != "meta.json" and rng.random() < 0.6
        if signed:
            resign(folder)
        try:
            got = read_catalogue(str(folder))
        except UsageError as e:
            assert str(e) and "\n" not in str(e)
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        if target != "meta.json" and not signed:  # the checksums let no change through
            assert got.paths == clean.paths and got.durations == clean.durations, trial
            np.testing.assert_array_equal(got.vectors, clean.vectors)
        else:  # a consistent forgery can be read, but only as a well-formed catalogue
            assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(got.paths), got.meta["dim"])
            assert len(set(got.paths)) == len(got.paths) == len(got.durations)
    assert outcomes["refused"] > 250, outcomes
