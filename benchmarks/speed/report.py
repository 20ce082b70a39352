"""The benchmark's outputs: ``speed.json`` (every number) and ``speed.md`` (the tables), both
written atomically."""
from __future__ import annotations

import json
import os
from typing import Dict, List

from mart_upstream.fileio import write_text


def _f(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "**no**")


def _length(s: float) -> str:
    if s >= 3600 and s % 3600 == 0:
        return f"{s / 3600:g} h"
    if s >= 60 and s % 60 == 0:
        return f"{s / 60:g} min"
    return f"{s:g} s"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def throughput_table(res: Dict) -> List[str]:
    rows = res.get("throughput") or []
    if not rows:
        return []
    b = res["settings"]["batch"]
    clip = _length(res["settings"]["clip_seconds"])
    out = [f"### Embedding throughput ({clip} clips, x realtime = audio seconds per wall-clock second)", "",
           f"| model | path | params | GFLOP / audio s | audio computed per {clip} clip |",
           "|---|---|---:|---:|---:|"]
    seen = set()
    for r in rows:
        if "error" in r or (r["model"], r["path"]) in seen:
            continue
        seen.add((r["model"], r["path"]))
        out.append(f"| {r['model']} | {r['path']} | {r['params']:,} | {r['gflop_per_audio_s']:.2f} | "
                   f"{r['computed_seconds_per_clip']:.1f} s |")
    out += ["", f"| model | path | variant | x realtime b1 | x realtime b{b} | vs plain b{b} | vs SampleCNN b1 | "
            f"vs SampleCNN b{b} | GFLOP/s b{b} | of matmul b1 | of matmul b{b} | of conv b{b} | CPU use |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['path']} | {r['variant']} | skipped: {r['error']} |" + " |" * 9)
            continue
        one, big = r["b1"], r[f"b{b}"]
        out.append(f"| {r['model']} | {r['path']} | {r['variant']} | {one['x_realtime']:.1f} | {big['x_realtime']:.1f} | "
                   f"{_x(big.get('vs_plain'))} | {_x(one.get('vs_samplecnn'))} | {_x(big.get('vs_samplecnn'))} | "
                   f"{big['achieved_gflops']:.1f} | {_f(one.get('matmul_fraction'), '{:.1%}')} | "
                   f"{_f(big.get('matmul_fraction'), '{:.1%}')} | {_f(big.get('conv_fraction'), '{:.1%}')} | "
                   f"{_f(big.get('cpu_utilisation'), '{:.0%}')} |")
    out += ["", "GFLOP / audio s: matmul and convolution FLOPs (FlopCounterMode) per second of long audio. "
            f"Audio computed: what one {clip} clip is padded to (whole windows / frame chunks, with chunk context). "
            "Variants: plain = the eager model; fast = mart_upstream.frozen.for_inference (BatchNorm folded, "
            "first block as a tiled patch product, channels-last maps, silent windows encoded once; SampleCNN: "
            "BatchNorm folded); onnx = the mart-export graphs in ONNX Runtime. vs plain: speed-up over the same "
            "model's plain variant; vs SampleCNN: throughput over the faster SampleCNN variant on the same audio "
            "and batch. GFLOP/s: FLOPs the call executes (the fast variant skips repeated silent windows; ONNX "
            "counted as plain) / median time; of matmul, of conv: that rate over the measured float32 torch.mm "
            "and 3x3 convolution rates. CPU use: process CPU time / wall time / threads while timing the batched "
            "call (below 100%: waiting, e.g. for other processes on the same cores).", ""]
    return out


def lengths_table(res: Dict) -> List[str]:
    rows = res.get("lengths") or []
    if not rows:
        return []
    out = ["### Time and peak memory against input length (one input, fresh process each)", "",
           "| model | path | variant | length | time s | ms / audio s | x realtime | CPU use | peak RSS + MB | "
           "result MB | working MB |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        variant = r.get("variant", "plain")
        if "error" in r:
            out.append(f"| {r['model']} | {r['path']} | {variant} | {_length(r['seconds'])} | failed: {r['error']} |"
                       " | | | | | |")
            continue
        out.append(f"| {r['model']} | {r['path']} | {variant} | {_length(r['seconds'])} | {r['time_s']:.2f} | "
                   f"{1e3 * r['time_per_audio_s']:.2f} | {r['x_realtime']:.0f} | {r['cpu_utilisation']:.0%} | "
                   f"{r['peak_growth_mb']:.0f} | {r['output_mb']:.0f} | {r['working_mb']:.0f} |")
    s = res["settings"]
    out += ["", "Peak RSS +: peak resident memory during the call above the resident memory just before it "
            "(model built, input allocated, warmed up). Working: that minus the padded input copy and the "
            "returned result, which must grow with the length. CPU use: process CPU time / wall time / threads. "
            "Path clip-kept: the clip path as it was before its window summaries streamed (input padded to whole "
            "windows, every window's vector kept until the summary), beside clip for before/after.",
            "", f"| model | path | variant | time / audio s spread (>= {_length(s['linear_from'])}) | linear (<= "
            f"{s['linear_max']:g}x) | spread incl. shortest | working memory growth | flat (< {s['flat_max']:.0%}) "
            "| peak RSS growth | raw flat |", "|---|---|---|---:|---|---:|---|---|---|---|"]
    for c in res.get("length_checks") or []:
        pair = c.get("compared")
        between = f" ({_length(pair[0])} -> {_length(pair[1])})" if pair else ""
        out.append(f"| {c['model']} | {c['path']} | {c.get('variant', 'plain')} | {c['time_spread_long']:.2f}x | "
                   f"{_yes(c['linear'])} | "
                   f"{c['time_spread_all']:.2f}x | {_f(c.get('working_growth'), '{:+.0%}')}{between} | "
                   f"{_yes(c.get('flat'))} | {_f(c.get('peak_growth'), '{:+.0%}')} | {_yes(c.get('flat_raw'))} |")
    out.append("")
    return out


def training_table(res: Dict) -> List[str]:
    rows = res.get("training") or []
    if not rows:
        return []
    dev = res["machine"]["device"]
    out = [f"### Pretraining throughput on {dev} (in-memory random views)", "",
           "| model | config | loop | variant | batch | clip s | s / step | clips / s | audio x realtime | "
           "first step s | CPU use | peak RSS + MB |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['model']} | {r['config']} | {r.get('loop', 'bare')} | {r.get('variant', 'eager')} | {r['batch']} |"
        if "error" in r:
            out.append(f"{head} failed: {r['error']} | | | | | | |")
            continue
        out.append(f"{head} {r['clip_seconds']:.2f} | {r['step_s']:.2f} | {r['clips_per_s']:.2f} | "
                   f"{r['audio_x_realtime']:.1f} | {_f(r.get('first_step_s'))} | {r['cpu_utilisation']:.0%} | "
                   f"{r['peak_rss_growth_mb']:.0f} |")
    out += ["", "Loop steploop: the real training step (mart_upstream.train.loop.StepLoop.train_step: augmentation "
            "with the step's seed, forward, backward, Adam step, after_optimizer_step; bf16 autocast on CUDA). "
            "Loop bare: forward, backward and Adam step on the views as they are, what this section timed "
            "before. First step: the untimed first step (compiled variants compile there).", ""]
    out += side_by_side(rows)
    return out


def side_by_side(rows: List[Dict]) -> List[str]:
    """Clips/s of every (loop, variant) per (model, config), one row each, with the ratio to the first
    column; empty where only one (loop, variant) was run."""
    cols: List[tuple] = []
    for r in rows:
        key = (r.get("loop", "bare"), r.get("variant", "eager"))
        if key not in cols:
            cols.append(key)
    if len(cols) < 2:
        return []
    table: Dict[tuple, Dict[tuple, Dict]] = {}
    for r in rows:
        table.setdefault((r["model"], r["config"]), {})[(r.get("loop", "bare"), r.get("variant", "eager"))] = r
    out = ["| model | config | " + " | ".join(f"{lp} {v} clips/s" for lp, v in cols) + " |",
           "|---|---|" + "---:|" * len(cols)]
    for (model, config), by in table.items():
        first = by.get(cols[0], {}).get("clips_per_s")
        cells = []
        for c in cols:
            r = by.get(c)
            if r is None or "error" in r:
                cells.append("-" if r is None else "failed")
                continue
            ratio = f" ({r['clips_per_s'] / first:.2f}x)" if first and c != cols[0] else ""
            cells.append(f"{r['clips_per_s']:.2f}{ratio}")
        out.append(f"| {model} | {config} | " + " | ".join(cells) + " |")
    out += ["", f"Ratios: to the first column ({cols[0][0]} {cols[0][1]}).", ""]
    return out


def _conv_rate(conv) -> str:
    if not conv:
        return ""
    return (f"; 3x3 convolution 64->64 on {'x'.join(map(str, conv['shape']))} channels-last: "
            f"{conv['gflops_start']:.1f} and {_f(conv.get('gflops_end'), '{:.1f}')}")


def markdown(res: Dict) -> str:
    m, mm = res["machine"], res["matmul"]
    loads = [x[0] for x in (m.get("load_average_start"), m.get("load_average_end")) if x]
    busy = m["device"] == "cpu" and loads and max(loads) > m["torch_threads"] + 0.5
    shared = " (above the thread count: other processes shared the cores)" if busy else ""
    out = ["## mart-bench speed", "",
           f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, torch {m['torch']} with {m['torch_threads']} "
           f"threads, device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}. "
           f"float32 matmul ({mm['size']}x{mm['size']}): {mm['gflops_start']:.1f} GFLOP/s at the start, "
           f"{_f(mm.get('gflops_end'), '{:.1f}')} at the end{_conv_rate(res.get('conv'))}; the larger is the "
           "reference. Load average "
           f"{m['load_average_start']} at the start, {m.get('load_average_end')} at the end{shared}. "
           f"Total {res['elapsed_s'] / 60:.1f} min.", ""]
    end = mm.get("gflops_end")
    if end and max(end, mm["gflops_start"]) > 1.25 * min(end, mm["gflops_start"]):
        out += ["**The matmul rate changed by more than 25% during the run: the machine was shared, so timings "
                "(and fractions of the matmul rate) are noisy; see the CPU use columns.**", ""]
    if res.get("samplecnn_params"):
        out += [f"SampleCNN (CLMR) reference: {res['samplecnn_params']:,} parameters.", ""]
    out += throughput_table(res) + lengths_table(res) + training_table(res)
    return "\n".join(out).rstrip() + "\n"


def write(res: Dict, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    md = markdown(res)
    write_text(os.path.join(out_dir, "speed.json"), json.dumps(res, indent=1) + "\n")
    write_text(os.path.join(out_dir, "speed.md"), md)
    return md
