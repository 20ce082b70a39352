"""Embedding throughput and FLOPs: every encoder, embedding path and variant (plain eager, the fast
inference copy, ONNX Runtime) on the same random audio, at batch 1 and batched, as audio seconds per
wall-clock second, with the FLOPs each call executes, the fraction of the machine's matmul and
convolution rates that this amounts to, and the ratios to the plain variant and to SampleCNN."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Dict, List

import torch
from tqdm import tqdm

from mart_upstream.errors import MartError

from .measure import count_flops, median_time
from .subjects import (PATHS, SR, build, computed_samples, embed_call, inference_parameters, prepare, variants_of,
                       window_samples)


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


def _time_batches(fn, audio: torch.Tensor, args, flops_row: float) -> Dict[str, Dict]:
    """Median wall time of ``fn`` at batch 1 and at the full batch, with the rate it achieves."""
    b, n = audio.shape
    out = {}
    for batch in sorted({1, b}):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        t = median_time(lambda: fn(audio[:batch]), args.repeats, args.device, warmup=args.warmup)
        cpu_use = (time.process_time() - cpu0) / (time.perf_counter() - wall0) / torch.get_num_threads()
        out[f"b{batch}"] = {
            "batch": batch,
            "seconds": t,
            "x_realtime": batch * n / SR / t,
            "achieved_gflops": batch * flops_row / t / 1e9,
            "cpu_utilisation": cpu_use,
        }
    return out


def measure_model(name: str, args, audio: torch.Tensor, workdir: str) -> List[Dict]:
    base = build(name, args.device, tiny=args.tiny)
    rows = []
    b, n = audio.shape
    one = audio[:1]
    # FLOPs of the algorithm (the plain model's); every row is processed alone (windows or chunks), so
    # a batch executes b x one row's FLOPs
    plain = {path: count_flops(lambda: embed_call(base, path)(one)) for path in PATHS}
    per_audio_s = {path: flops_per_audio_second(base, path, args.device) for path in PATHS}
    for variant in variants_of(name, args.variants):
        if variant == "onnx" and args.device != "cpu":
            continue  # ONNX Runtime runs here on the CPU only
        try:
            model = prepare(base, variant, os.path.join(workdir, name))
        except MartError as e:  # e.g. the onnx packages are not installed
            rows += [{"model": name, "path": path, "variant": variant, "error": str(e)} for path in PATHS]
            tqdm.write(f"  {name:9s} {variant:5s}: skipped ({e})", file=sys.stderr)
            continue
        for path in PATHS:
            fn = embed_call(model, path)
            # what this variant executes (the fast one skips repeated silent windows); ONNX: the plain count
            flops_row = plain[path] if variant == "onnx" else count_flops(lambda: fn(one))
            row = {
                "model": name,
                "path": path,
                "variant": variant,
                "params": inference_parameters(base),
                "clip_seconds": n / SR,
                "computed_seconds_per_clip": computed_samples(base, path, n) / SR,
                "gflop_per_audio_s": per_audio_s[path] / 1e9,
                "gflop_per_clip": plain[path] / 1e9,
                "executed_gflop_per_clip": flops_row / 1e9,
            }
            row.update(_time_batches(fn, audio, args, flops_row))
            rows.append(row)
            big = row[f"b{b}"]
            tqdm.write(f"  {name:9s} {path:6s} {variant:5s} b1 {row['b1']['x_realtime']:8.1f}x  b{b} "
                       f"{big['x_realtime']:8.1f}x realtime, {big['achieved_gflops']:.1f} GFLOP/s", file=sys.stderr)
    return rows


def relate(rows: List[Dict], rates: Dict[str, float]) -> None:
    """Add to every row, per batch: the fraction of the measured matmul and convolution rates, the
    speed-up over the same model's plain variant, and the ratio to the faster SampleCNN variant."""
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        for key, v in r.items():
            if not (isinstance(v, dict) and "x_realtime" in v):
                continue
            v["matmul_fraction"] = v["achieved_gflops"] / rates["matmul"]
            v["conv_fraction"] = v["achieved_gflops"] / rates["conv"] if rates.get("conv") else None
            plain = [p[key]["x_realtime"] for p in ok
                     if (p["model"], p["path"], p["variant"]) == (r["model"], r["path"], "plain") and key in p]
            v["vs_plain"] = v["x_realtime"] / plain[0] if plain else None
            ref = [p[key]["x_realtime"] for p in ok if p["model"] == "samplecnn" and p["path"] == r["path"]
                   and key in p]
            v["vs_samplecnn"] = v["x_realtime"] / max(ref) if ref else None


def run_throughput(args) -> List[Dict]:
    audio = make_audio(args.batch, args.clip_seconds, args.device)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="speed-onnx-") as workdir:
        for name in tqdm(args.models, desc="embedding throughput", file=sys.stderr, leave=False):
            rows += measure_model(name, args, audio, workdir)
    return rows
