"""Time and peak memory against input length: one input of each length through ``frame_features``
and ``clip_embeddings``, each (model, variant, path, length) in a fresh process.

Memory is the peak resident set size during the timed calls (VmHWM, reset just before them) above
the resident size just before them (after building the model, allocating the input and one warm-up
call on the first ``warmup_seconds``); on CUDA, the peak allocated device memory above what was
allocated before.
The padded copy of the input that the path makes and the result it returns necessarily grow with the
length; ``working_mb`` is the peak minus those two, the memory that should not grow.
"""
from __future__ import annotations

import gc
import statistics
import sys
import time
from typing import Dict, List

import torch
from tqdm import tqdm

from .isolate import run_isolated
from .measure import current_rss_mb, load_average, peak_rss_mb, reset_peak_rss, sync
from .subjects import OUR_MODELS, SR, build, embed_call, nbytes, prepare, variants_of, window_samples
from .throughput import make_audio


def input_copy_samples(model, path: str, n: int) -> int:
    """Samples of the padded copy a path makes of a one-row input of ``n`` samples (0: no copy)."""
    if path == "clip" and hasattr(model, "feature_chunk"):
        return 0  # our clip path reads its windows from the input (only a partial last one is padded)
    if path == "frames" and hasattr(model, "feature_chunk"):
        from mart_upstream.embedding import feature_chunks

        total, _ = feature_chunks(model, n)
        return total + 2 * model.feature_context
    size = window_samples(model, path)
    padded = max(1, -(-n // size)) * size
    return padded if padded != n else 0


def probe_length(spec: dict) -> dict:
    """Runs in the child process. spec: model, path, variant, seconds, device, tiny, repeats,
    repeat_max_seconds, warmup_seconds."""
    device = spec["device"]
    cuda = device.startswith("cuda")
    model = build(spec["model"], device, tiny=spec.get("tiny", False))
    variant = spec.get("variant", "plain")
    fn = embed_call(prepare(model, variant), spec["path"])
    seconds = float(spec["seconds"])
    wav = make_audio(1, seconds, device)
    n = wav.shape[1]
    with torch.no_grad():
        fn(wav[:, : max(1, min(n, int(spec["warmup_seconds"] * SR)))])
    sync(device)
    gc.collect()
    reset = reset_peak_rss()
    rss_before = current_rss_mb()
    # Without a reset the warm-up's peak still counts: measure above it instead (an underestimate).
    base = rss_before if reset else peak_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        alloc_before = torch.cuda.memory_allocated()
    runs = int(spec["repeats"]) if seconds <= spec["repeat_max_seconds"] else 1
    times, out = [], None
    cpu0 = time.process_time()
    for _ in range(max(1, runs)):
        out = None
        t = time.perf_counter()
        with torch.no_grad():
            out = fn(wav)
        sync(device)
        times.append(time.perf_counter() - t)
    cpu_s = time.process_time() - cpu0
    if cuda:
        growth = (torch.cuda.max_memory_allocated() - alloc_before) / 2**20
    else:
        # Linux updates RSS counters lazily (per-thread caches of up to 64 pages): a call that allocates
        # next to nothing can read a peak a fraction of a MB below the base. A peak cannot shrink: clamp.
        growth = max(0.0, peak_rss_mb() - base)
    median = statistics.median(times)
    copy_mb = input_copy_samples(model, spec["path"], n) * wav.element_size() / 2**20
    out_mb = nbytes(out) / 2**20
    return {
        "model": spec["model"],
        "path": spec["path"],
        "variant": variant,
        "seconds": seconds,
        "runs": len(times),
        "time_s": median,
        "time_per_audio_s": median / seconds,
        "x_realtime": seconds / median,
        "rss_before_mb": rss_before,
        "peak_reset": reset,
        "peak_growth_mb": growth,
        "input_mb": wav.numel() * wav.element_size() / 2**20,
        "input_copy_mb": copy_mb,
        "output_mb": out_mb,
        "working_mb": growth - copy_mb - out_mb,
        "memory": "cuda max_memory_allocated" if cuda else ("VmHWM" if reset else "peak RSS above the warm-up peak"),
        # CPU seconds per wall second per torch thread: well below 1 on a CPU run means waiting
        # (memory allocation, or other processes on the same cores)
        "cpu_utilisation": cpu_s / sum(times) / torch.get_num_threads(),
        "load_average": load_average(),
    }


def checks(rows: List[Dict], linear_max: float, flat_max: float, linear_from: float) -> List[Dict]:
    """Per (model, path, variant): does time per audio second stay within ``linear_max`` x across
    lengths (all lengths, and lengths >= ``linear_from`` s, where a chunk's padding no longer dominates)
    and does working memory grow by less than ``flat_max`` from the second-longest to the longest input?"""
    out = []
    keys = []

    def key(r):
        return r["model"], r["path"], r.get("variant", "plain")

    for r in rows:
        if "error" not in r and key(r) not in keys:
            keys.append(key(r))
    for model, path, variant in keys:
        rs = sorted((r for r in rows if "error" not in r and key(r) == (model, path, variant)),
                    key=lambda r: r["seconds"])
        per = [r["time_per_audio_s"] for r in rs]
        long = [r["time_per_audio_s"] for r in rs if r["seconds"] >= linear_from] or per[-1:]
        spread_all, spread_long = max(per) / min(per), max(long) / min(long)
        c = {"model": model, "path": path, "variant": variant, "lengths": [r["seconds"] for r in rs],
             "time_spread_all": spread_all, "time_spread_long": spread_long,
             "linear_all": spread_all <= linear_max, "linear": spread_long <= linear_max}
        if len(rs) >= 2:
            a, b = rs[-2], rs[-1]
            floor = 1.0  # MiB: below this, RSS noise dominates the ratio
            c["working_growth"] = max(b["working_mb"], floor) / max(a["working_mb"], floor) - 1
            c["peak_growth"] = max(b["peak_growth_mb"], floor) / max(a["peak_growth_mb"], floor) - 1
            c["flat"] = c["working_growth"] < flat_max
            c["flat_raw"] = c["peak_growth"] < flat_max
            c["compared"] = [a["seconds"], b["seconds"]]
        out.append(c)
    return out


def run_lengths(args) -> List[Dict]:
    models = [m for m in args.models if m in OUR_MODELS or args.length_reference]
    # ONNX Runtime is left out here: each fresh process would export the model again
    jobs = [(m, v, p, s) for m in models for v in variants_of(m, args.length_variants) if v != "onnx"
            for p in args.length_paths if m in OUR_MODELS or p != "clip-kept" for s in args.lengths]
    rows = []
    for model, variant, path, seconds in tqdm(jobs, desc="time and memory vs length", file=sys.stderr, leave=False):
        spec = {"model": model, "path": path, "variant": variant, "seconds": seconds, "device": args.device,
                "tiny": args.tiny, "repeats": args.repeats, "repeat_max_seconds": args.repeat_max_seconds,
                "warmup_seconds": args.warmup_seconds}
        r = run_isolated("length", spec, timeout=args.probe_timeout)
        if "error" in r:
            r = {"model": model, "path": path, "variant": variant, "seconds": seconds, **r}
            tqdm.write(f"  {model:9s} {path:9s} {variant:5s} {seconds:7.0f} s: FAILED {r['error']}", file=sys.stderr)
        else:
            tqdm.write(f"  {model:9s} {path:9s} {variant:5s} {seconds:7.0f} s: {r['time_s']:8.2f} s "
                       f"({1e3 * r['time_per_audio_s']:.2f} ms per audio s), peak +{r['peak_growth_mb']:.0f} MB, "
                       f"working {r['working_mb']:.0f} MB", file=sys.stderr)
        rows.append(r)
    return rows
