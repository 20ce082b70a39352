"""``mart-bench speed``: embedding throughput, FLOPs, time and memory against input length, and
pretraining throughput of the encoders, beside a CLMR-style SampleCNN on the same audio.

    mart-bench speed --out results/speed [--quick] [--device cpu|cuda] [--models mart,pemr,simclr,samplecnn]

Numbers are medians of ``--repeats`` timed runs after a warm-up, with random weights (speed does not
depend on them). Time/memory against length run each (model, length) in a fresh process and report
peak resident memory above the process's baseline (CUDA: peak allocated memory).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mart_upstream.fileio import atomic_path

SR = 16000
OUR_MODELS = ("mart", "pemr", "simclr")


class SampleCNN(nn.Module):
    """CLMR's SampleCNN (Lee et al. 2017): raw 59049-sample windows, a stride-3 conv, nine
    conv3-BN-ReLU-maxpool3 blocks, a 512-channel conv block, global pooling -> 512-d (about 2.4 M
    parameters with a 50-way output layer)."""

    window = 59049

    def __init__(self, n_out: int = 50):
        super().__init__()
        chans = [128, 128, 128, 256, 256, 256, 256, 256, 256, 512]
        layers = [nn.Conv1d(1, 128, 3, stride=3), nn.BatchNorm1d(128), nn.ReLU()]
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU(), nn.MaxPool1d(3)]
        layers += [nn.Conv1d(512, 512, 3, padding=1), nn.BatchNorm1d(512), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(512, n_out)
        self.embedding_dim = 512

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # [B, 59049] -> [B, 512]
        return self.net(wav[:, None]).amax(dim=-1)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, 512]: mean over non-overlapping windows (the last zero padded)."""
        from mart_upstream.embedding import windows

        w = windows(wav, self.window)
        return self(w.reshape(-1, self.window)).view(w.shape[0], w.shape[1], -1).mean(dim=1)


def build(name: str, device: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "samplecnn":
        return SampleCNN().to(device).eval()
    from mart_upstream.models import build_model

    m = build_model(name)
    m.model_name = name
    return m.to(device).eval()


def embed_fn(model: nn.Module, kind: str) -> Callable[[torch.Tensor], object]:
    from mart_upstream.embedding import clip_embeddings, frame_features

    if isinstance(model, SampleCNN):
        return model.embed
    return (lambda w: frame_features(model, w)) if kind == "frames" else (lambda w: clip_embeddings(model, w))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, device: str) -> float:
    with torch.no_grad():
        fn()  # warm-up
        _sync(device)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, repeats, device) / 1e9


def flops_per_second_of_audio(model: nn.Module, device: str, seconds: float = 10.0) -> float:
    wav = torch.randn(1, int(seconds * SR), device=device) * 0.1
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        embed_fn(model, "clip")(wav)
    return fc.get_total_flops() / seconds


def throughput(args, device: str) -> List[Dict]:
    rows = []
    audio = torch.randn(args.batch, int(args.clip_seconds * SR), device=device) * 0.1
    peak = matmul_gflops(device)
    for name in args.models:
        model = build(name, device)
        params = sum(p.numel() for p in model.parameters())
        flops = flops_per_second_of_audio(model, device)
        row = {"model": name, "params": params, "gflop_per_audio_s": flops / 1e9}
        for kind in (("clip", "frames") if name != "samplecnn" else ("clip",)):
            fn = embed_fn(model, kind)
            for b in (1, args.batch):
                t = timed(lambda: fn(audio[:b]), args.repeats, device)
                row[f"{kind}_b{b}_x_realtime"] = b * args.clip_seconds / t
            row[f"{kind}_mfu"] = row[f"{kind}_b{args.batch}_x_realtime"] * flops / 1e9 / peak if kind == "clip" else None
        rows.append(row)
        print(f"  {name}: {row}", file=sys.stderr)
    return rows, peak


def _length_probe(name: str, seconds: float, kind: str, device: str) -> Dict:
    """Runs in a fresh process: time and peak memory of one embedding call on ``seconds`` of audio."""
    model = build(name, device)
    wav = torch.randn(1, int(seconds * SR)) * 0.1
    fn = embed_fn(model, kind)
    with torch.no_grad():
        fn(wav[:, : 10 * SR].to(device))  # warm-up on 10 s
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with torch.no_grad():
        fn(wav.to(device))
    _sync(device)
    dt = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    return {"model": name, "kind": kind, "seconds": seconds, "time_s": dt, "peak_mb_above_baseline": peak,
            "input_mb": wav.numel() * 4 / 2**20}


def lengths(args, device: str) -> List[Dict]:
    rows = []
    for name in args.models:
        for kind in (("frames", "clip") if name != "samplecnn" else ("clip",)):
            for s in args.lengths:
                code = (f"import json,sys; from benchmarks.speedbench import _length_probe; "
                        f"print(json.dumps(_length_probe({name!r}, {s}, {kind!r}, {device!r})))")
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if r.returncode:
                    raise RuntimeError(f"length probe {name} {kind} {s}s failed: {r.stderr[-500:]}")
                row = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"  {name} {kind} {s:.0f}s: {row['time_s']:.2f}s, +{row['peak_mb_above_baseline']:.0f} MB",
                      file=sys.stderr)
    return rows


def pretrain_speed(args, device: str) -> List[Dict]:
    from mart_upstream.config import load_file
    from mart_upstream.models import build_model

    rows = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in [m for m in args.models if m in OUR_MODELS]:
        for cfg_name in ("paper", "cpu"):
            cfg = None if cfg_name == "paper" else load_file(os.path.join(root, "configs", f"{name}_cpu.yaml"))["model"]
            torch.manual_seed(0)
            model = build_model(name, cfg).to(device).train()
            opt = torch.optim.Adam(model.parameters(), lr=3e-4)
            views = torch.randn(args.train_batch, model.num_views, model.clip_samples, device=device) * 0.1

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                    loss = model(views)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()
            ts = []
            for _ in range(args.train_steps):
                t = time.perf_counter()
                step()
                _sync(device)
                ts.append(time.perf_counter() - t)
            rows.append({"model": name, "config": cfg_name, "batch": args.train_batch,
                         "clip_s": model.clip_samples / SR, "clips_per_s": args.train_batch / statistics.median(ts)})
            print(f"  pretrain {name} ({cfg_name}): {rows[-1]['clips_per_s']:.2f} clips/s", file=sys.stderr)
    return rows


def markdown(res: Dict) -> str:
    b = res["settings"]["batch"]
    out = [f"Machine: {res['machine']['cpu']}, {res['machine']['threads']} threads, {res['machine']['device']}; "
           f"matmul {res['matmul_gflops']:.1f} GFLOP/s", "",
           f"| model | params | GFLOP / audio s | clip x realtime b1 | clip x realtime b{b} | frames x realtime b1 | "
           f"frames x realtime b{b} | MFU (clip, b{b}) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["throughput"]:
        f = lambda k: f"{r[k]:.1f}" if r.get(k) is not None else "-"  # noqa: E731
        out.append(f"| {r['model']} | {r['params']:,} | {r['gflop_per_audio_s']:.2f} | {f('clip_b1_x_realtime')} | "
                   f"{f(f'clip_b{b}_x_realtime')} | {f('frames_b1_x_realtime')} | {f(f'frames_b{b}_x_realtime')} | "
                   f"{r['clip_mfu']:.1%} |")
    out += ["", "| model | call | length | time s | s per audio min | peak MB above baseline |", "|---|---|---|---|---|---|"]
    for r in res["lengths"]:
        out.append(f"| {r['model']} | {r['kind']} | {r['seconds']:.0f} s | {r['time_s']:.2f} | "
                   f"{60 * r['time_s'] / r['seconds']:.3f} | {r['peak_mb_above_baseline']:.0f} |")
    for c in res["length_checks"]:
        out.append(f"\n{c['model']} {c['kind']}: time per audio second spread x{c['time_spread']:.2f} "
                   f"(linear: {c['linear']}), memory growth longest/second-longest x{c['mem_growth']:.2f} (flat: {c['flat']})")
    out += ["", "| model | config | batch | clip s | clips/s |", "|---|---|---|---|---|"]
    out += [f"| {r['model']} | {r['config']} | {r['batch']} | {r['clip_s']:.2f} | {r['clips_per_s']:.2f} |"
            for r in res["pretrain"]]
    return "\n".join(out) + "\n"


def _checks(rows: List[Dict]) -> List[Dict]:
    out = []
    for key in sorted({(r["model"], r["kind"]) for r in rows}):
        rs = sorted([r for r in rows if (r["model"], r["kind"]) == key], key=lambda r: r["seconds"])
        per = [r["time_s"] / r["seconds"] for r in rs[1:]] or [rs[0]["time_s"] / rs[0]["seconds"]]
        spread = max(per) / min(per)
        mem = [max(r["peak_mb_above_baseline"], 1.0) for r in rs]
        growth = mem[-1] / mem[-2] if len(mem) > 1 else 1.0
        # memory may grow by the input itself (the waveform) but not with the activations
        flat = rs[-1]["peak_mb_above_baseline"] <= max(1.2 * mem[-2], mem[-2] + 3 * rs[-1]["input_mb"])
        out.append({"model": key[0], "kind": key[1], "time_spread": spread, "linear": spread < 1.5,
                    "mem_growth": growth, "flat": bool(flat)})
    return out


def add_arguments(p) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", type=lambda s: s.split(","), default=["mart", "pemr", "simclr", "samplecnn"])
    p.add_argument("--quick", action="store_true", help="lengths 10 s, 1 min, 10 min (no 1 h); fewer repeats")
    p.add_argument("--lengths", type=lambda s: [float(x) for x in s.split(",")], default=None,
                   help="seconds, comma separated (default 10,60,600,3600)")
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=5)


def run(args) -> int:
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("mart-bench speed: error: --device cuda was asked for but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.lengths is None:
        args.lengths = [10.0, 60.0, 600.0] if args.quick else [10.0, 60.0, 600.0, 3600.0]
    if args.quick:
        args.repeats = min(args.repeats, 3)
    unknown = set(args.models) - set(OUR_MODELS) - {"samplecnn"}
    if unknown:
        print(f"mart-bench speed: error: unknown models {sorted(unknown)}", file=sys.stderr)
        return 2
    print("embedding throughput ...", file=sys.stderr)
    thr, peak = throughput(args, device)
    print("time and memory against length ...", file=sys.stderr)
    lens = lengths(args, device)
    print("pretraining throughput ...", file=sys.stderr)
    pre = pretrain_speed(args, device)
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "cores": os.cpu_count(), "torch": torch.__version__,
                       "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"},
           "settings": {k: getattr(args, k) for k in ("clip_seconds", "batch", "repeats", "lengths", "models",
                                                      "train_batch", "train_steps")},
           "matmul_gflops": peak, "throughput": thr, "lengths": lens, "length_checks": _checks(lens), "pretrain": pre}
    os.makedirs(args.out, exist_ok=True)
    with atomic_path(os.path.join(args.out, "speed.json"), suffix=".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
    md = markdown(res)
    with atomic_path(os.path.join(args.out, "speed.md"), suffix=".md") as tmp:
        with open(tmp, "w") as f:
            f.write(md)
    print(md)
    return 0
