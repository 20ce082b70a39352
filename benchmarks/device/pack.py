"""``mart-bench device-pack``: everything one GPU pretraining run needs, in one folder under a size limit.

    mart-bench device-pack [--out .device_kit] [--data bench_data] [--max-mib 48] [--kbps 16]
                           [--wheels-from DIR | --no-wheels]

* ``KIT/audio/``: every audio file of the pretraining pool (``DATA/pretrain`` as built by
  ``mart-bench data``: ``rendered/``, ``recorded/``) re-encoded as 16 kHz mono Ogg/Opus at the same
  relative path (extension ``.ogg``), plus the small ``.csv`` / ``.json`` files of the pool root
  (e.g. ``groups.csv``) verbatim. Digitally silent files are left out (``mart-pretrain`` would skip
  them). Where libsndfile cannot write and read back Opus, MP3 is used instead, and the manifest says so.
* ``KIT/wheels/``: soundfile (it bundles libsndfile), cffi and pycparser for CPython 3.12 on
  manylinux x86_64, the packages a bare torch machine lacks (``pip download``; ``--wheels-from DIR``
  copies them from a folder instead).
* ``KIT/manifest.json``: every file with its duration and size, the totals, the wheels, the source
  data and the code commit.

The kit is built in a temp folder beside ``--out`` and renamed into place; a kit over ``--max-mib``
is an error naming its size, and nothing is left behind.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
from tqdm import tqdm

from mart_upstream.argtypes import comma_list
from mart_upstream.audio import AUDIO_EXTENSIONS, is_audio_name
from mart_upstream.errors import AudioError, UsageError
from mart_upstream.train.data import SILENCE_PEAK
from mart_upstream.fileio import replace_dir, sha256_file, staging_dir, write_json

from ..subprocesses import ROOT as REPO_ROOT

log = logging.getLogger("mart-bench.device")
DEFAULT_KIT = os.path.join(REPO_ROOT, ".device_kit")
SR = 16000
# What a bare Python 3.12 + torch machine lacks to read audio; the versions of this toolkit's environment.
WHEELS = (("soundfile", "0.14.0"), ("cffi", "2.1.1"), ("pycparser", "3.0"))
WHEEL_PYTHON = "3.12"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
SMALL_FILE = 1 << 20  # pool-root .csv/.json files up to this size are copied
CODECS = {  # tried in this order
    "opus": {"format": "OGG", "subtype": "OPUS", "ext": ".ogg", "name": "Ogg/Opus"},
    "mp3": {"format": "MP3", "subtype": "MPEG_LAYER_III", "ext": ".mp3", "name": "MP3"},
}



def opus_compression_level(kbps: float) -> float:
    """libsndfile maps its compression level c in [0, 1] linearly onto an Opus bitrate of
    256 - 250 c kbit/s (per channel; variable bitrate, so files come out near, not at, the target)."""
    return float(min(1.0, max(0.0, (256.0 - kbps) / 250.0)))


def _write(path: str, x: np.ndarray, codec: str, kbps: float) -> None:
    c = CODECS[codec]
    level = opus_compression_level(kbps) if codec == "opus" else None
    sf.write(path, x, SR, format=c["format"], subtype=c["subtype"], compression_level=level)


def _check_codec(codec: str, folder: str, kbps: float) -> Optional[str]:
    """None when ``codec`` works here: written at 16 kHz, read back at 16 kHz with its length, and a
    seek (``sf.read(start=, frames=)``) returns the same samples as reading from the start; else why not."""
    t = np.arange(3 * SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 1.3 * t)) / 2).astype(np.float32)
    path = os.path.join(folder, f"probe{CODECS[codec]['ext']}")
    try:
        _write(path, x, codec, kbps)
        info = sf.info(path)
        whole, sr = sf.read(path, dtype="float32")
        part, _ = sf.read(path, start=SR, frames=SR // 2, dtype="float32")
    except Exception as e:  # noqa: BLE001 - any libsndfile failure means the codec is unusable
        return f"{type(e).__name__}: {str(e).strip()}"
    finally:
        if os.path.exists(path):
            os.unlink(path)
    if sr != SR or info.samplerate != SR:
        return f"read back at {sr} Hz, not {SR}"
    if abs(len(whole) - len(x)) > SR // 10:
        return f"read back {len(whole)} samples of {len(x)}"
    ref = whole[SR:SR + SR // 2]
    if len(part) != SR // 2 or np.abs(part - ref).max() > 0.05:
        return "seeking (sf.read start=, frames=) does not return the samples read from the start"
    return None


def pick_codec(folder: str, kbps: float) -> Tuple[str, Dict[str, str]]:
    """The first codec of ``CODECS`` that works here, and why the ones before it did not."""
    failed: Dict[str, str] = {}
    for codec in CODECS:
        why = _check_codec(codec, folder, kbps)
        if why is None:
            if failed:
                log.warning("%s is not usable here (%s); the kit uses %s instead", ", ".join(failed),
                            "; ".join(failed.values()), CODECS[codec]["name"])
            return codec, failed
        failed[codec] = why
    raise UsageError("libsndfile here can neither write nor read back Ogg/Opus or MP3 at 16 kHz: "
                    + "; ".join(f"{k}: {v}" for k, v in failed.items()))


def list_audio(pool: str) -> List[str]:
    """Audio files under ``pool``, relative paths with '/', sorted."""
    found = []
    for d, dirs, names in os.walk(pool):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        found += [os.path.relpath(os.path.join(d, n), pool).replace(os.sep, "/") for n in names
                  if is_audio_name(n)]
    return sorted(found)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def encode_file(job: Tuple[str, str, str, str, float]) -> Dict:
    """(pool, rel, kit audio folder, codec, kbps) -> the file's manifest entry (``skipped`` when silent)."""
    pool, rel, out_dir, codec, kbps = job
    src = os.path.join(pool, *rel.split("/"))
    try:
        data, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"cannot read {src}: {str(e).strip() or type(e).__name__}") from e
    x = data.mean(axis=1)
    if sr != SR:
        import torch
        import torchaudio.functional as AF

        x = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), sr, SR).numpy()
    entry = {"source": rel, "source_rate": int(sr), "source_channels": int(data.shape[1])}
    if x.size == 0 or float(np.abs(x).max()) < SILENCE_PEAK:
        return dict(entry, skipped="silent" if x.size else "empty")
    out_rel = os.path.splitext(rel)[0] + CODECS[codec]["ext"]
    dst = os.path.join(out_dir, *out_rel.split("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        _write(dst, np.clip(x, -1.0, 1.0), codec, kbps)
        info = sf.info(dst)
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"cannot encode {src} as {CODECS[codec]['name']}: {str(e).strip()}") from e
    if info.samplerate != SR or abs(info.frames - x.size) > SR // 10:
        raise AudioError(f"{dst}: reads back as {info.frames} samples at {info.samplerate} Hz, "
                        f"written {x.size} at {SR} Hz")
    return dict(entry, path=out_rel, seconds=round(info.frames / SR, 3), bytes=os.path.getsize(dst))


def _wheel_package(filename: str) -> str:
    return filename.split("-")[0].lower().replace("_", "-")


def fetch_wheels(dest: str, wheels_from: Optional[str] = None) -> List[Dict]:
    """The ``WHEELS`` into ``dest``: downloaded for CPython 3.12 manylinux x86_64, or copied from a folder."""
    os.makedirs(dest, exist_ok=True)
    wanted = [name for name, _ in WHEELS]
    if wheels_from:
        if not os.path.isdir(wheels_from):
            raise UsageError(f"--wheels-from: {wheels_from} is not a folder")
        files = sorted(glob.glob(os.path.join(wheels_from, "*.whl")))
        missing = [n for n in wanted if not any(_wheel_package(os.path.basename(f)) == n for f in files)]
        if missing:
            raise UsageError(f"--wheels-from {wheels_from}: no wheel for {', '.join(missing)} "
                            f"(need {', '.join(wanted)})")
        for f in files:
            if _wheel_package(os.path.basename(f)) in wanted:
                shutil.copy2(f, dest)
    else:
        with tempfile.TemporaryDirectory(prefix=".wheels-", dir=dest) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   WHEEL_PYTHON, "--implementation", "cp", "-d", tmp, "--disable-pip-version-check", "-q"]
            for p in WHEEL_PLATFORMS:
                cmd += ["--platform", p]
            cmd += [f"{n}=={v}" for n, v in WHEELS]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise UsageError(f"pip download of {', '.join(f'{n}=={v}' for n, v in WHEELS)} failed "
                                f"(exit {r.returncode}; without network use --wheels-from DIR or --no-wheels):\n"
                                f"{r.stderr.strip()[-1500:]}")
            for f in glob.glob(os.path.join(tmp, "*.whl")):
                shutil.move(f, dest)
    out = []
    for f in sorted(glob.glob(os.path.join(dest, "*.whl"))):
        out.append({"file": os.path.basename(f), "package": _wheel_package(os.path.basename(f)),
                    "bytes": os.path.getsize(f), "sha256": sha256_file(f)})
    return out


def describe_source(data: Optional[str], pool: str) -> Dict:
    """Where the audio came from: the pool folder and, for a ``mart-bench data`` folder, what it holds."""
    out = {"pool": os.path.abspath(pool), "data": os.path.abspath(data) if data else None,
           "description": f"the audio under {os.path.abspath(pool)}"}
    manifest = os.path.join(data, "manifest.json") if data else None
    if manifest and os.path.isfile(manifest):
        with open(manifest) as f:
            m = json.load(f)
        p = m.get("pretrain", {})
        out["description"] = (f"the pretraining pool of `mart-bench data --profile {m.get('profile')} --seed "
                              f"{m.get('seed')}`: {p.get('rendered_clips')} rendered clips and "
                              f"{len(p.get('recorded_tracks', []))} recordings")
        out["data_manifest_sha256"] = sha256_file(manifest)
    return out


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(folder) for n in names)


def _place(tmp: str, out: str) -> None:
    """Rename the finished kit onto ``out``, replacing an earlier kit (never any other folder)."""
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)
                               and not os.path.isfile(os.path.join(out, "manifest.json"))):
        raise UsageError(f"{out} exists and is neither empty nor a kit (no manifest.json); remove it or pick "
                        "another --out")
    replace_dir(tmp, out)


def resume_states(run: str) -> List[str]:
    """The hand-over states of a device run (``RUN/<model>.ckpt`` with their optimizer state), to continue."""
    from mart_upstream.checkpoint import is_run_state, read_checkpoint

    if not os.path.isdir(run):
        raise UsageError(f"--resume {run}: no such run folder (use `mart-bench device-unpack` first)")
    found = []
    for name in sorted(os.listdir(run)):
        path = os.path.join(run, name)
        if name.endswith(".ckpt") and os.path.isfile(path):
            state = read_checkpoint(path)
            if is_run_state(state) and state["model_name"] + ".ckpt" == name:
                found.append(path)
    if not found:
        raise UsageError(f"--resume {run}: no <model>.ckpt with an optimizer state there (a device run "
                         "written with --handover, or a run's last.ckpt renamed <model>.ckpt)")
    return found


def part_folder(kit: str, part: int) -> str:
    """Where part ``part`` (1-based) of a split kit lives: the kit itself, then ``KIT.part2``, ``KIT.part3``, ..."""
    return kit if part == 1 else f"{kit}.part{part}"


def split_parts(files: List[Dict], first_bytes: int, limit: int) -> List[int]:
    """Assign each audio file (in order) a part: part 1 holds ``first_bytes`` already (wheels, states),
    every part at most ``limit`` bytes; a single file larger than a part is an error."""
    parts, used, part = [], first_bytes, 1
    for e in files:
        if e["bytes"] > limit - (first_bytes if part == 1 else 0) and used == (first_bytes if part == 1 else 0):
            raise UsageError(f"{e['source']}: {e['bytes'] / 2**20:.1f} MiB encoded, more than one part of "
                             f"{limit / 2**20:.0f} MiB holds; lower --kbps")
        if used + e["bytes"] > limit:
            part, used = part + 1, 0
        parts.append(part)
        used += e["bytes"]
    return parts


def pack(out: str, pool: str, data: Optional[str] = None, max_mib: float = 48.0, kbps: float = 16.0,
         wheels_from: Optional[str] = None, wheels: bool = True, workers: int = 2,
         resume: Optional[str] = None, split: bool = False) -> Dict:
    """Build the kit in a staging folder beside ``out``, check its size, rename it into place; -> manifest."""
    from ..run.model_cards import commit

    if not os.path.isdir(pool):
        raise UsageError(f"pretraining folder {pool} does not exist (build it with `mart-bench data`)")
    rels = list_audio(pool)
    if not rels:
        raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {pool}")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = staging_dir(parent, f".tmp-{os.path.basename(os.path.abspath(out))}-")
    staged = [tmp]
    try:
        states = resume_states(resume) if resume else []
        if states:  # the runs a device call continues (benchmarks/device/pretrain.py --resume-from KIT/resume)
            os.makedirs(os.path.join(tmp, "resume"))
            for path in states:
                shutil.copy2(path, os.path.join(tmp, "resume", os.path.basename(path)))
        wheel_list = fetch_wheels(os.path.join(tmp, "wheels"), wheels_from) if wheels else []
        codec, failed = pick_codec(tmp, kbps)
        audio = os.path.join(tmp, "audio")
        os.makedirs(audio)
        jobs = [(pool, rel, audio, codec, kbps) for rel in rels]
        bar = dict(total=len(jobs), desc=f"encoding {CODECS[codec]['name']}", unit="file", disable=None, leave=False)
        if workers > 1:
            with mp.get_context("fork").Pool(workers, initializer=_init_worker) as p:
                entries = list(tqdm(p.imap(encode_file, jobs), **bar))
        else:
            entries = [encode_file(j) for j in tqdm(jobs, **bar)]
        files = [e for e in entries if "skipped" not in e]
        skipped = [e for e in entries if "skipped" in e]
        for e in skipped:
            log.warning("%s: %s; left out of the kit", os.path.join(pool, e["source"]), e["skipped"])
        if not files:
            raise AudioError(f"every audio file under {pool} is silent or empty")
        extra = []
        for name in sorted(os.listdir(pool)):
            path = os.path.join(pool, name)
            if (name.lower().endswith((".csv", ".json")) and os.path.isfile(path)
                    and os.path.getsize(path) <= SMALL_FILE):
                shutil.copy2(path, os.path.join(audio, name))
                extra.append(name)
        audio_bytes = sum(e["bytes"] for e in files)
        seconds = sum(e["seconds"] for e in files)
        manifest = {
            "format": {"codec": CODECS[codec]["name"], "subtype": CODECS[codec]["subtype"], "sample_rate": SR,
                       "channels": 1, "target_kbps": kbps if codec == "opus" else None,
                       "not_usable": failed, "soundfile": sf.__version__, "libsndfile": sf.__libsndfile_version__},
            "files": files, "skipped": skipped, "pool_files": extra,
            "total_seconds": round(seconds, 3), "audio_bytes": audio_bytes,
            "wheels": wheel_list, "source": describe_source(data, pool), "commit": commit(),
            "resume": [os.path.basename(p) for p in states],
        }
        manifest["total_bytes"] = folder_bytes(tmp)  # everything but the manifest itself
        if split:  # a kit larger than one transfer: KIT, KIT.part2, ... each under --max-mib, carried in turn
            # part 1 also holds the wheels, the states, the pool's small files and the manifest itself
            first = manifest["total_bytes"] - audio_bytes + len(json.dumps(manifest)) + 16 * len(files) + 1024
            for e, part in zip(files, split_parts(files, first, int(max_mib * 2**20))):
                e["part"] = part
            manifest["parts"] = max(e["part"] for e in files)
            for part in range(2, manifest["parts"] + 1):
                folder = staging_dir(parent, f".tmp-{os.path.basename(os.path.abspath(out))}.part{part}-")
                staged.append(folder)
                write_json(os.path.join(folder, "part.json"), {"part": part, "of": manifest["parts"],
                                                                "kit_commit": manifest["commit"]})
                for e in files:
                    if e["part"] == part:
                        dst = os.path.join(folder, "audio", *e["path"].split("/"))
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                        os.replace(os.path.join(audio, *e["path"].split("/")), dst)
        write_json(os.path.join(tmp, "manifest.json"), manifest, sort_keys=False)
        size = max(folder_bytes(f) for f in staged)
        if size > max_mib * 2**20:
            raise UsageError(f"the kit is {size / 2**20:.1f} MiB, over --max-mib {max_mib:g} (audio "
                            f"{audio_bytes / 2**20:.1f} MiB for {seconds / 3600:.2f} h, wheels "
                            f"{sum(w['bytes'] for w in wheel_list) / 2**20:.1f} MiB): lower --kbps or pack less audio")
        for part in range(2, 100):  # parts of an earlier kit would be joined with this one: only parts go
            old = part_folder(out, part)
            if not os.path.exists(old):
                break
            if not os.path.isfile(os.path.join(old, "part.json")):
                raise UsageError(f"{old} exists and is not a part of a kit (no part.json); remove it")
            if part > len(staged):
                shutil.rmtree(old)
        _place(tmp, out)
        for part, folder in enumerate(staged[1:], 2):
            replace_dir(folder, part_folder(out, part))
    except BaseException:
        for folder in staged:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    manifest["kit_bytes"] = size
    return manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_KIT, help="kit folder (default: .device_kit in the repository)")
    p.add_argument("--data", default="bench_data", help="a folder built by `mart-bench data` (default bench_data)")
    p.add_argument("--pretrain-data", help="the pretraining audio folder (default DATA/pretrain)")
    p.add_argument("--max-mib", type=float, default=48.0, help="size limit of the whole kit in MiB (default 48: with "
                   "the repository's ~13 MiB it stays under the 64 MiB a device call carries)")
    p.add_argument("--kbps", type=float, default=16.0, help="Opus bitrate target in kbit/s (default 16: the multi pool, "
                   "6.1 h, fits; GPU training on it is in docs/offline_bench.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--wheels-from", metavar="DIR", help="copy the soundfile, cffi, pycparser wheels from DIR "
                                                         "instead of downloading them")
    g.add_argument("--no-wheels", action="store_true", help="no wheels (the GPU machine has soundfile)")
    p.add_argument("--workers", type=int, default=2, help="encoding processes (default 2)")
    p.add_argument("--measure-kbps", metavar="LIST",
                   help="build no kit: measure what each Opus bitrate (e.g. 6,8,12,16,24) does to the pool's log-mel "
                        "features and its size (benchmarks/device/bitrates.py)")
    p.add_argument("--files", type=int, default=16, help="with --measure-kbps: clips sampled (default 16)")
    p.add_argument("--split", action="store_true",
                   help="a kit over --max-mib becomes KIT, KIT.part2, ... each under it, to carry in successive calls "
                        "to the same machine; the device driver joins them")
    p.add_argument("--resume", metavar="RUN", help="a device run folder (from `mart-bench device-unpack`): its "
                                                    "<model>.ckpt states go into KIT/resume, and the next device call "
                                                    "continues those runs")


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pool = args.pretrain_data or os.path.join(args.data, "pretrain")
    if not args.max_mib > 0 or not args.kbps > 0:
        raise UsageError("--max-mib and --kbps must be positive")
    data = args.data if os.path.isdir(args.data) else None
    if args.measure_kbps:
        from . import bitrates

        try:
            kbps = comma_list(args.measure_kbps, float)
        except ValueError:
            raise UsageError(f"--measure-kbps must be comma-separated numbers, got {args.measure_kbps!r}") from None
        if not kbps or any(not 6 <= k <= 256 for k in kbps):
            raise UsageError("--measure-kbps: Opus bitrates between 6 and 256 kbit/s")
        res = bitrates.measure(pool, kbps, max(1, args.files))
        print(bitrates.markdown(res))
        return 0
    m = pack(args.out, pool, data, args.max_mib, args.kbps,
             args.wheels_from, not args.no_wheels, max(1, args.workers), args.resume, args.split)
    w = sum(x["bytes"] for x in m["wheels"])
    print(f"wrote {args.out}: {len(m['files'])} files, {m['total_seconds'] / 3600:.2f} h of {m['format']['codec']} "
          f"audio ({m['audio_bytes'] / 2**20:.1f} MiB), {len(m['wheels'])} wheels ({w / 2**20:.1f} MiB); "
          f"{m['kit_bytes'] / 2**20:.1f} MiB in all" + (f"; {len(m['skipped'])} silent files left out"
                                                        if m["skipped"] else "")
          + (f"; runs to continue: {', '.join(m['resume'])}" if m["resume"] else "")
          + (f"; in {m['parts']} parts: {', '.join(os.path.basename(part_folder(args.out, k)) for k in range(1, m['parts'] + 1))}"
             if m.get("parts", 1) > 1 else ""))
    return 0
