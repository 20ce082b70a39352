"""A pretraining run: its process and device, data, model and optimizer, and the step loop.

Single process on CPU or one GPU, or several GPUs / nodes under ``torchrun`` (DDP). Every random
choice of step s is derived from (seed, s, rank), so a resumed run continues a stopped or killed one
exactly. ``train`` is the recipe; the functions and the ``StepLoop`` after it are its steps.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed as D
from ..distributed import pick_device
from ..augment import AugmentationChain, read_samples
from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import to_dict
from ..errors import AudioError, ConfigError, UsageError
from ..fileio import atomic_path, remove_stale_temps, write_json
from ..models import build_model, get_entry
from .console import cpu_hint, say, step_time_hint
from .data import AudioFileInfo, RandomCropDataset, StepSampler, read_groups, scan_audio_files
from .diagnostics import learning_diagnostics
from .handover import expand_optimizer
from .interrupt import StopRequest, ignore_stop_signals
from .settings import Job, PretrainConfig, RunConfig, Settings, scaled_lr
from .speedups import apply_speedups, check_compile_possible, uses_bf16

log = logging.getLogger("mart_upstream.train")


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving its checkpoint."""


@dataclass
class Progress:
    """Where a run stands: steps done, seconds of training (over all its resumed parts), skipped batches."""

    step: int = 0
    train_seconds: float = 0.0
    bad_batches: int = 0


def train(job: Job, settings: Settings, resumed: Optional[dict] = None) -> str:
    """Pretrain ``job.model`` with ``settings``, continuing the checkpoint ``resumed`` (``--resume``) if
    given -> the path of the run's last checkpoint. Raises Interrupted when a signal stopped the run
    (after its checkpoint was saved)."""
    run = settings.pretrain.run
    device, dist = start_process(run)
    check_compile_possible(run.compile, device)  # before the data is scanned
    if dist.is_main and device.type == "cpu":
        cpu_hint(job, settings.model, run)
    prepare_run_folder(job.out, dist)
    if dist.is_main:
        write_settings(job, settings)
    data_root, files = training_files(job, settings, dist)
    model, optim, progress = build_model_and_optimizer(job, settings, device, resumed, dist)
    net = apply_speedups(model, wrap_for_ddp(model, job.model, settings.model, device, dist), run.compile,
                         run.channels_last, device, optim)
    dataset, sampler, loader = build_loader(files, data_root, model, settings.pretrain, progress.step, device, dist)
    loop = StepLoop(job, settings.pretrain, model, net, optim, dataset, sampler, device, dist, progress)
    batches = iter(loader)
    with StopRequest(announce=dist.is_main) as stop:
        loop.run(batches, stop)
    return end_of_run(job, run, loop, stop.requested, dist)


# -- before the first step ---------------------------------------------------------------------------------
def write_settings(job: Job, settings: Settings) -> str:
    """OUT/settings.json: every setting the run trains with (the model's config and the optim, data, run
    and augment sections, after the model's paper defaults, the config file, the command line and a
    resumed run's own settings), and the crop lengths the data reads (``read_samples``) and the model
    sees -> its path. Written at every start, so it always names the settings of the run in that folder."""
    path = os.path.join(job.out, "settings.json")
    clip = settings.model.clip_samples
    write_json(path, {"model": job.model, "config": to_dict(settings.model), **to_dict(settings.pretrain),
                      "crop_samples": {"read": read_samples(clip, settings.pretrain.augment), "view": clip}})
    return path


def start_process(run: RunConfig) -> Tuple[torch.device, D.DistInfo]:
    """This process's device, and its place among torchrun's processes (it joins their group)."""
    device = pick_device(run.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = D.init_from_env(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device, dist


def prepare_run_folder(out: str, dist: D.DistInfo) -> None:
    """Make the run folder; remove the temp files a killed checkpoint write left there."""
    os.makedirs(out, exist_ok=True)
    if dist.is_main:
        for stale in remove_stale_temps(out):
            log.info("removed %s, left by an interrupted checkpoint write", stale)


def training_files(job: Job, settings: Settings, dist: D.DistInfo) -> Tuple[str, List[AudioFileInfo]]:
    """The audio folder (``--data``, or ``--demo`` synthetic tracks made in OUT/demo_audio) and its usable
    files. The main process scans first and writes the index (OUT/data_index.json) the others read."""
    model_cfg, cfg = settings
    clip, sr = model_cfg.clip_samples, model_cfg.frontend.sample_rate
    root = job.data
    if job.demo and not root:
        from .demo import make_synthetic_dataset

        root = os.path.join(job.out, "demo_audio")
        if dist.is_main:
            make_synthetic_dataset(root, n_files=job.demo, seconds=max(12.0, 2 * clip / sr), sample_rate=sr,
                                   seed=cfg.run.seed, progress=True)
        D.barrier()
    if not root:
        raise UsageError("no training data: give --data DIR (a folder of audio files) or --demo N")
    min_seconds = cfg.data.min_seconds if cfg.data.min_seconds is not None else clip / sr
    index = os.path.join(job.out, "data_index.json")

    def scan(progress: bool) -> List[AudioFileInfo]:
        return scan_audio_files(root, cfg.data.file_list, min_seconds, cfg.data.check_silence, index,
                                progress=progress)

    files = scan(progress=True) if dist.is_main else []
    D.barrier()
    if not dist.is_main:
        files = scan(progress=False)
    return root, files


def adam(params, o, device: torch.device, global_batch: int) -> torch.optim.Adam:
    """The runs' Adam (MART §3.1, PEMR §4.1.3) with ``optim``'s settings, its rate scaled for
    ``global_batch`` by ``optim.lr_scaling``; fused where torch has a fused kernel for ``device`` (CPU,
    CUDA) and ``optim.fused`` asks for it."""
    fused = bool(o.fused) and device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=scaled_lr(o, global_batch), weight_decay=o.weight_decay, betas=tuple(o.betas), fused=fused or None)


def initial_model(name: str, config, seed: int) -> torch.nn.Module:
    """The model a run of ``seed`` starts from, before any step: the same initial weights on every rank
    and for every run of this seed (``mart-bench run``'s random-init reference is this model)."""
    torch.manual_seed(seed)
    return build_model(name, config)


def build_model_and_optimizer(job: Job, settings: Settings, device: torch.device, resumed: Optional[dict],
                              dist: D.DistInfo) -> Tuple[torch.nn.Module, torch.optim.Optimizer, Progress]:
    """The model with the seed's initial weights (the same on every rank) and its Adam optimizer, both
    in the state of ``resumed`` if given, and where the run stands."""
    cfg = settings.pretrain
    model = initial_model(job.model, settings.model, cfg.run.seed).to(device)
    optim = adam(model.parameters(), cfg.optim, device, cfg.run.batch_size * dist.world_size)
    if resumed is None:
        return model, optim, Progress()
    model.load_state_dict(resumed["model"])  # float16 weights of a hand-over are cast back to float32
    optim.load_state_dict(expand_optimizer(resumed["optimizer"]))  # the moments of any hand-over form
    stored = resumed["pretrain"]
    progress = Progress(int(resumed["step"]), float(stored.get("train_seconds", 0.0)),
                        int(stored.get("bad_batches", 0)))
    if dist.is_main:
        form = (resumed.get("handover") or {}).get("mode")
        log.info("resuming %s from step %d%s", job.checkpoint, progress.step,
                 f" (a {form} hand-over state)" if form else "")
    return model, optim, progress


def wrap_for_ddp(model: torch.nn.Module, name: str, model_cfg, device: torch.device,
                 dist: D.DistInfo) -> torch.nn.Module:
    """What the steps call: ``model`` in DistributedDataParallel under torchrun, else ``model`` itself."""
    if not dist.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=get_entry(name).find_unused_parameters(model_cfg))


def build_loader(files: List[AudioFileInfo], root: str, model: torch.nn.Module, cfg: PretrainConfig, start: int,
                 device: torch.device, dist: D.DistInfo) -> Tuple[RandomCropDataset, StepSampler, DataLoader]:
    """This rank's share of every global batch from step ``start`` on: [B, V, clip_samples] crops, the V
    views ``model`` trains on."""
    groups = None
    if cfg.data.groups:
        path = cfg.data.groups if os.path.isabs(cfg.data.groups) else os.path.join(root, cfg.data.groups)
        groups = read_groups(path, root, files)
        if dist.is_main:
            log.info("positive pairs cross files of one group: %d groups over %d files", len(set(groups)), len(files))
    # a time stretch reads ahead: crops of read_samples, views of clip_samples after the augmentations
    dataset = RandomCropDataset(files, read_samples(model.clip_samples, cfg.augment), num_crops=model.num_views,
                                sample_rate=model.config.frontend.sample_rate, seed=cfg.run.seed,
                                sampling=cfg.data.sampling, groups=groups, in_memory=cfg.data.in_memory,
                                pairing=model.pairing, gap_seconds=model.pairing_gap_seconds)
    sampler = StepSampler(cfg.run.batch_size, start, dist.rank, dist.world_size)
    loader = DataLoader(
        dataset,
        batch_size=cfg.run.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        worker_init_fn=_single_thread_worker,
    )
    return dataset, sampler, loader


def _single_thread_worker(_: int) -> None:
    """Data workers decode and resample one file at a time: one thread each avoids oversubscribing
    the cores the training step runs on."""
    torch.set_num_threads(1)
    ignore_stop_signals()


def step_loop(job: Job, settings: Settings, device: torch.device) -> "StepLoop":
    """The ``StepLoop`` of a new single-process run without a data loader: the caller gives it batches
    (``train_step(step, batch)``). The same model, optimizer, augmentation and speed-ups
    (``run.compile``, ``run.channels_last``) as ``train``; what the speed benchmark times and the
    speed-up tests compare. Writes nothing unless the caller calls ``save``."""
    run, dist = settings.pretrain.run, D.DistInfo()
    check_compile_possible(run.compile, device)
    model, optim, progress = build_model_and_optimizer(job, settings, device, None, dist)
    net = apply_speedups(model, model, run.compile, run.channels_last, device, optim)
    return StepLoop(job, settings.pretrain, model, net, optim, None, None, device, dist, progress)


# -- the steps -------------------------------------------------------------------------------------------
def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


class StepLoop:
    """The steps of one run. Each step trains on one global batch, or skips it when its loss is not
    finite; metrics are logged and checkpoints saved as the settings ask. The loop ends at the step
    budget, at the time budget, or after the step in progress when a signal asks it to stop."""

    def __init__(self, job: Job, cfg: PretrainConfig, model: torch.nn.Module, net: torch.nn.Module,
                 optim: torch.optim.Optimizer, dataset: RandomCropDataset, sampler: StepSampler,
                 device: torch.device, dist: D.DistInfo, progress: Progress):
        self.job, self.cfg, self.run_cfg = job, cfg, cfg.run
        self.model, self.net, self.optim = model, net, optim
        self.dataset, self.sampler = dataset, sampler
        self.device, self.dist, self.progress = device, dist, progress
        self.start = progress.step
        self.augment = AugmentationChain(cfg.augment).to(device)
        # a skipped batch leaves no trace in the buffers a forward pass changes (BatchNorm and input
        # statistics): only those are copied before each step; momentum encoders and MoCo's queue change
        # in after_optimizer_step, which a skipped batch never reaches
        self.norm_buffers = model.forward_buffers()
        self.use_bf16 = uses_bf16(cfg.run, device)
        if self.use_bf16 and device.type == "cpu" and dist.is_main:
            log.info("bfloat16 autocast on the CPU (run.bf16_cpu=%s): about 2x float32 with AMX, but far slower "
                     "while other heavy processes share these cores (then set run.bf16_cpu=false)", cfg.run.bf16_cpu)
        self.metrics = MetricsLog(job.out, progress.step, cfg.run.tensorboard) if dist.is_main else None
        self.out_of_time = False
        self.bar: Optional[tqdm] = None
        self._t_last, self._clips = 0.0, 0  # for clips/s since the last logged step

    def run(self, batches, stop: StopRequest) -> None:
        run, p = self.run_cfg, self.progress
        budget_s = run.max_minutes * 60 if run.max_minutes is not None else float("inf")
        self.bar = tqdm(total=run.steps, initial=p.step, desc=f"{self.job.model} pretrain",
                        disable=not self.dist.is_main, dynamic_ncols=True)
        self.model.train()
        trained_before, t_resumed = p.train_seconds, time.perf_counter()
        self._t_last = t_resumed
        self.out_of_time = trained_before >= budget_s
        try:
            while p.step < run.steps and not self.out_of_time:
                batch = next(batches).to(self.device, non_blocking=True)  # [B, V, T]
                losses, skipped = self.train_step(p.step, batch)
                p.step += 1
                self._clips += batch.shape[0] * self.dist.world_size
                if self.dist.is_main:
                    self.bar.update(1)
                    self.log(p.step, losses, skipped)
                p.train_seconds = trained_before + time.perf_counter() - t_resumed
                if p.step == self.start + 4 and self.dist.is_main:
                    step_time_hint(p.train_seconds - trained_before, p.step - self.start, run.steps - p.step)
                self.out_of_time = D.any_rank(p.train_seconds >= budget_s, self.device)  # all ranks stop together
                stopping = D.any_rank(stop.requested is not None, self.device)
                self.save(p.step, stopping)
                if stopping:
                    stop.requested = stop.requested or "a signal on another rank"
                    break
        finally:
            self.bar.close()

    def train_step(self, step: int, batch: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], bool]:
        """Augment ``batch`` [B, V, T] with the step's seed, then a forward pass and an update; no update
        when the loss is not finite on any rank (every rank skips the same step) -> (losses, skipped)."""
        s = step_seed(self.run_cfg.seed, step, self.dist.rank)
        torch.manual_seed(s)  # dropout and BERT masking of this step
        gen = torch.Generator().manual_seed(s)
        b, v, t = batch.shape
        views = self.augment(batch.reshape(b * v, t), gen, out_samples=self.model.clip_samples).reshape(b, v, -1)
        saved_norms = [x.clone() for x in self.norm_buffers]
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            losses = self.net(views)
        loss = losses["loss"]
        self.optim.zero_grad(set_to_none=True)
        skipped = D.any_rank(not bool(torch.isfinite(loss)), self.device)
        if skipped:
            self.skip(step, float(loss.detach()), batch, saved_norms)
        else:
            loss.backward()
            self.optim.step()
            self.model.after_optimizer_step(step + 1, self.run_cfg.steps)
        return losses, skipped

    def skip(self, step: int, loss: float, batch: torch.Tensor, saved_norms: List[torch.Tensor]) -> None:
        """A batch with a non-finite loss leaves no trace (BatchNorm statistics restored) and is reported;
        more than ``run.max_bad_batches`` of them stop the run."""
        self.progress.bad_batches += 1
        for x, saved in zip(self.norm_buffers, saved_norms):
            x.copy_(saved)
        if self.dist.enabled:  # DDP still expects a gradient reduction for this forward
            sum((p * 0).sum() for p in self.model.parameters()).backward()
            self.optim.zero_grad(set_to_none=True)
        bad_batch(step, loss, batch, [self.dataset.sources(k) for k in self.sampler.keys(step)],
                  self.progress.bad_batches, self.run_cfg.max_bad_batches, self.job.checkpoint)

    def log(self, step: int, losses: Dict[str, torch.Tensor], skipped: bool) -> None:
        """Every ``run.log_every`` steps, the first and the last: the loss terms, learning diagnostics
        and clips/s to the metrics log and the progress bar (main process)."""
        run = self.run_cfg
        if not (step % run.log_every == 0 or step == run.steps or step == self.start + 1):
            return
        now = time.perf_counter()
        rate = self._clips / max(now - self._t_last, 1e-9)
        self._t_last, self._clips = now, 0
        scalars = {k: float(x.detach().float()) for k, x in losses.items() if x.dim() == 0}
        scalars["bad_batches"] = self.progress.bad_batches
        if all(k in losses for k in ("z1", "z2", "emb")) and not skipped:
            scalars.update(learning_diagnostics(losses["z1"], losses["z2"], losses["emb"]))
        scalars["clips_per_s"] = rate
        if self.device.type == "cuda":
            scalars["max_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.bar.set_postfix(loss=f"{scalars['loss']:.4f}", clips_s=f"{rate:.1f}")
        self.metrics.add(step, scalars)

    def save(self, step: int, stopping: bool) -> None:
        """The kept weights of ``run.keep_steps``; OUT/last.ckpt (and the metrics) every ``run.ckpt_every``
        steps, at the last step and when the run stops early."""
        run, main = self.run_cfg, self.dist.is_main
        if step in run.keep_steps and main:
            save_checkpoint(os.path.join(self.job.out, f"step_{step}.ckpt"), self.model, self.job.model, step,
                            None, self._stored())
        if step % run.ckpt_every == 0 or step == run.steps or self.out_of_time or stopping:
            if main:
                save_checkpoint(self.job.checkpoint, self.model, self.job.model, step, self.optim, self._stored())
                self.metrics.flush()
            D.barrier()

    def _stored(self) -> dict:
        """The run's state a checkpoint keeps beside the weights (``pretrain``)."""
        return {"settings": to_dict(self.cfg), "world_size": self.dist.world_size, "ddp": self.dist.enabled,
                "bad_batches": self.progress.bad_batches, "train_seconds": self.progress.train_seconds}


def end_of_run(job: Job, run: RunConfig, loop: StepLoop, stopped_by: Optional[str], dist: D.DistInfo) -> str:
    """Say why the run ended and leave the process group -> the checkpoint; Interrupted when a signal
    stopped the run before its budget."""
    step = loop.progress.step
    if stopped_by and step < run.steps and not loop.out_of_time:
        if dist.is_main:
            say(f"stopped by {stopped_by} at step {step}; checkpoint {job.checkpoint}. Continue with the same "
                "command and --resume.")
        D.cleanup()
        raise Interrupted(job.checkpoint)
    if dist.is_main:
        why = f"time budget of {run.max_minutes} min" if loop.out_of_time and step < run.steps else "step budget"
        log.info("finished %d steps (%s); checkpoint %s", step, why, job.checkpoint)
    D.cleanup()
    return job.checkpoint


# -- reports -----------------------------------------------------------------------------------------------
def bad_batch(step: int, loss: float, batch: torch.Tensor, sources: List[List[str]], count: int,
              allowed: int, ckpt_path: str) -> None:
    """Report a batch whose loss is not finite (naming its files). Beyond ``allowed`` such batches the
    run stops: AudioError when the batch held non-finite samples, else ConfigError (the weights
    diverged)."""
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
    error = AudioError if suspects else ConfigError
    raise error(f"loss is {loss} at step {step}, the {count}th non-finite loss (run.max_bad_batches="
                f"{allowed}); {what}: {files}. If every batch fails the weights have diverged (lower "
                f"optim.lr); {where}")


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
                raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
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
