"""Read a TensorFlow checkpoint (the "tensor bundle" format of ``tf.train.Saver``) without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index``, a LevelDB-style sorted table that maps every variable's name
to a ``BundleEntryProto`` (dtype, shape, shard, byte offset and size), and ``PREFIX.data-0000i-of-0000n``,
the raw little-endian tensor bytes. Only what a plain (unpartitioned, uncompressed) checkpoint uses is
read here; anything else is refused with a ``CheckpointError`` naming the file.
"""
from __future__ import annotations

import os
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB / TensorFlow table footer magic
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # compression type (1 byte) + CRC (4 bytes)
# TensorFlow DataType enum -> numpy dtype (the ones variables of a trained model use)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 19: np.float16, 10: np.bool_}


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[Tuple[int, object]]:
    """(field number, value) of a protobuf message: ints for varint/fixed fields, bytes for nested ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _block(data: bytes, handle: bytes, where: str) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + BLOCK_TRAILER_BYTES > len(data):
        raise CheckpointError(f"{where}: a table block lies past the end of the file (truncated?)")
    if data[offset + size] != 0:
        raise CheckpointError(f"{where}: compressed table blocks are not supported (type {data[offset + size]})")
    return data[offset : offset + size]


def _entries(block: bytes) -> Iterator[Tuple[bytes, bytes]]:
    """(key, value) pairs of one table block (keys are prefix-compressed against the previous key)."""
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def _entry(value: bytes) -> Dict[str, object]:
    """A ``BundleEntryProto``: dtype (1), shape (2), shard_id (3), offset (4), size (5), slices (7)."""
    out: Dict[str, object] = {"dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0, "sliced": False}
    for number, v in _fields(value):
        if number == 1:
            out["dtype"] = v
        elif number == 2:  # TensorShapeProto: repeated Dim (2) {size (1)}
            out["shape"] = [dict(_fields(d)).get(1, 0) for n, d in _fields(v) if n == 2]
        elif number in (3, 4, 5):
            out[{3: "shard", 4: "offset", 5: "size"}[number]] = v
        elif number == 7:
            out["sliced"] = True
    return out


def read_index(prefix: str) -> Dict[str, Dict[str, object]]:
    """Variable name -> its entry (dtype, shape, shard, offset, size) from ``PREFIX.index``."""
    path = prefix + ".index"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read TensorFlow checkpoint index {path}: {e.strerror or e}") from None
    if len(data) < FOOTER_BYTES or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path} is not a TensorFlow checkpoint index (no table footer)")
    try:
        footer = data[-FOOTER_BYTES:]
        _, pos = _varint(footer, 0)  # metaindex handle: offset, size (unused)
        _, pos = _varint(footer, pos)
        index = _block(data, footer[pos:], path)
        out = {}
        for _, handle in _entries(index):
            for key, value in _entries(_block(data, handle, path)):
                if key:  # the empty key holds the BundleHeaderProto
                    out[key.decode("utf-8")] = _entry(value)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: damaged TensorFlow checkpoint index ({e})") from None
    return out


def data_files(prefix: str, index: Dict[str, Dict[str, object]]) -> List[str]:
    """The ``PREFIX.data-*`` shard files the index refers to."""
    shards = 1 + max((int(e["shard"]) for e in index.values()), default=0)
    return [f"{prefix}.data-{i:05d}-of-{shards:05d}" for i in range(shards)]


def read_bundle(prefix: str, keep: Optional[Callable[[str], bool]] = None) -> Dict[str, np.ndarray]:
    """Name -> array of every variable (or those ``keep(name)`` accepts) of the checkpoint ``PREFIX``
    (for a checkpoint saved with an empty file prefix, ``PREFIX`` is the folder with a trailing ``/``)."""
    index = read_index(prefix)
    files = data_files(prefix, index)
    out: Dict[str, np.ndarray] = {}
    handles = {}
    try:
        for name, e in sorted(index.items()):
            if keep is not None and not keep(name):
                continue
            where = f"{prefix}.index: variable {name!r}"
            if e["sliced"]:
                raise CheckpointError(f"{where} is partitioned; partitioned variables are not supported")
            if e["dtype"] not in DTYPES:
                raise CheckpointError(f"{where} has TensorFlow dtype {e['dtype']}, which is not supported")
            dtype = np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in e["shape"])
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != e["size"]:
                raise CheckpointError(f"{where}: {e['size']} bytes do not hold a {dtype} tensor of shape {list(shape)}")
            path = files[int(e["shard"])]
            if path not in handles:
                try:
                    handles[path] = open(path, "rb")
                except OSError as err:
                    raise CheckpointError(f"cannot read TensorFlow checkpoint data {path}: "
                                          f"{err.strerror or err}") from None
            f = handles[path]
            f.seek(int(e["offset"]))
            raw = f.read(int(e["size"]))
            if len(raw) != e["size"]:
                raise CheckpointError(f"{path} is truncated: {name!r} needs bytes {e['offset']}-"
                                      f"{int(e['offset']) + int(e['size'])}")
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    finally:
        for f in handles.values():
            f.close()
    return out


def source_files(prefix: str) -> List[str]:
    """The files a checkpoint ``PREFIX`` is made of (its index and data shards)."""
    return [prefix + ".index"] + data_files(prefix, read_index(prefix)) if os.path.isfile(prefix + ".index") else []
