"""``mart-embed``: embed a whole audio catalogue with a pretrained model, in shards that survive a kill.

Every track goes through the one embedding path (``mart_upstream.embedding``): ``clip_embeddings``
(``--level scene``, one row per track) or one layer of ``frame_features`` (``--level frames``, one row
per frame). Rows are written to ``OUT/shards/`` every ``--shard-size`` tracks (``.npy`` first, then
the ``.csv`` that marks the shard finished), so a rerun of the same command skips what is done.
At the end ``OUT/index.csv``, ``OUT/embeddings.npy`` and ``OUT/meta.json`` gather every shard in input
order. Under ``torchrun`` each process embeds its share and rank 0 merges. See docs/embedding.md.

A shard row records the file's size and modification time: a file changed since (overwritten in place,
or another file under the same name) is embedded again. ``meta.json`` records the sha256 of
``index.csv`` and ``embeddings.npy`` and the dimension, which ``read_catalogue`` checks. CSV files are
fully quoted and read with ``newline=""`` (a file name may hold a carriage return); file names that are
not UTF-8 are kept byte for byte (``surrogateescape``).
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from . import distributed
from .argtypes import positive
from .checkpoint import checkpoint_for, load_for_embedding
from .audio import AUDIO_EXTENSIONS, find_audio_files, load_audio
from .errors import AudioError, UsageError, command
from .embedding import clip_embeddings, frame_features
from .fileio import atomic_path, remove_stale_temps, sha256_file, write_json
from .models import all_names
from .quiet import silence_known_noise

SHARD_COLUMNS = ["path", "size", "mtime_ns", "duration_s", "row_offset", "n_rows"]
INDEX_COLUMNS = ["path", "duration_s", "shard", "row_offset", "n_rows"]
MAX_SHARD_BYTES = 1 << 30  # a shard also closes early at this size (long tracks at --level frames)
SHARD_RE = re.compile(r"^shard-(?:r\d+-)?\d{5,}$")
RANK_ERRORS = "errors-r{}.csv"  # per-process errors under torchrun, merged into OUT/errors.csv by rank 0
BARRIER_TIMEOUT = timedelta(days=7)  # ranks wait for the slowest one at the end, however long it takes
GROUP_TIMEOUT = timedelta(minutes=30)  # joining torchrun's group and every other wait: an orphan gives up
ENCODING = dict(encoding="utf-8", errors="surrogateescape")  # file names that are not UTF-8 round-trip



@dataclass(frozen=True)
class Track:
    key: str  # as recorded in index.csv: relative to the input folder, or the line of the list
    path: str  # where it is read from
    size: int = -1  # the file's size and modification time when listed (-1: not a regular file)
    mtime_ns: int = -1

    def matches(self, row: dict) -> bool:
        """True when a shard row was embedded from this file as it is now."""
        return self.size >= 0 and row.get("size") == str(self.size) and row.get("mtime_ns") == str(self.mtime_ns)


def _track(key: str, path: str) -> Track:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return Track(key, path)
    return Track(key, path, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else Track(key, path)


def _read_list(source: str) -> List[str]:
    try:
        with open(source, encoding="utf-8") as f:
            return [s.strip() for s in f]
    except UnicodeDecodeError as e:
        raise UsageError(f"list {source} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise UsageError(f"list {source} cannot be read ({e.strerror or e})") from None


def list_tracks(source: str) -> List[Track]:
    """A folder (walked recursively, regular audio files, sorted) or a text list of paths, in its order;
    each with its size and modification time now."""
    if os.path.isdir(source):
        tracks = [_track(os.path.relpath(p, source), p) for p in find_audio_files(source)]
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        keys = dict.fromkeys(s for s in _read_list(source) if s and not s.startswith("#"))  # repeats count once
        tracks = [_track(k, os.path.join(base, k)) for k in keys]
    else:
        raise UsageError(f"input not found: {source}")
    if not tracks:
        raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {source}")
    return tracks


def load_model(spec: Tuple[str, Optional[str]], device: str):
    """``(name, checkpoint or None)`` -> (frozen model, config, checkpoint path); packaged by default."""
    name, path = spec
    path = os.path.abspath(path or checkpoint_for(name))
    model = load_for_embedding(name, path, device)
    return model, model.config, path


def embed_track(model, track: Track, sample_rate: int, args) -> Tuple[np.ndarray, float]:
    """One file -> (rows [n, D] float32, seconds embedded). AudioError/ValueError: unusable audio."""
    if not os.path.isfile(track.path):
        raise AudioError("not found or not a regular file")
    wav = load_audio(track.path, sample_rate)
    if args.max_seconds:
        wav = wav[: max(1, round(args.max_seconds * sample_rate))]
    if wav.numel() == 0:
        raise AudioError("no audio samples")
    batch = wav[None]  # checked by the embedding path
    if args.level == "scene":
        rows = clip_embeddings(model, batch, max_windows=args.batch_size)
    else:
        rows = frame_features(model, batch, layers=(args.layer,))[0][0]
    return rows.float().cpu().numpy(), wav.numel() / sample_rate


def _csv_text(columns: List[str], rows: List[dict]) -> str:
    """Every field quoted, so a name with a comma, quote, newline or carriage return reads back as it was."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it (a finished run is not rewritten)."""
    data = text.encode(**ENCODING)
    if os.path.isfile(path) and _read_bytes(path) == data:
        return False
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return True


def _read_csv(path: str) -> List[dict]:
    """Rows of a CSV this module wrote: ``newline=""`` keeps a carriage return inside a quoted field."""
    with open(path, newline="", **ENCODING) as f:
        return list(csv.DictReader(f))


class ShardWriter:
    """Buffers rows of whole tracks and writes them as ``<prefix><k:05d>.npy`` + ``.csv``."""

    def __init__(self, folder: str, prefix: str, shard_size: int):
        done = [int(n[len(prefix):-4]) for n in os.listdir(folder)
                if n.startswith(prefix) and n.endswith(".csv") and n[len(prefix):-4].isdigit()]
        self.folder, self.prefix, self.shard_size = folder, prefix, shard_size
        self.next = max(done, default=-1) + 1
        self.rows: List[np.ndarray] = []
        self.entries: List[dict] = []

    def add(self, track: Track, rows: np.ndarray, seconds: float) -> None:
        offset = sum(len(r) for r in self.rows)
        self.entries.append({"path": track.key, "size": track.size, "mtime_ns": track.mtime_ns,
                             "duration_s": f"{seconds:.6f}", "row_offset": offset, "n_rows": len(rows)})
        self.rows.append(rows)
        if len(self.entries) >= self.shard_size or sum(r.nbytes for r in self.rows) >= MAX_SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered tracks as one shard: the array first, then the csv that marks it finished."""
        if not self.entries:
            return
        stem = os.path.join(self.folder, f"{self.prefix}{self.next:05d}")
        with atomic_path(stem + ".npy", suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.concatenate(self.rows).astype(np.float32, copy=False))
        _write_if_changed(stem + ".csv", _csv_text(SHARD_COLUMNS, self.entries))
        self.next, self.rows, self.entries = self.next + 1, [], []


def _shard_names(folder: str) -> List[str]:
    return sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".csv") and SHARD_RE.match(n[:-4]))


def finished_shards(folder: str) -> Dict[str, List[dict]]:
    """key -> its rows over every finished shard, newest shard first (a file embedded again after it
    changed has a row per version; ``Track.matches`` picks the one of the file as it is now)."""
    done: Dict[str, List[dict]] = {}
    for name in reversed(_shard_names(folder)):
        for row in _read_csv(os.path.join(folder, name + ".csv")):
            done.setdefault(row["path"], []).append(dict(row, shard=name))
    return done


def current_rows(tracks: List[Track], done: Dict[str, List[dict]]) -> Dict[str, dict]:
    """key -> the shard row embedded from the file as it is now, for the tracks that have one."""
    out = {}
    for t in tracks:
        row = next((r for r in done.get(t.key, ()) if t.matches(r)), None)
        if row is not None:
            out[t.key] = row
    return out


def _npy_rows(path: str) -> Tuple[int, int]:
    """(rows, dim) of a shard's .npy from its header, checked against the file size. ValueError if damaged."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"is of .npy format {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        header = f.tell()
        size = os.fstat(f.fileno()).st_size
    if dtype != np.float32 or len(shape) != 2 or fortran:
        raise ValueError(f"holds {dtype} {shape}, not float32 rows")
    if size != header + shape[0] * shape[1] * 4:
        raise ValueError(f"is {size} bytes, its header says {header + shape[0] * shape[1] * 4}")
    return int(shape[0]), int(shape[1])


def check_shard(folder: str, name: str) -> None:
    """A finished shard whose .csv and .npy agree; ValueError saying what is wrong."""
    try:
        rows = _read_csv(os.path.join(folder, name + ".csv"))
    except (OSError, csv.Error, UnicodeError) as e:
        raise ValueError(f"its .csv cannot be read ({e})") from None
    if not rows:  # a shard is written with its tracks' rows: a header alone (or bytes with no line end) is damage
        raise ValueError(f"its .csv has no rows of {','.join(SHARD_COLUMNS)}")
    try:
        n, _ = _npy_rows(os.path.join(folder, name + ".npy"))
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ValueError(f"its .npy {e}" if isinstance(e, ValueError) else f"its .npy cannot be read ({e})") from None
    for i, row in enumerate(rows, start=2):
        if set(row) != set(SHARD_COLUMNS) or any(v is None for v in row.values()):
            raise ValueError(f"its .csv line {i} does not have the columns {','.join(SHARD_COLUMNS)}")
        try:
            offset, count = int(row["row_offset"]), int(row["n_rows"])
            float(row["duration_s"]), int(row["size"]), int(row["mtime_ns"])
        except ValueError:
            raise ValueError(f"its .csv line {i} holds a value that is not a number") from None
        if offset < 0 or count < 1 or offset + count > n:
            raise ValueError(f"its .csv line {i} points at rows {offset}:{offset + count} of {n}")


def _warn(message: str) -> None:
    print(f"mart-embed: {message}", file=sys.stderr)


def prepare_shards(folder: str, settings: dict) -> None:
    """Before any process writes: drop half-written and damaged shards and temp files, and refuse a folder
    made with other settings (rows of two models must not be mixed)."""
    _make_folder(folder)
    remove_stale_temps(folder)
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if (ext == ".npy" and SHARD_RE.match(stem) and not os.path.exists(os.path.join(folder, stem + ".csv"))) \
                or re.fullmatch(RANK_ERRORS.format(r"\d+"), name):
            os.unlink(os.path.join(folder, name))
    run_json = os.path.join(folder, "run.json")
    if not os.path.exists(run_json):
        write_json(run_json, settings)
    else:
        try:
            with open(run_json, "rb") as f:
                old = json.loads(f.read().decode("utf-8"))
            if not isinstance(old, dict):
                raise ValueError(f"a JSON {type(old).__name__}, not an object")
        except (OSError, ValueError, RecursionError) as e:
            raise UsageError(f"{run_json} is damaged ({str(e)[:100]}): the settings of its shards are unknown; "
                             "use another --out (or remove that shards folder to embed everything again)") from None
        if "input" not in old and old == {k: v for k, v in settings.items() if k != "input"}:
            write_json(run_json, settings)  # an earlier mart-embed's folder: its rows lack size and mtime
        elif old != settings:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
            raise UsageError(f"{os.path.dirname(folder)} holds embeddings made with other settings ({diff}); "
                             "use another --out")
    dims = {}
    for name in _shard_names(folder):
        try:
            check_shard(folder, name)
            dims[name] = _npy_rows(os.path.join(folder, name + ".npy"))[1]
        except ValueError as e:
            _warn(f"{os.path.join(folder, name)} is damaged ({e}): removed, its files are embedded again")
            for ext in (".csv", ".npy"):
                if os.path.lexists(os.path.join(folder, name + ext)):
                    os.unlink(os.path.join(folder, name + ext))
    if len(set(dims.values())) > 1:
        raise UsageError(f"{folder}: the shards hold rows of {len(set(dims.values()))} dimensions "
                         f"({', '.join(f'{n}: {d}' for n, d in list(dims.items())[:4])}); use another --out")


def _make_folder(folder: str) -> None:
    """Create ``folder`` (and its parents) and check it can be written: one line if not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        blocking = folder
        while blocking and not os.path.isfile(blocking) and os.path.dirname(blocking) != blocking:
            blocking = os.path.dirname(blocking)
        raise UsageError(f"--out {os.path.dirname(folder)}: {blocking} is a file, not a folder") from None
    except OSError as e:
        raise UsageError(f"--out {os.path.dirname(folder)} cannot be written ({e.strerror or e})") from None


def _load_meta(path: str) -> dict:
    """meta.json as written, or {} when absent or unreadable (it is then written anew)."""
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def merge(out: str, tracks: List[Track], errors: List[dict], meta: dict, fresh: bool) -> bool:
    """Write errors.csv, embeddings.npy, index.csv and meta.json from the finished shards, in input order;
    each only if it changed (``fresh``: rows were embedded, so embeddings.npy is rewritten; so is one that
    no longer matches the sha256 in meta.json). True if any was."""
    shards = os.path.join(out, "shards")
    done = current_rows(tracks, finished_shards(shards))
    _write_if_changed(os.path.join(out, "errors.csv"), _csv_text(["path", "error"], errors))
    entries, offset = [], 0
    for t in (t for t in tracks if t.key in done):
        e = done[t.key]
        entries.append({"path": t.key, "duration_s": e["duration_s"], "shard": e["shard"],
                        "row_offset": offset, "n_rows": int(e["n_rows"])})
        offset += int(e["n_rows"])
    if not entries:
        raise AudioError(f"none of the {len(tracks)} files could be embedded; see {out}/errors.csv")
    shard = functools.lru_cache(maxsize=64)(lambda name: np.load(os.path.join(shards, name + ".npy"), mmap_mode="r"))
    dim = shard(entries[0]["shard"]).shape[1]
    index_path, target, meta_path = (os.path.join(out, n) for n in ("index.csv", "embeddings.npy", "meta.json"))
    index = _csv_text(INDEX_COLUMNS, entries)
    old = _load_meta(meta_path)
    changed = fresh or not os.path.isfile(target) or _read_bytes(index_path) != index.encode(**ENCODING) \
        or old.get("embeddings_sha256") != sha256_file(target)
    if changed:
        with atomic_path(target, suffix=".npy") as tmp:
            merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(offset, dim))
            for e in entries:
                src, n = int(done[e["path"]]["row_offset"]), e["n_rows"]
                merged[e["row_offset"]: e["row_offset"] + n] = shard(e["shard"])[src: src + n]
            merged.flush()
            del merged
    changed |= _write_if_changed(index_path, index)
    meta = dict(meta, dim=int(dim), files=len(tracks), embedded=len(entries), errors=len(errors), rows=offset,
                index_sha256=sha256_file(index_path), embeddings_sha256=sha256_file(target))
    return _write_if_changed(meta_path, json.dumps(meta, indent=1, sort_keys=True)) or changed


def _start_distributed() -> Tuple[distributed.DistInfo, object]:
    """Join torchrun's process group: gloo whatever the device, as it only serves the barriers.

    -> (info, the group of the final barrier). Joining and the first barrier wait ``GROUP_TIMEOUT`` at
    most, so a worker whose torchrun agent died gives up; only the final barrier, where ranks wait for
    the slowest one's share, waits ``BARRIER_TIMEOUT``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        try:
            dist.init_process_group(backend="gloo", init_method="env://", timeout=GROUP_TIMEOUT)
        except (dist.DistError, RuntimeError, ValueError) as e:
            raise UsageError(f"cannot join torchrun's process group at {where} within {GROUP_TIMEOUT} "
                             f"({' '.join(str(e).split())[:200]}); is the torchrun agent still running?") from None
    info = distributed.init_from_env("cpu")
    final = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT) if info.enabled else None
    return info, final


def _settings(model, config, ckpt: str, args) -> dict:
    """What the rows depend on, kept in OUT/shards/run.json; resolves ``args.layer`` to a layer index."""
    settings = {"model": model.model_name, "checkpoint_sha256": sha256_file(ckpt), "level": args.level,
                "max_seconds": args.max_seconds, "sample_rate": config.frontend.sample_rate,
                "input": os.path.abspath(args.input)}
    if args.level == "frames":
        n_layers = len(frame_features(model, torch.zeros(1, model.frame_hop)))
        if not -n_layers <= args.layer < n_layers:
            raise UsageError(f"--layer {args.layer} is out of range: the model has {n_layers} layers")
        args.layer = settings["layer"] = args.layer % n_layers
    return settings


def embed_share(model, tracks: List[Track], writer: ShardWriter, args, rate: int, show: bool) -> List[dict]:
    """Embed ``tracks`` into shards with a progress bar; the unreadable ones come back as ``path,error`` rows."""
    errors: List[dict] = []
    audio_s, done, start = 0.0, 0, time.time()
    bar = tqdm(tracks, unit="track", desc=f"mart-embed {model.model_name}", disable=not show)
    try:
        for t in bar:
            try:
                rows, seconds = embed_track(model, t, rate, args)
            except (AudioError, ValueError, MemoryError, torch.cuda.OutOfMemoryError) as e:
                errors.append({"path": t.key, "error": " ".join(str(e).split()) or type(e).__name__})
                continue
            writer.add(t, rows, seconds)
            audio_s, done = audio_s + seconds, done + 1
            wall = max(time.time() - start, 1e-9)
            bar.set_postfix_str(f"{done / wall:.2f} tracks/s, {audio_s / wall:.1f}x real time", refresh=False)
    except KeyboardInterrupt:
        writer.flush()
        print("mart-embed: interrupted; finished shards are kept: rerun the same command to resume",
              file=sys.stderr)
        raise
    writer.flush()
    return errors


def run(args) -> int:
    """Embed this process's share of the files not yet in finished shards; rank 0 then merges."""
    tracks = list_tracks(args.input)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file, not a folder")
    info, final = _start_distributed()
    model, config, ckpt = load_model(args.model, distributed.pick_device(args.device, info.local_rank))
    settings = _settings(model, config, ckpt, args)
    shards = os.path.join(args.out, "shards")
    if info.is_main:
        prepare_shards(shards, settings)
    distributed.barrier()
    done = current_rows(tracks, finished_shards(shards))
    todo = [t for t in tracks if t.key not in done]
    writer = ShardWriter(shards, f"shard-r{info.rank}-" if info.enabled else "shard-", args.shard_size)
    rate = settings["sample_rate"]
    errors = embed_share(model, todo[info.rank::info.world_size], writer, args, rate, info.is_main)
    if info.enabled:  # every rank's errors, in input order
        _write_if_changed(os.path.join(shards, RANK_ERRORS.format(info.rank)), _csv_text(["path", "error"], errors))
        dist.barrier(group=final)
        if not info.is_main:
            return 0
        order = {t.key: i for i, t in enumerate(tracks)}
        rank_files = [os.path.join(shards, RANK_ERRORS.format(r)) for r in range(info.world_size)]
        errors = sorted((e for path in rank_files for e in _read_csv(path)), key=lambda e: order[e["path"]])
        for path in rank_files:
            os.unlink(path)
    meta = dict(settings, checkpoint=ckpt, layer=settings.get("layer"),
                input_kind="folder" if os.path.isdir(args.input) else "list")
    if args.level == "frames":
        meta["frame_hop_s"] = model.frame_hop / rate
    embedded = len(todo) - len(errors)  # by every process
    changed = merge(args.out, tracks, errors, meta, fresh=embedded > 0)
    bad = f"; {len(errors)} unreadable, listed in {os.path.join(args.out, 'errors.csv')}" if errors else ""
    if changed:
        print(f"mart-embed: {embedded} files embedded; {len(tracks) - len(errors)} in "
              f"{os.path.join(args.out, 'index.csv')}{bad}")
    else:
        print(f"mart-embed: everything is already embedded in {args.out}; nothing written{bad}")
    return 0


@dataclass
class Catalogue:
    """A finished ``mart-embed`` output folder, read back: one row per track (``--level frames``: the mean
    of its frames), with the absolute path each ``index.csv`` entry was read from."""
    folder: str
    meta: dict
    paths: List[str]  # absolute, as embedded
    durations: List[float]
    vectors: np.ndarray  # [tracks, D] float32

    def rows_of(self, paths: List[str]) -> Tuple[np.ndarray, List[int]]:
        """The rows of ``paths`` (matched after resolving links) -> ([found, D], indices into ``paths`` found)."""
        where = {os.path.realpath(p): i for i, p in enumerate(self.paths)}
        found = [(i, where[os.path.realpath(p)]) for i, p in enumerate(paths) if os.path.realpath(p) in where]
        return self.vectors[[j for _, j in found]], [i for i, _ in found]


META_FIELDS = {"input": str, "input_kind": str, "dim": int, "rows": int, "model": str, "level": str,
               "index_sha256": str, "embeddings_sha256": str}


def read_catalogue(folder: str) -> Catalogue:
    """Read ``OUT`` of a finished ``mart-embed`` run, checked: the sha256 and the dimension that meta.json
    records, the array's type and shape, every index row's columns and row range, no path twice.
    UsageError naming the file and what is wrong."""
    need = [os.path.join(folder, n) for n in ("meta.json", "index.csv", "embeddings.npy")]
    missing = [n for n in need if not os.path.isfile(n)]
    if missing:
        raise UsageError(f"{folder} is not a finished mart-embed output: {', '.join(map(os.path.basename, missing))} "
                         "missing (run or rerun mart-embed with --out there)")
    rerun = "rerun the same mart-embed command to rewrite it"

    def damaged(name: str, why: str) -> UsageError:
        return UsageError(f"{os.path.join(folder, name)} is damaged: {why}; {rerun}")

    try:
        with open(need[0], "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise damaged("meta.json", f"not readable JSON ({' '.join(str(e).split())[:100]})") from None
    if not isinstance(meta, dict):
        raise damaged("meta.json", f"a JSON {type(meta).__name__}, not an object")
    if "input" not in meta or "index_sha256" not in meta:
        raise UsageError(f"{folder}/meta.json does not record the input and the checksums of an earlier "
                         "mart-embed's output; rerun the same mart-embed command to add them")
    for key, kind in META_FIELDS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise damaged("meta.json", f"{key} is {meta.get(key)!r}, not a {kind.__name__}")
    if meta["dim"] < 1 or meta["rows"] < 0:
        raise damaged("meta.json", f"dim {meta['dim']}, rows {meta['rows']}")
    for path, key in ((need[1], "index_sha256"), (need[2], "embeddings_sha256")):
        if sha256_file(path) != meta[key]:
            raise UsageError(f"{path} does not match the sha256 that meta.json records: it was changed or damaged "
                             f"after mart-embed wrote it; {rerun}")
    try:
        emb = np.load(need[2], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise damaged("embeddings.npy", f"not a readable .npy ({' '.join(str(e).split())[:100]})") from None
    if not isinstance(emb, np.ndarray) or emb.dtype != np.float32 or emb.shape != (meta["rows"], meta["dim"]):
        raise damaged("embeddings.npy", f"holds {getattr(emb, 'dtype', '?')} {getattr(emb, 'shape', '?')}, "
                      f"meta.json says float32 ({meta['rows']}, {meta['dim']})")
    try:
        entries = _read_csv(need[1])
    except (OSError, csv.Error, UnicodeError) as e:
        raise damaged("index.csv", f"not a readable CSV ({e})") from None
    base = meta["input"] if meta["input_kind"] == "folder" else os.path.dirname(meta["input"])
    paths, durations, spans, seen = [], [], [], {}
    for line, e in enumerate(entries, start=2):
        if set(e) != set(INDEX_COLUMNS) or any(v is None for v in e.values()):
            raise damaged("index.csv", f"line {line} does not have the columns {','.join(INDEX_COLUMNS)}")
        try:
            offset, count, seconds = int(e["row_offset"]), int(e["n_rows"]), float(e["duration_s"])
        except ValueError:
            raise damaged("index.csv", f"line {line} holds a value that is not a number") from None
        if offset < 0 or count < 1 or offset + count > meta["rows"] or not np.isfinite(seconds) or seconds < 0:
            raise damaged("index.csv", f"line {line}: rows {offset}:{offset + count} of {meta['rows']}, "
                          f"duration {e['duration_s']}")
        path = os.path.normpath(os.path.join(base, e["path"]))
        if path in seen:
            raise damaged("index.csv", f"{e['path']!r} is listed twice (lines {seen[path]} and {line})")
        seen[path] = line
        paths.append(path)
        durations.append(seconds)
        spans.append((offset, count))
    with np.errstate(all="ignore"):  # non-finite rows stay non-finite: the caller names them
        vectors = np.stack([np.asarray(emb[o: o + n]).mean(0) for o, n in spans]).astype(np.float32) if spans \
            else np.zeros((0, meta["dim"]), np.float32)
    return Catalogue(folder, meta, paths, durations, vectors)


def _model_spec(text: str) -> Tuple[str, Optional[str]]:
    """``NAME`` or ``NAME=CKPT`` (argparse type)."""
    name, _, path = text.partition("=")
    if name not in all_names():
        raise argparse.ArgumentTypeError(f"unknown model {name!r}; choose from {', '.join(all_names())}")
    if _ and not path:
        raise argparse.ArgumentTypeError(f"{text!r}: no checkpoint after '='")
    return name, path or None


def build_parser() -> argparse.ArgumentParser:
    """The ``mart-embed`` command line."""
    p = argparse.ArgumentParser(
        prog="mart-embed", description="Embed a catalogue of audio files with a pretrained model, in shards.",
        epilog="Rerun the same command to resume an interrupted run. See docs/embedding.md.")
    p.add_argument("--model", required=True, type=_model_spec, metavar="{" + ",".join(all_names()) + "}[=CKPT]",
                   help="a model name (its packaged checkpoint) or NAME=CKPT")
    p.add_argument("--input", required=True, metavar="DIR|LIST",
                   help="folder of audio (walked recursively) or a text file of paths")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (shards/, index.csv, embeddings.npy, meta.json)")
    p.add_argument("--level", choices=["scene", "frames"], default="scene",
                   help="scene: one vector per track (default); frames: one per frame")
    p.add_argument("--layer", type=int, metavar="K", help="--level frames: the layer to keep (default -1, the last)")
    p.add_argument("--batch-size", type=positive(int), dest="batch_size", metavar="N",
                   help="--level scene: windows per forward pass (default: 32 s of audio per pass)")
    p.add_argument("--shard-size", type=positive(int), dest="shard_size", default=256, metavar="N",
                   help="tracks per shard (default 256): the most work a kill can lose")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--max-seconds", type=positive(float), dest="max_seconds", metavar="S",
                   help="embed only the first S seconds of each track")
    return p


@command("mart-embed")
def main(argv: Optional[List[str]] = None) -> int:
    """``mart-embed``: 0 when done, 2 for bad arguments, audio or checkpoints (one line on stderr)."""
    silence_known_noise()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed its message: return its status instead of exiting
        return e.code if isinstance(e.code, int) else 2
    if args.layer is not None and args.level != "frames":
        raise UsageError("--layer needs --level frames")
    args.layer = -1 if args.layer is None else args.layer
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
