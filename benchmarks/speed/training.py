"""Pretraining throughput: clips per second of training steps on in-memory random views, with the
paper-size default configs and the CPU configs (``mart-pretrain --config cpu``), each (model, config,
loop, variant) in a fresh process. Data loading is not included.

Loops (``--train-loops``):

* ``steploop``: the real step, ``mart_upstream.train.loop.StepLoop.train_step`` as ``mart-pretrain`` runs
  it (augmentation with the step's seed, forward, backward, Adam step, ``after_optimizer_step``; bf16
  autocast on CUDA), with the run's settings as ``mart-pretrain`` builds them.
* ``bare``: what this section timed before: forward, backward and the Adam step on the views as they
  are (no augmentation, no ``after_optimizer_step``), kept beside it for before/after.

Variants (``--train-variants``): ``eager`` (the config's settings: fused Adam, and channels-last maps
where ``run.channels_last`` is set, as in the CPU configs); ``plain`` (no speed-up: Adam's per-tensor
loop, NCHW maps, eager; the step as it ran before these options, to measure them against);
``channels-last`` (``run.channels_last=true``); ``compile``
and ``compile-reduce-overhead`` (``run.compile=default`` / ``reduce-overhead``: TorchInductor; the
first, untimed step compiles, its time is reported as ``first_step_s``); ``compile+channels-last``;
``bf16`` (``run.bf16_cpu=true``: bfloat16 autocast on the CPU too).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from tqdm import tqdm

from .isolate import run_isolated
from .measure import current_rss_mb, load_average, peak_rss_mb, reset_peak_rss, sync
from .subjects import OUR_MODELS, SR, TINY_CONFIGS

TRAIN_LOOPS = ("steploop", "bare")
# variant -> mart-pretrain settings (section.key: value) over the config's
TRAIN_VARIANTS: Dict[str, Dict[str, str]] = {
    "eager": {},
    # no speed-up, whatever the config sets: Adam's per-tensor loop, NCHW maps, eager (the step as it ran
    # before these options; the reference of the speed-ups)
    "plain": {"optim.fused": "false", "run.channels_last": "false", "run.compile": "none"},
    "channels-last": {"run.channels_last": "true"},
    "compile": {"run.compile": "default"},
    "compile-reduce-overhead": {"run.compile": "reduce-overhead"},
    "compile+channels-last": {"run.compile": "default", "run.channels_last": "true"},
    # bfloat16 autocast on the CPU (run.bf16_cpu): about 2x float32 where the CPU has AMX
    # (docs/offline_bench.md, "Training step speed on the CPU"), slower where it has not
    "bf16": {"run.bf16_cpu": "true"},
    "float32": {"run.bf16_cpu": "false"},
}
TRAIN_CONFIGS = ("paper", "cpu")


def training_setups(name: str, tiny: bool, batch_override: Optional[int],
                    configs: Tuple[str, ...] = TRAIN_CONFIGS) -> List[Dict]:
    """(label, config file, model config, batch size) to time for one model: the paper defaults with the
    default run batch size, and ``mart_upstream/configs/<name>_cpu.yaml`` with its own; ``tiny``: the tiny
    config (the defaults for the rest)."""
    from mart_upstream.config import cpu_config_path, load_file
    from mart_upstream.train.settings import RunConfig

    if tiny:
        setups = [{"config": "tiny", "config_file": None, "model_config": TINY_CONFIGS[name], "batch": 2}]
    else:
        setups = []
        if "paper" in configs:
            setups.append({"config": "paper", "config_file": None, "model_config": None,
                           "batch": RunConfig().batch_size})
        if "cpu" in configs:
            data = load_file(cpu_config_path(name))
            setups.append({"config": f"{name}_cpu.yaml", "config_file": cpu_config_path(name), "model_config": None,
                           "batch": int((data.get("run") or {}).get("batch_size", RunConfig().batch_size))})
    if batch_override:
        for s in setups:
            s["batch"] = batch_override
    return setups


def make_step(spec: dict) -> Tuple[Callable[[], None], torch.nn.Module, dict]:
    """One training step of ``spec`` (model, config_file, model_config, batch, device, loop, variant) on a
    fixed in-memory batch -> (step, the model it trains, facts: bf16 autocast, settings used)."""
    from mart_upstream.train.loop import adam, initial_model, step_loop
    from mart_upstream.train.settings import Job, settings_for
    from mart_upstream.train.speedups import apply_speedups, uses_bf16

    loop_kind, variant = spec.get("loop", "steploop"), spec.get("variant", "eager")
    if loop_kind not in TRAIN_LOOPS:
        raise ValueError(f"loop must be one of {TRAIN_LOOPS}, got {loop_kind!r}")
    if variant not in TRAIN_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(TRAIN_VARIANTS)}, got {variant!r}")
    device = torch.device(spec["device"])
    b = int(spec["batch"])
    overrides = [f"run.batch_size={b}", f"run.device={device.type}"]
    overrides += [f"{k}={v}" for k, v in TRAIN_VARIANTS[variant].items()]
    settings = settings_for(spec["model"], spec.get("config_file"), overrides, spec.get("model_config"))
    run = settings.pretrain.run
    bf16 = uses_bf16(run, device)
    facts = {"bf16_autocast": bf16, "run": {"compile": run.compile, "channels_last": run.channels_last,
                                            "fused_adam": settings.pretrain.optim.fused}}
    if loop_kind == "steploop":
        loop = step_loop(Job(spec["model"], tempfile.mkdtemp(prefix="mart-speed-")), settings, device)
        model = loop.model
    else:
        model = initial_model(spec["model"], settings.model, run.seed).to(device).train()
        net = apply_speedups(model, model, run.compile, run.channels_last, device)
        o = settings.pretrain.optim
        opt = adam(model.parameters(), o, device, b)  # one process: the global batch is b
    gen = torch.Generator().manual_seed(0)
    views = (0.1 * torch.randn(b, model.num_views, model.clip_samples, generator=gen)).to(device)
    count = [0]

    def steploop_step():
        loop.train_step(count[0], views)  # the step's seed follows the step, as in a run
        count[0] += 1

    def bare_step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = net(views)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return (steploop_step if loop_kind == "steploop" else bare_step), model, facts


def probe_training(spec: dict) -> dict:
    """Runs in the child process. spec: model, config, config_file, model_config, batch, device, warmup,
    steps, loop, variant."""
    step, model, facts = make_step(spec)
    b = int(spec["batch"])
    compiled = facts["run"]["compile"] != "none"
    reset = reset_peak_rss()
    rss_before = current_rss_mb()
    base = rss_before if reset else peak_rss_mb()
    first = None
    for i in range(max(spec["warmup"], 1 if compiled else 0)):  # a compiled step is timed after compiling
        t = time.perf_counter()
        step()
        sync(spec["device"])
        first = time.perf_counter() - t if i == 0 else first
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
        "loop": spec.get("loop", "steploop"),
        "variant": spec.get("variant", "eager"),
        "batch": b,
        "clip_seconds": model.clip_samples / SR,
        "steps": len(times),
        "step_s": median,
        "first_step_s": first,
        "clips_per_s": b / median,
        "audio_x_realtime": b * model.num_views * model.clip_samples / SR / median,
        **facts,
        "peak_rss_growth_mb": peak_rss_mb() - base,
        "cpu_utilisation": (time.process_time() - cpu0) / sum(times) / torch.get_num_threads(),
        "load_average": load_average(),
    }
    if spec["device"].startswith("cuda"):
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_training(args) -> List[Dict]:
    configs = tuple(getattr(args, "train_configs", TRAIN_CONFIGS))
    loops = getattr(args, "train_loops", ["steploop"])
    variants = getattr(args, "train_variants", ["eager"])
    jobs = [(m, s, lp, v) for m in args.models if m in OUR_MODELS
            for s in training_setups(m, args.tiny, args.train_batch, configs) for lp in loops for v in variants]
    rows = []
    for name, setup, loop_kind, variant in tqdm(jobs, desc="pretraining throughput", file=sys.stderr, leave=False):
        spec = {"model": name, **setup, "device": args.device, "warmup": args.train_warmup, "steps": args.train_steps,
                "loop": loop_kind, "variant": variant}
        r = run_isolated("training", spec, timeout=args.probe_timeout)
        what = f"  pretrain {name:7s} {setup['config']} {loop_kind} {variant}"
        if "error" in r:
            r = {"model": name, "config": setup["config"], "batch": setup["batch"], "loop": loop_kind,
                 "variant": variant, **r}
            tqdm.write(f"{what}: FAILED {r['error']}", file=sys.stderr)
        else:
            tqdm.write(f"{what} batch {r['batch']}: {r['clips_per_s']:.2f} clips/s ({r['step_s']:.2f} s per step)",
                       file=sys.stderr)
        rows.append(r)
    return rows
