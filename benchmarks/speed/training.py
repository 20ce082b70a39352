"""Pretraining throughput: clips per second of training steps (forward, backward, optimizer step,
as ``mart_upstream.train`` runs them: Adam, bf16 autocast on CUDA) on random views, with the
paper-size default configs and the CPU configs (``mart-pretrain --config cpu``), each in a fresh process.
Data loading and augmentation are not included."""
from __future__ import annotations

import statistics
import sys
import time
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from .isolate import run_isolated
from .measure import current_rss_mb, load_average, peak_rss_mb, reset_peak_rss, sync
from .subjects import OUR_MODELS, SR, TINY_CONFIGS


def training_setups(name: str, tiny: bool, batch_override: Optional[int]) -> List[Dict]:
    """(label, model config, batch size) to time for one model: the paper defaults with the
    default run batch size, and ``mart_upstream/configs/<name>_cpu.yaml`` with its own; ``tiny``: the tiny config."""
    from mart_upstream.config import cpu_config_path, load_file
    from mart_upstream.train.settings import RunConfig

    if tiny:
        setups = [{"config": "tiny", "model_config": TINY_CONFIGS[name], "batch": 2}]
    else:
        data = load_file(cpu_config_path(name))
        setups = [
            {"config": "paper", "model_config": None, "batch": RunConfig().batch_size},
            {"config": f"{name}_cpu.yaml", "model_config": data.get("model") or {},
             "batch": int((data.get("run") or {}).get("batch_size", RunConfig().batch_size))},
        ]
    if batch_override:
        for s in setups:
            s["batch"] = batch_override
    return setups


def probe_training(spec: dict) -> dict:
    """Runs in the child process. spec: model, config, model_config, batch, device, warmup, steps."""
    from mart_upstream.models import build_model
    from mart_upstream.train.settings import OptimConfig

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = build_model(spec["model"], spec["model_config"]).to(device).train()
    o = OptimConfig()
    opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
    b = int(spec["batch"])
    gen = torch.Generator().manual_seed(0)
    views = (0.1 * torch.randn(b, model.num_views, model.clip_samples, generator=gen)).to(device)
    bf16 = device.type == "cuda"

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(views)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset = reset_peak_rss()
    rss_before = current_rss_mb()
    base = rss_before if reset else peak_rss_mb()
    for _ in range(spec["warmup"]):
        step()
    sync(spec["device"])
    times = []
    cpu0 = time.process_time()
    for _ in range(max(1, spec["steps"])):
        t = time.perf_counter()
        step()
        sync(spec["device"])
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    out = {
        "model": spec["model"],
        "config": spec["config"],
        "batch": b,
        "clip_seconds": model.clip_samples / SR,
        "steps": len(times),
        "step_s": median,
        "clips_per_s": b / median,
        "audio_x_realtime": b * model.num_views * model.clip_samples / SR / median,
        "bf16_autocast": bf16,
        "peak_rss_growth_mb": peak_rss_mb() - base,
        "cpu_utilisation": (time.process_time() - cpu0) / sum(times) / torch.get_num_threads(),
        "load_average": load_average(),
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_training(args) -> List[Dict]:
    jobs = [(m, s) for m in args.models if m in OUR_MODELS
            for s in training_setups(m, args.tiny, args.train_batch)]
    rows = []
    for name, setup in tqdm(jobs, desc="pretraining throughput", file=sys.stderr, leave=False):
        spec = {"model": name, **setup, "device": args.device, "warmup": args.train_warmup, "steps": args.train_steps}
        r = run_isolated("training", spec, timeout=args.probe_timeout)
        if "error" in r:
            r = {"model": name, "config": setup["config"], "batch": setup["batch"], **r}
            tqdm.write(f"  pretrain {name:7s} {setup['config']}: FAILED {r['error']}", file=sys.stderr)
        else:
            tqdm.write(f"  pretrain {name:7s} {r['config']} batch {r['batch']}: {r['clips_per_s']:.2f} clips/s "
                       f"({r['step_s']:.2f} s per step)", file=sys.stderr)
        rows.append(r)
    return rows
