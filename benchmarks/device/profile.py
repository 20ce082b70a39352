"""``python -m benchmarks.device.profile``: where the real training step spends its time, per model alone.

    bash scripts/device_pretrain.sh --profile --kit .device_kit --out DIR [--models mart,pemr,simclr]
        [--batches 48] [--device cuda] [--variants plain,eager,compile,compile-reduce-overhead] [--warmup 3]
        [--steps 5] [--trace] [--tiny]

(``python -m benchmarks.device.profile`` where soundfile imports without the kit's wheels.)

For every (model, batch, variant): the paper config's real training step
(``mart_upstream.train.loop.StepLoop.train_step``: augmentation, forward, backward, Adam,
``after_optimizer_step``; bf16 autocast on CUDA, as ``mart-pretrain``) on an in-memory batch, built
by the speed benchmark's ``make_step``; ``--warmup`` untimed steps (compilation happens there), then
``--steps`` steps under ``torch.profiler``. Variants are ``mart-bench speed``'s training variants:
``compile`` is ``run.compile=default``, ``compile-reduce-overhead`` adds CUDA graphs on a GPU.

The report (``DIR/profile.json``, ``DIR/profile.md``), per run:

* ``step_s``: median wall time per step (synchronised), ``clips_per_s``;
* ``top_kernels``: the kernels with the most device time (CUDA kernels; on the CPU, operators by self
  CPU time), with calls and milliseconds per step and their share of that time;
* ``kernels_per_step``: kernel launches per step (CPU: operators called from Python), the
  launch-overhead signal; ``kernel_ms_per_step``: time per step with a kernel running;
* ``host_gaps``: over the profiled steps, the fraction of wall time the device timeline was idle
  (no kernel running: the host is the bottleneck there), the largest gaps and their count.

On the CPU the same code runs (the test suite runs it on tiny shapes); ``--device cuda`` without CUDA is
one clear error. ``--trace`` also writes a Chrome trace per run (large).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from mart_upstream.argtypes import comma_list
from mart_upstream.distributed import require_cuda
from mart_upstream.errors import MartError, UsageError
from mart_upstream.fileio import write_json, write_text

PROG = "device-profile"
DEFAULT_MODELS = ("mart", "pemr", "simclr")
DEFAULT_VARIANTS = ("plain", "eager", "compile", "compile-reduce-overhead")
TOP = 15
GAPS = 5


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timeline(events, cuda: bool) -> list:
    """The kernels of the device timeline: CUDA kernels (and copies) on a GPU; on the CPU, operators called
    from Python (no operator parent: nested ones are inside them)."""
    if cuda:
        return [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    return [e for e in _cpu_ops(events) if e.cpu_parent is None]


def _cpu_ops(events) -> list:
    return [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and not e.is_async
            and not e.name.startswith("ProfilerStep")]


def analyse(events, steps: int, window_us: float, cuda: bool, top: int = TOP, gaps: int = GAPS) -> Dict:
    """The report of one profiled run from its ``FunctionEvent`` list: top kernels (CUDA: by device time;
    CPU: operators by self CPU time), kernels per step and the device timeline's idle gaps over the
    profiled ``window_us``."""
    kernels = _timeline(events, cuda)
    by_name: Dict[str, List[float]] = {}
    for e in (kernels if cuda else _cpu_ops(events)):
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us() if cuda else float(e.self_cpu_time_total))
    total = sum(sum(v) for v in by_name.values()) or 1.0
    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]
    top_kernels = [{"name": name[:200], "calls_per_step": len(v) / steps, "ms_per_step": sum(v) / 1e3 / steps,
                    "share": sum(v) / total} for name, v in ranked]
    # idle time of the device timeline: the profiled window minus the union of kernel intervals
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    busy, idle, cur_start, cur_end = 0.0, [], None, None
    for s, e in spans:
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                busy += cur_end - cur_start
                idle.append(s - cur_end)
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None:
        busy += cur_end - cur_start
    window = max(window_us, busy, 1.0)
    idle.sort(reverse=True)
    return {
        "timeline": "cuda kernels" if cuda else "cpu operators called from Python",
        "kernels_per_step": len(kernels) / steps,
        "distinct_kernels": len({e.name for e in kernels}),
        "kernel_ms_per_step": busy / 1e3 / steps,
        "top_kernels": top_kernels,
        "host_gaps": {"idle_fraction": 1.0 - busy / window, "gaps_per_step": len(idle) / steps,
                      "largest_us": idle[:gaps], "window_ms": window / 1e3},
    }


def profile_one(model: str, batch: int, variant: str, device: str, warmup: int, steps: int, tiny: bool,
                trace: Optional[str] = None) -> Dict:
    """Profile ``steps`` real training steps of ``model`` -> one report row."""
    from torch.profiler import ProfilerActivity, profile

    from ..speed.subjects import TINY_CONFIGS
    from ..speed.training import make_step

    cuda = device.startswith("cuda")
    spec = {"model": model, "config_file": None, "model_config": TINY_CONFIGS[model] if tiny else None,
            "batch": batch, "device": device, "loop": "steploop", "variant": variant}
    step, net, facts = make_step(spec)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    times = []
    with profile(activities=activities, record_shapes=False) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t)
        window_us = (time.perf_counter() - start) * 1e6
    if trace:
        prof.export_chrome_trace(trace)
    row = {"model": model, "batch": batch, "variant": variant, "device": device, **facts,
           "warmup_steps": warmup, "warmup_s": warmup_s, "steps": steps,
           "step_s": statistics.median(times), "clips_per_s": batch / statistics.median(times),
           **analyse(prof.events(), steps, window_us, cuda)}
    if cuda:
        row["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del step, net, prof
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


def markdown(rows: Sequence[Dict]) -> str:
    out = ["## Training step profile", "",
           "| model | batch | variant | bf16 | s / step | clips / s | kernels / step | kernel ms / step | "
           "device idle | gaps / step | largest gaps us |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['batch']} | {r['variant']} | failed: {r['error']} | | | | | | | |")
            continue
        g = r["host_gaps"]
        out.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {'yes' if r['bf16_autocast'] else 'no'} | "
                   f"{r['step_s']:.3f} | {r['clips_per_s']:.1f} | {r['kernels_per_step']:.0f} | "
                   f"{r['kernel_ms_per_step']:.1f} | {g['idle_fraction']:.0%} | {g['gaps_per_step']:.0f} | "
                   f"{', '.join(f'{x:.0f}' for x in g['largest_us'])} |")
    for r in rows:
        if "error" in r:
            continue
        out += ["", f"### {r['model']} batch {r['batch']} {r['variant']}: top kernels ({r['timeline']})", "",
                "| kernel | calls / step | ms / step | share |", "|---|---:|---:|---:|"]
        out += [f"| `{k['name'][:90]}` | {k['calls_per_step']:.1f} | {k['ms_per_step']:.2f} | {k['share']:.1%} |"
                for k in r["top_kernels"]]
    out += ["", "Device idle: share of the profiled wall time with no kernel on the device timeline (CUDA "
            "kernels; on a CPU, top-level operators), i.e. waiting for the host. Kernels / step: launches per "
            "training step (augmentation, forward, backward, Adam, after_optimizer_step)."]
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from ..speed.training import TRAIN_VARIANTS
    from mart_upstream.models import model_names

    p = argparse.ArgumentParser(prog=PROG, description="Profile the real training step of each model alone.")
    p.add_argument("--out", required=True, help="folder for profile.json and profile.md")
    p.add_argument("--kit", help="the device kit (scripts/device_pretrain.sh --profile installs its wheels; "
                   "the profile itself needs no audio)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"from {','.join(model_names())}")
    p.add_argument("--batches", default="48", help="comma-separated batch sizes (48: the papers'; larger: "
                   "large-batch mode)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"from {','.join(TRAIN_VARIANTS)}")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens there)")
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--tiny", action="store_true", help="tiny model configs (to test this script)")
    p.add_argument("--trace", action="store_true", help="also write a Chrome trace per run into --out")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from ..speed.training import TRAIN_VARIANTS
    from mart_upstream.models import model_names

    args = build_parser().parse_args(argv)
    try:
        require_cuda(args.device)  # CUDA kernels, CUDA graphs and bf16 autocast need one
    except UsageError as e:
        return _fail(str(e))
    models = comma_list(args.models)
    variants = comma_list(args.variants)
    try:
        batches = comma_list(args.batches, int)
    except ValueError:
        return _fail(f"--batches must be comma-separated integers, got {args.batches!r}")
    bad = [m for m in models if m not in model_names()]
    if bad:
        return _fail(f"unknown model(s) {bad}; choose from {','.join(model_names())}")
    bad = [v for v in variants if v not in TRAIN_VARIANTS]
    if bad:
        return _fail(f"unknown variant(s) {bad}; choose from {','.join(TRAIN_VARIANTS)}")
    if not batches or min(batches) < 2 or args.steps < 1 or args.warmup < 0:
        return _fail("--batches must be at least 2, --steps at least 1 and --warmup at least 0")
    if any(v.startswith("compile") for v in variants) and args.warmup < 1:
        return _fail("compiled variants need --warmup of at least 1 (they compile in the first step)")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for model in models:
        for batch in batches:
            for variant in variants:
                trace = os.path.join(args.out, f"trace_{model}_b{batch}_{variant}.json") if args.trace else None
                print(f"{PROG}: {model} batch {batch} {variant} ...", file=sys.stderr, flush=True)
                try:
                    row = profile_one(model, batch, variant, args.device, args.warmup, args.steps, args.tiny, trace)
                except (MartError, RuntimeError) as e:  # one failed run (e.g. out of memory) does not stop the rest
                    row = {"model": model, "batch": batch, "variant": variant,
                           "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
                rows.append(row)
                write_json(os.path.join(args.out, "profile.json"),
                           {"torch": torch.__version__, "device": args.device,
                            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "runs": rows})
    md = markdown(rows)
    write_text(os.path.join(args.out, "profile.md"), md)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
