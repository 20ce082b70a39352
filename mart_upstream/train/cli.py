"""Pretraining entry point: ``mart-pretrain --model {mart,pemr,simclr} --data DIR --out DIR``.

Single process on CPU or one GPU, or several GPUs / nodes under ``torchrun`` (DDP). Every random
choice of step s is derived from (seed, s, rank), so ``--resume`` continues a killed run exactly.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed as D
from ..augment import AugmentationChain, AugmentConfig
from ..checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from ..errors import AudioError
from ..config import ConfigError, apply_overrides, cpu_config_path, from_dict, load_file, to_dict
from ..fileio import DiskFullError, atomic_path, remove_stale_temps
from .data import RandomCropDataset, StepSampler, read_groups, scan_audio_files
from .diagnostics import learning_diagnostics
from ..quiet import silence_known_noise
from .interrupt import INTERRUPTED_EXIT, StopRequest, ignore_stop_signals
from ..models import build_config, build_model, model_names

log = logging.getLogger("mart_upstream.train")


@dataclass
class OptimConfig:
    lr: float = 3e-4  # MART §3.1, PEMR §4.1.3: Adam, lr 0.0003
    weight_decay: float = 1e-6  # weight decay 1e-6
    betas: tuple = (0.9, 0.999)


@dataclass
class DataConfig:
    file_list: Optional[str] = None
    min_seconds: Optional[float] = None  # default: one crop
    check_silence: bool = True
    num_workers: int = 2
    sampling: str = "duration"  # "duration": files drawn by length; "file": each file once per epoch
    groups: Optional[str] = None  # CSV path,group (paths relative to --data): views cross a group's files
    in_memory: bool = False  # decode every file once into memory (fast crops; needs RAM for the whole set)


@dataclass
class RunConfig:
    seed: int = 0
    steps: int = 1000  # the step budget
    max_minutes: Optional[float] = None  # a time budget too: stop at whichever comes first (training time,
    # summed over resumed runs; data scanning and checkpoint writing not counted)
    batch_size: int = 48  # MART §3.1, PEMR §4.1.3
    log_every: int = 10
    ckpt_every: int = 500
    keep_steps: tuple = ()  # also keep the weights at these steps as OUT/step_<N>.ckpt (learning curves)
    max_bad_batches: int = 10  # batches with a non-finite loss are skipped (no update); more stop the run
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast to bfloat16 on CUDA
    bf16_cpu: bool = False  # autocast to bfloat16 on CPU too (the CUDA code path, testable without a GPU)
    tensorboard: bool = False


@dataclass
class PretrainConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class PretrainError(RuntimeError):
    """A problem with the run's inputs, reported as one clear line."""


def pick_device(request: str, local_rank: int = 0) -> torch.device:
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request == "cuda":
        if not torch.cuda.is_available():
            raise PretrainError(
                "CUDA was requested (--device cuda) but torch.cuda.is_available() is False: "
                "install a CUDA build of torch or use --device cpu"
            )
        return torch.device("cuda", local_rank)
    if request != "cpu":
        raise PretrainError(f"--device must be auto, cpu or cuda, got {request!r}")
    return torch.device("cpu")


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


class MetricsLog:
    """Scalars to ``metrics.csv`` (always) and TensorBoard (optional). On resume, rows after the
    resumed step (written by the killed run) are dropped so the log matches the training."""

    def __init__(self, out: str, start_step: int, tensorboard: bool):
        self.path = os.path.join(out, "metrics.csv")
        self.rows: List[Dict[str, float]] = []
        if os.path.exists(self.path) and start_step > 0:
            with open(self.path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise PretrainError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
            self.writer = SummaryWriter(os.path.join(out, "tb"))

    def add(self, step: int, scalars: Dict[str, float]) -> None:
        self.rows.append({"step": step, **scalars})
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)

    def flush(self) -> None:
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        with atomic_path(self.path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        if self.writer is not None:
            self.writer.flush()


def config_file(args) -> Optional[str]:
    """``--config``: a file, or ``cpu`` for the packaged CPU-sized settings of ``--model``."""
    return cpu_config_path(args.model) if args.config == "cpu" else args.config


def build_settings(args) -> tuple:
    """Merge defaults, --config FILE, resumed checkpoint and key=value overrides -> (model cfg, run cfg)."""
    data: dict = {}
    if args.config:
        data = load_file(config_file(args))
    data = apply_overrides(data, args.overrides)
    model_data = data.pop("model", {}) or {}
    settings = from_dict(PretrainConfig, data, where="pretrain config")
    model_cfg = build_config(args.model, model_data)
    return model_cfg, settings


def train(args) -> str:
    model_cfg, cfg = build_settings(args)
    run = cfg.run
    for flag, key in (("steps", "steps"), ("max_minutes", "max_minutes"), ("batch_size", "batch_size"),
                      ("seed", "seed"), ("device", "device"),
                      ("ckpt_every", "ckpt_every"), ("log_every", "log_every"), ("keep_steps", "keep_steps")):
        if getattr(args, flag) is not None:
            setattr(run, key, getattr(args, flag))
    if args.num_workers is not None:
        cfg.data.num_workers = args.num_workers
    if args.file_list is not None:
        cfg.data.file_list = args.file_list
    if args.tensorboard:
        run.tensorboard = True
    check_settings(cfg)
    out = args.out
    ckpt_path = os.path.join(out, "last.ckpt")
    resume_state = None
    if args.resume and os.path.exists(ckpt_path):
        resume_state = read_checkpoint(ckpt_path)
        if resume_state["model_name"] != args.model:
            raise PretrainError(f"{ckpt_path} holds a {resume_state['model_name']!r} run, not {args.model!r}")
        if not resume_state.get("optimizer") or "settings" not in (resume_state.get("pretrain") or {}):
            raise PretrainError(f"{ckpt_path} holds weights only (an exported or packaged checkpoint), not a run "
                                "to continue: --resume needs the last.ckpt a mart-pretrain run wrote")
        # The run continues with the settings it was started with; only the budget and how it runs may change.
        saved_model = build_config(args.model, resume_state["config"])
        saved = from_dict(PretrainConfig, resume_state["pretrain"].get("settings", {}), "checkpoint settings")
        for section, key in RESUME_MAY_CHANGE:
            setattr(getattr(saved, section), key, getattr(getattr(cfg, section), key))
        ignored = _differences({"model": to_dict(model_cfg), **to_dict(cfg)},
                               {"model": to_dict(saved_model), **to_dict(saved)})
        if ignored:
            say("--resume continues with the settings the run started with; ignored: " + ", ".join(ignored))
        model_cfg, cfg, run = saved_model, saved, saved.run
    elif args.resume:
        say(f"--resume: no checkpoint at {ckpt_path} yet; starting a new run from step 0")

    device = pick_device(run.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = D.init_from_env(device.type)
    if dist.is_main and device.type == "cpu":
        cpu_hint(args, model_cfg, run)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.makedirs(out, exist_ok=True)
    if dist.is_main:
        for stale in remove_stale_temps(out):
            log.info("removed %s, left by an interrupted checkpoint write", stale)
    clip = model_cfg.clip_samples
    sr = model_cfg.frontend.sample_rate

    data_root = args.data
    if args.demo and not data_root:
        from .demo import make_synthetic_dataset

        data_root = os.path.join(out, "demo_audio")
        if dist.is_main:
            make_synthetic_dataset(data_root, n_files=args.demo, seconds=max(12.0, 2 * clip / sr), sample_rate=sr,
                                   seed=run.seed, progress=True)
        D.barrier()
    if not data_root:
        raise PretrainError("no training data: give --data DIR (a folder of audio files) or --demo N")
    min_seconds = cfg.data.min_seconds if cfg.data.min_seconds is not None else clip / sr
    index = os.path.join(out, "data_index.json")
    if dist.is_main:
        files = scan_audio_files(data_root, cfg.data.file_list, min_seconds, cfg.data.check_silence, index,
                                 progress=True)
    D.barrier()
    if not dist.is_main:
        files = scan_audio_files(data_root, cfg.data.file_list, min_seconds, cfg.data.check_silence, index,
                                 progress=False)

    torch.manual_seed(run.seed)  # the same initial weights on every rank and for every run of this seed
    model = build_model(args.model, model_cfg).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                             betas=tuple(cfg.optim.betas))
    start, trained_s, bad_batches = 0, 0.0, 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optim.load_state_dict(resume_state["optimizer"])
        start = int(resume_state["step"])
        trained_s = float(resume_state["pretrain"].get("train_seconds", 0.0))
        bad_batches = int(resume_state["pretrain"].get("bad_batches", 0))
        if dist.is_main:
            log.info("resuming %s from step %d", ckpt_path, start)
    augment = AugmentationChain(cfg.augment).to(device)
    net = model
    if dist.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=_has_unused_parameters(args.model, model_cfg))

    groups = None
    if cfg.data.groups:
        path = cfg.data.groups if os.path.isabs(cfg.data.groups) else os.path.join(data_root, cfg.data.groups)
        groups = read_groups(path, data_root, files)
        if dist.is_main:
            log.info("positive pairs cross files of one group: %d groups over %d files", len(set(groups)), len(files))
    dataset = RandomCropDataset(files, clip, num_crops=model.num_views, sample_rate=sr, seed=run.seed,
                                sampling=cfg.data.sampling, groups=groups, in_memory=cfg.data.in_memory)
    sampler = StepSampler(run.batch_size, start, dist.rank, dist.world_size)
    loader = DataLoader(
        dataset,
        batch_size=run.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        worker_init_fn=_single_thread_worker,
    )
    extra = {"settings": to_dict(cfg), "world_size": dist.world_size, "ddp": dist.enabled, "bad_batches": bad_batches}
    norm_buffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                    for b in m.buffers()]
    metrics = MetricsLog(out, start, run.tensorboard) if dist.is_main else None
    use_bf16 = run.bf16 and (device.type == "cuda" or run.bf16_cpu)
    bar = tqdm(total=run.steps, initial=start, desc=f"{args.model} pretrain", disable=not dist.is_main,
               dynamic_ncols=True)
    model.train()
    budget_s = run.max_minutes * 60 if run.max_minutes is not None else float("inf")
    batches = iter(loader)
    t_resumed = time.perf_counter()
    out_of_time = trained_s >= budget_s
    stop = StopRequest(announce=dist.is_main)
    step, t_last, clips_since = start, time.perf_counter(), 0
    with stop:
        while step < run.steps and not out_of_time:
            batch = next(batches).to(device, non_blocking=True)  # [B, V, T]
            s = step_seed(run.seed, step, dist.rank)
            torch.manual_seed(s)  # dropout and BERT masking of this step
            gen = torch.Generator().manual_seed(s)
            b, v, t = batch.shape
            views = augment(batch.reshape(b * v, t), gen).reshape(b, v, t)
            saved_norms = [x.clone() for x in norm_buffers]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                losses = net(views)
            loss = losses["loss"]
            optim.zero_grad(set_to_none=True)
            skipped = D.any_rank(not bool(torch.isfinite(loss)), device)  # every rank skips the same step
            if skipped:
                bad_batches += 1
                extra["bad_batches"] = bad_batches
                for x, saved in zip(norm_buffers, saved_norms):  # the bad batch leaves no trace
                    x.copy_(saved)
                if dist.enabled:  # DDP still expects a gradient reduction for this forward
                    sum((p * 0).sum() for p in model.parameters()).backward()
                    optim.zero_grad(set_to_none=True)
                bad_batch(step, float(loss.detach()), batch, [dataset.sources(k) for k in sampler.keys(step)], bad_batches,
                          run.max_bad_batches, ckpt_path)
            else:
                loss.backward()
                optim.step()
            step += 1
            clips_since += b * dist.world_size
            if dist.is_main:
                bar.update(1)
                if step % run.log_every == 0 or step == run.steps or step == start + 1:
                    now = time.perf_counter()
                    rate = clips_since / max(now - t_last, 1e-9)
                    t_last, clips_since = now, 0
                    scalars = {k: float(x.detach().float()) for k, x in losses.items() if x.dim() == 0}
                    scalars["bad_batches"] = bad_batches
                    if all(k in losses for k in ("z1", "z2", "emb")) and not skipped:
                        scalars.update(learning_diagnostics(losses["z1"], losses["z2"], losses["emb"]))
                    scalars["clips_per_s"] = rate
                    if device.type == "cuda":
                        scalars["max_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}", clips_s=f"{rate:.1f}")
                    metrics.add(step, scalars)
            elapsed = trained_s + time.perf_counter() - t_resumed
            if step == start + 4 and dist.is_main:
                step_time_hint(elapsed - trained_s, step - start, run.steps - step)
            out_of_time = D.any_rank(elapsed >= budget_s, device)  # every rank stops at the same step
            stopping = D.any_rank(stop.requested is not None, device)
            if step in run.keep_steps and dist.is_main:
                extra["train_seconds"] = elapsed
                save_checkpoint(os.path.join(out, f"step_{step}.ckpt"), model, args.model, step, None, extra)
            if step % run.ckpt_every == 0 or step == run.steps or out_of_time or stopping:
                if dist.is_main:
                    extra["train_seconds"] = elapsed
                    save_checkpoint(ckpt_path, model, args.model, step, optim, extra)
                    metrics.flush()
                D.barrier()
            if stopping:
                stop.requested = stop.requested or "a signal on another rank"
                break
    bar.close()
    if stop.requested and step < run.steps and not out_of_time:
        if dist.is_main:
            say(f"stopped by {stop.requested} at step {step}; checkpoint {ckpt_path}. Continue with the same "
                "command and --resume.")
        D.cleanup()
        raise Interrupted(ckpt_path)
    if dist.is_main:
        why = f"time budget of {run.max_minutes} min" if out_of_time and step < run.steps else "step budget"
        log.info("finished %d steps (%s); checkpoint %s", step, why, ckpt_path)
    D.cleanup()
    return ckpt_path


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving its checkpoint."""


# What a resumed run may change; every other setting comes from its checkpoint.
RESUME_MAY_CHANGE = (("run", "steps"), ("run", "max_minutes"), ("run", "device"), ("run", "max_bad_batches"),
                     ("run", "log_every"), ("run", "ckpt_every"), ("run", "tensorboard"), ("data", "num_workers"))


def _differences(asked: dict, kept: dict, prefix: str = "") -> List[str]:
    """``key=asked (the run's: kept)`` for every leaf where a resumed run ignores what was asked."""
    out = []
    for key, value in asked.items():
        other = kept.get(key)
        if isinstance(value, dict) and isinstance(other, dict):
            out += _differences(value, other, f"{prefix}{key}.")
        elif value != other:
            out.append(f"{prefix}{key}={value} (the run's: {other})")
    return out


def check_settings(cfg: PretrainConfig) -> None:
    """PretrainError naming the first run/data/optim value that cannot work."""
    run = cfg.run
    rules = [
        (run.steps >= 1, f"run.steps (--steps) must be at least 1, got {run.steps}"),
        (run.batch_size >= 2, f"run.batch_size (--batch-size) must be at least 2 (contrastive losses need "
                              f"negatives), got {run.batch_size}"),
        (run.log_every >= 1, f"run.log_every (--log-every) must be at least 1, got {run.log_every}"),
        (run.ckpt_every >= 1, f"run.ckpt_every (--ckpt-every) must be at least 1, got {run.ckpt_every}"),
        (run.max_bad_batches >= 0, f"run.max_bad_batches must be >= 0, got {run.max_bad_batches}"),
        (cfg.data.num_workers >= 0, f"data.num_workers (--num-workers) must be >= 0, got {cfg.data.num_workers}"),
        (run.max_minutes is None or (math.isfinite(run.max_minutes) and run.max_minutes > 0),
         f"--max-minutes must be a positive number, got {run.max_minutes}"),
        (math.isfinite(cfg.optim.lr) and cfg.optim.lr > 0, f"optim.lr must be a positive number, got {cfg.optim.lr}"),
    ]
    for ok, message in rules:
        if not ok:
            raise PretrainError(message)


def bad_batch(step: int, loss: float, batch: torch.Tensor, sources: List[List[str]], count: int,
              allowed: int, ckpt_path: str) -> None:
    """Report a batch whose loss is not finite (naming its files); PretrainError beyond ``allowed``."""
    finite = torch.isfinite(batch.reshape(batch.shape[0], -1)).all(dim=1).tolist()
    suspects = [p for ok, paths in zip(finite, sources) if not ok for p in paths]
    named = sorted(set(suspects or [p for paths in sources for p in paths]))
    files = ", ".join(named[:6]) + (f" and {len(named) - 6} more" if len(named) > 6 else "")
    what = "non-finite samples from" if suspects else "its files"
    if count <= allowed:
        log.warning("step %d: loss is %s; batch skipped (%d of at most %d), %s: %s", step, loss, count,
                    allowed, what, files)
        return
    where = (f"the last checkpoint is {ckpt_path} (step {read_checkpoint(ckpt_path)['step']})"
             if os.path.isfile(ckpt_path) else "no checkpoint was written yet")
    raise PretrainError(f"loss is {loss} at step {step}, the {count}th non-finite loss (run.max_bad_batches="
                        f"{allowed}); {what}: {files}. If every batch fails the weights have diverged (lower "
                        f"optim.lr); {where}")


def say(text: str) -> None:
    """A line the user should see among the logs and progress bars."""
    tqdm.write(f"mart-pretrain: {text}", file=sys.stderr)


def cpu_hint(args, model_cfg, run) -> None:
    """On a CPU, point at the CPU-sized settings when the paper's (GPU-sized) model is being trained."""
    paper = to_dict(build_config(args.model, {})) == to_dict(model_cfg)
    if paper:
        say(f"no CUDA device: training the paper's {args.model} configuration (batch {run.batch_size}, "
            f"{model_cfg.clip_samples / model_cfg.frontend.sample_rate:.1f} s crops) on the CPU: tens of seconds "
            "to minutes per step. For CPU-sized settings add --config cpu "
            f"({cpu_config_path(args.model)}).")


def step_time_hint(seconds: float, steps: int, left: int) -> None:
    per_step = seconds / max(steps, 1)
    total = per_step * left
    say(f"about {per_step:.2f} s per step: the {left} steps left take about "
        f"{int(total // 3600)} h {int(total % 3600 // 60):02d} min")


def _single_thread_worker(_: int) -> None:
    """Data workers decode and resample one file at a time: one thread each avoids oversubscribing
    the cores the training step runs on."""
    torch.set_num_threads(1)
    ignore_stop_signals()


def _has_unused_parameters(name: str, cfg) -> bool:
    if name == "mart":
        return not cfg.use_pwt
    return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mart-pretrain",
        description="Self-supervised pretraining of MART, PEMR or the SimCLR baseline on a folder of audio. "
        "Run under torchrun for several GPUs. Extra key=value arguments override the config "
        "(e.g. model.levels=3 optim.lr=1e-3 augment.p_pitch=0).",
    )
    p.add_argument("--model", required=True, choices=model_names())
    p.add_argument("--data", help="folder tree of audio files (wav/flac/ogg/mp3)")
    p.add_argument("--out", required=True, help="run folder; the final checkpoint is OUT/last.ckpt")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="time budget: stop after this many minutes of training, or at --steps if sooner")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--config", help="YAML/JSON file with sections model, optim, data, run, augment; 'cpu': the "
                                    "packaged CPU-sized settings of --model (mart_upstream/configs/<model>_cpu.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt if it exists")
    p.add_argument("--file-list", dest="file_list", help="text file of audio paths (relative to --data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int, dest="num_workers")
    p.add_argument("--ckpt-every", type=int, dest="ckpt_every")
    p.add_argument("--log-every", type=int, dest="log_every")
    p.add_argument("--keep-steps", dest="keep_steps", type=lambda t: tuple(int(x) for x in t.split(",") if x),
                   help="comma-separated steps whose weights are kept as OUT/step_<N>.ckpt (for learning curves)")
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--demo", type=int, metavar="N", default=0,
                   help="without --data: generate N synthetic music tracks into OUT/demo_audio and train on them")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    silence_known_noise()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except Interrupted:
        return INTERRUPTED_EXIT
    except (AudioError, ConfigError, PretrainError, CheckpointError, DiskFullError) as e:
        print(f"mart-pretrain: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
