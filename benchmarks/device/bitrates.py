"""What the kit's Opus bitrate does to the features the models see: ``mart-bench device-pack --measure-kbps``.

    mart-bench device-pack --data bench_data --measure-kbps 6,8,12,16,24 [--files 16] [--seconds 30]

For a seeded sample of the pool's files (``seconds`` from the middle of each), every bitrate: encode as
the kit does (16 kHz mono Ogg/Opus through libsndfile), decode, and compare the log-mel spectrogram of
the models' front end (64 and 128 mel bands, hop 256, the CPU and paper settings) with the original's:
the mean absolute difference in dB over the bins within 60 dB of the clip's loudest, and the share of
those bins off by more than 3 dB; with the bytes per hour each bitrate gives, and so the size of the
whole pool at that bitrate. Nothing is written but the report (``--out`` JSON, optional).
"""
from __future__ import annotations

import os
import random
import tempfile
from typing import Dict, List, Sequence

import numpy as np
import soundfile as sf
import torch

from mart_upstream.errors import UsageError

from .pack import SR, _write, list_audio

TOP_DB = 60.0


def _logmel(x: np.ndarray, n_mels: int) -> np.ndarray:
    import torchaudio.transforms as T

    mel = T.MelSpectrogram(SR, n_fft=1024, hop_length=256, n_mels=n_mels, power=2.0)
    return (10 * torch.log10(mel(torch.from_numpy(x)) + 1e-10)).numpy()


def _sample(pool: str, files: int, seconds: float, seed: int) -> List[np.ndarray]:
    rels = list_audio(pool)
    if not rels:
        raise UsageError(f"no audio files under {pool}")
    random.Random(seed).shuffle(rels)
    out = []
    for rel in rels:
        path = os.path.join(pool, *rel.split("/"))
        info = sf.info(path)
        if info.samplerate != SR or info.frames < seconds * SR:
            continue  # the pool of `mart-bench data` is 16 kHz; shorter files are left out of the sample
        start = (info.frames - int(seconds * SR)) // 2
        x, _ = sf.read(path, start=start, frames=int(seconds * SR), dtype="float32", always_2d=True)
        out.append(np.clip(x.mean(axis=1), -1, 1))
        if len(out) == files:
            break
    if not out:
        raise UsageError(f"no 16 kHz file of at least {seconds:g} s under {pool}")
    return out


def measure(pool: str, kbps_list: Sequence[float], files: int = 16, seconds: float = 30.0, seed: int = 0) -> Dict:
    """Per bitrate: bytes per hour, the pool's size at it, and the log-mel differences (see the module)."""
    clips = _sample(pool, files, seconds, seed)
    pool_seconds = sum(sf.info(os.path.join(pool, *r.split("/"))).duration for r in list_audio(pool))
    refs = {n: [_logmel(c, n) for c in clips] for n in (64, 128)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="kbps-") as tmp:
        for kbps in kbps_list:
            size, errs = 0, {64: [], 128: []}
            for i, c in enumerate(clips):
                path = os.path.join(tmp, f"{i}.ogg")
                _write(path, c, "opus", kbps)
                size += os.path.getsize(path)
                y, sr = sf.read(path, dtype="float32")
                y = np.pad(y, (0, max(0, len(c) - len(y))))[: len(c)]
                for n in (64, 128):
                    ref, got = refs[n][i], _logmel(y, n)
                    keep = ref > ref.max() - TOP_DB
                    errs[n].append(np.abs(got - ref)[keep])
            row = {"kbps": kbps, "mib_per_hour": size / (len(clips) * seconds) * 3600 / 2**20}
            row["pool_mib"] = row["mib_per_hour"] * pool_seconds / 3600
            for n in (64, 128):
                e = np.concatenate(errs[n])
                row[f"mel{n}_mean_abs_db"] = float(e.mean())
                row[f"mel{n}_share_over_3db"] = float((e > 3.0).mean())
            rows.append(row)
    return {"pool": os.path.abspath(pool), "pool_hours": pool_seconds / 3600, "files": len(clips),
            "seconds_each": seconds, "rows": rows}


def markdown(res: Dict) -> str:
    lines = [f"{res['files']} clips of {res['seconds_each']:g} s from {res['pool']} ({res['pool_hours']:.1f} h in all); "
             f"log-mel (hop 256) differences over the bins within {TOP_DB:g} dB of each clip's loudest:", "",
             "| kbit/s | MiB per hour | whole pool (MiB) | 64 mels: mean abs dB | > 3 dB | 128 mels: mean abs dB | > 3 dB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['kbps']:g} | {r['mib_per_hour']:.1f} | {r['pool_mib']:.0f} | {r['mel64_mean_abs_db']:.2f} | "
                     f"{r['mel64_share_over_3db']:.1%} | {r['mel128_mean_abs_db']:.2f} | {r['mel128_share_over_3db']:.1%} |")
    return "\n".join(lines) + "\n"
