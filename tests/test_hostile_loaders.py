"""Task loaders on hostile files: nesting deeper than Python's recursion limit and damaged gzip streams
are a TaskError naming the file, not a RecursionError or zlib.error."""
import gzip
import json
import os

import pytest

from mart_upstream.errors import TaskError
from mart_upstream.tasks.nsynth import read_split
from mart_upstream.tasks.playlists import read_playlists

DEEP = 100_000
GOOD = {"mix_id": 1, "category": "Rock", "playlist": [[["A", "a"], "T1"], [["B", "b"], "T2"], "T3", "T4"]}


@pytest.mark.parametrize("layout", ["jsonl", "array", "gz_array"])
def test_playlists_nested_100000_deep_name_the_file(tmp_path, layout):
    deep = "[" * DEEP + "]" * DEEP
    if layout == "jsonl":
        path = tmp_path / "playlists.jsonl"
        path.write_text(json.dumps(GOOD) + "\n" + '{"mix_id": 2, "playlist": ' + deep + "}\n")
        match = r"playlists.jsonl line 2: nested too deeply"
    else:
        text = "[" + json.dumps(GOOD) + ", " + deep + "]"
        if layout == "array":
            path = tmp_path / "aotm2011_playlists.json"
            path.write_text(text)
        else:
            path = tmp_path / "aotm2011_playlists.json.gz"
            with gzip.open(path, "wt") as f:
                f.write(text)
        match = os.path.basename(str(path)) + ": nested too deeply"
    with pytest.raises(TaskError, match=match):
        read_playlists(str(tmp_path))


@pytest.mark.parametrize("damage", ["deflate", "crc", "truncated", "not_gzip"])
def test_a_damaged_gz_names_the_file(tmp_path, damage):
    path = tmp_path / "aotm2011_playlists.json.gz"
    raw = gzip.compress(json.dumps([GOOD] * 50).encode())
    if damage == "deflate":  # the compressed stream itself is garbage
        raw = raw[:10] + bytes([0xFF] * 40) + raw[50:]
    elif damage == "crc":
        raw = raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:-4]) + raw[-4:]
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw = b"\x1f\x8b" + b"\x00" * 30
    path.write_bytes(raw)
    with pytest.raises(TaskError, match="aotm2011_playlists.json.gz: cannot be read"):
        read_playlists(str(tmp_path))


@pytest.mark.parametrize("where", ["top", "inside_a_note"])
def test_nsynth_examples_nested_100000_deep_name_the_file(tmp_path, where):
    folder = tmp_path / "nsynth-train"
    folder.mkdir()
    deep = "[" * DEEP + "]" * DEEP
    text = deep if where == "top" else '{"guitar_acoustic_000-060-100": {"instrument_family_str": ' + deep + "}}"
    (folder / "examples.json").write_text(text)
    with pytest.raises(TaskError, match=r"nsynth-train/examples.json is nested too deeply"):
        read_split(str(tmp_path), "train")
