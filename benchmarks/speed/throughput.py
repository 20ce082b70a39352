"""Embedding throughput and FLOPs: every encoder and embedding path on the same random audio, at
batch 1 and batched, as audio seconds per wall-clock second, with the FLOPs each call executes and
the fraction of the machine's matmul rate that this amounts to."""
from __future__ import annotations

import sys
import time
from typing import Dict, List

import torch
from tqdm import tqdm

from .measure import count_flops, median_time
from .subjects import PATHS, SR, build, computed_samples, embed_call, inference_parameters, window_samples


def make_audio(batch: int, seconds: float, device: str, seed: int = 0) -> torch.Tensor:
    """[batch, seconds * 16 kHz] noise at a music-like level (the values do not change the speed)."""
    gen = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(batch, int(round(seconds * SR)), generator=gen)).to(device)


def flops_per_audio_second(model, path: str, device: str) -> float:
    """FLOPs per second of audio once inputs are long: one call on exactly one unit of work (a
    frame chunk or a window), whose padding and chunk context long inputs also pay per unit."""
    n = window_samples(model, path)
    wav = make_audio(1, n / SR, device, seed=1)
    return count_flops(lambda: embed_call(model, path)(wav)) / (n / SR)


def measure_model(name: str, args, audio: torch.Tensor, matmul: float) -> List[Dict]:
    model = build(name, args.device, tiny=args.tiny)
    rows = []
    b, n = audio.shape
    seconds = n / SR
    for path in PATHS:
        fn = embed_call(model, path)
        one = audio[:1]
        # Every row is processed alone (windows or chunks), so a batch executes b x one row's FLOPs.
        flops_row = count_flops(lambda: fn(one))
        row = {
            "model": name,
            "path": path,
            "params": inference_parameters(model),
            "clip_seconds": seconds,
            "computed_seconds_per_clip": computed_samples(model, path, n) / SR,
            "gflop_per_audio_s": flops_per_audio_second(model, path, args.device) / 1e9,
            "gflop_per_clip": flops_row / 1e9,
        }
        for batch in sorted({1, b}):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            t = median_time(lambda: fn(audio[:batch]), args.repeats, args.device, warmup=args.warmup)
            cpu_use = (time.process_time() - cpu0) / (time.perf_counter() - wall0) / torch.get_num_threads()
            achieved = batch * flops_row / t / 1e9
            row[f"b{batch}"] = {
                "batch": batch,
                "seconds": t,
                "x_realtime": batch * seconds / t,
                "achieved_gflops": achieved,
                "matmul_fraction": achieved / matmul,
                "cpu_utilisation": cpu_use,
            }
        rows.append(row)
        big = row[f"b{b}"]
        tqdm.write(f"  {name:9s} {path:6s} b1 {row['b1']['x_realtime']:8.1f}x  b{b} {big['x_realtime']:8.1f}x "
                   f"realtime, {row['gflop_per_audio_s']:.2f} GFLOP/audio s, {big['matmul_fraction']:.1%} of matmul",
                   file=sys.stderr)
    return rows


def run_throughput(args, matmul: float) -> List[Dict]:
    audio = make_audio(args.batch, args.clip_seconds, args.device)
    rows: List[Dict] = []
    for name in tqdm(args.models, desc="embedding throughput", file=sys.stderr, leave=False):
        rows += measure_model(name, args, audio, matmul)
    return rows
