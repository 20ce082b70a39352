"""A pretraining run's settings and the one place they are put together.

Each layer overrides the one before it:

1. the defaults (the dataclasses below and the model's config dataclass), then the pretraining
   settings of the model's paper (``pretrain_defaults`` on its class);
2. the config file (``--config FILE``, or ``--config cpu``: the model's packaged CPU-sized settings);
3. the command line: ``key=value`` overrides, then the flags (``--steps``, ... see ``FLAG_KEYS``);
4. with ``--resume``, the settings the run was started with (stored in its checkpoint), for everything
   but ``RESUME_MAY_CHANGE``: the budget and how the run is carried out keep their command-line value.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ..augment import AugmentConfig
from ..checkpoint import is_run_state, read_checkpoint
from ..config import apply_overrides, cpu_config_path, from_dict, load_file, merge, set_key, to_dict
from ..errors import CheckpointError, ConfigError
from ..models import build_config, get_entry
from .console import say
from .speedups import check_bf16_cpu, check_compile_mode


@dataclass
class OptimConfig:
    lr: float = 3e-4  # MART §3.1, PEMR §4.1.3: Adam, lr 0.0003
    weight_decay: float = 1e-6  # weight decay 1e-6
    betas: tuple = (0.9, 0.999)
    # one fused Adam kernel over all parameters (torch's fused=True, CPU and CUDA): the same update as the
    # per-tensor loop to float rounding; the loop spent about 10% of a PEMR CPU step in Adam
    fused: bool = True
    # large-batch mode: optim.lr is the rate for a global batch of lr_batch; other global batches (batch
    # size x processes) scale it by lr_scaling: none (the papers' rate at any batch), linear (x B/lr_batch,
    # Goyal et al. 2017) or sqrt (x sqrt(B/lr_batch), Krizhevsky 2014; the usual rule for Adam)
    lr_scaling: str = "none"
    lr_batch: int = 48  # MART §3.1, PEMR §4.1.3: lr 3e-4 at batch 48


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
    # autocast to bfloat16 on the CPU too: false | true | auto (where the CPU has bfloat16 matrix units,
    # AMX: about 2x the float32 step of the CPU configs there, far slower without them; ``speedups.uses_bf16``)
    bf16_cpu: str = "false"
    tensorboard: bool = False
    # opt-in speed-ups, equal to the eager step within float rounding (``train.speedups``):
    compile: str = "none"  # none | default | reduce-overhead | max-autotune: torch.compile of the model's step
    channels_last: bool = False  # 4-D weights and convolution inputs in channels-last (NHWC) memory order


@dataclass
class PretrainConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class Settings(NamedTuple):
    """Everything a run is trained with: the model's config and the pretraining config."""

    model: Any  # the model's config dataclass
    pretrain: PretrainConfig


@dataclass
class Job:
    """What is trained and where: ``--model``, ``--out``, ``--data`` (or ``--demo N`` synthetic tracks)."""

    model: str
    out: str
    data: Optional[str] = None
    demo: int = 0

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.out, "last.ckpt")


# The config key each command-line flag sets (argparse dest -> key). A flag not given leaves the key alone.
FLAG_KEYS: Dict[str, str] = {
    "steps": "run.steps",
    "max_minutes": "run.max_minutes",
    "batch_size": "run.batch_size",
    "seed": "run.seed",
    "device": "run.device",
    "ckpt_every": "run.ckpt_every",
    "log_every": "run.log_every",
    "keep_steps": "run.keep_steps",
    "tensorboard": "run.tensorboard",
    "num_workers": "data.num_workers",
    "file_list": "data.file_list",
    "strategy": "model.strategy",
}

LR_SCALING = ("none", "linear", "sqrt")


def scaled_lr(optim: OptimConfig, global_batch: int) -> float:
    """The learning rate for ``global_batch`` under ``optim.lr_scaling`` (see OptimConfig)."""
    ratio = global_batch / optim.lr_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[optim.lr_scaling]
    return optim.lr * factor


# What a resumed run may change; every other setting comes from its checkpoint.
RESUME_MAY_CHANGE = (("run", "steps"), ("run", "max_minutes"), ("run", "device"), ("run", "max_bad_batches"),
                     ("run", "log_every"), ("run", "ckpt_every"), ("run", "tensorboard"), ("data", "num_workers"),
                     ("run", "compile"), ("run", "channels_last"), ("run", "keep_steps"), ("run", "bf16_cpu"),
                     ("optim", "fused"))


def config_file(args) -> Optional[str]:
    """``--config``: a file, or ``cpu`` for the packaged CPU-sized settings of ``--model``."""
    return cpu_config_path(args.model) if args.config == "cpu" else args.config


def build_settings(args, resumed: Optional[dict] = None) -> Settings:
    """The run's settings from the parsed command line ``args`` and, with ``--resume``, the checkpoint
    ``resumed`` it continues (see the module's docstring for the order). The settings asked for are
    checked first (ConfigError naming the first value that cannot work)."""
    entry = get_entry(args.model)
    if getattr(args, "strategy", None) is not None and "strategy" not in _field_names(entry.config_cls):
        raise ConfigError(f"--strategy applies to models with a strategy setting; {args.model} has none")
    data = copy.deepcopy(entry.model_cls.pretrain_defaults)
    if args.config:
        data = merge(data, load_file(config_file(args)))
    apply_overrides(data, args.overrides)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            set_key(data, key, value, "--" + flag.replace("_", "-"))
    model_data = data.pop("model", {}) or {}
    pretrain = from_dict(PretrainConfig, data, where="pretrain config")
    asked = Settings(build_config(args.model, model_data), pretrain)
    check_settings(asked.pretrain)
    return asked if resumed is None else _as_resumed(args.model, asked, resumed)


def settings_for(model: str, config: Optional[str] = None, overrides: Sequence[str] = (),
                 model_config: Optional[dict] = None) -> Settings:
    """A new run's settings as ``mart-pretrain --model MODEL [--config CONFIG] KEY=VALUE ...`` builds them
    (no flags); ``model_config``, if given, replaces the model section (e.g. a tiny config)."""
    args = argparse.Namespace(model=model, config=config, overrides=list(overrides), **dict.fromkeys(FLAG_KEYS))
    settings = build_settings(args)
    return settings if model_config is None else Settings(build_config(model, model_config), settings.pretrain)


def _field_names(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


def _as_resumed(model_name: str, asked: Settings, state: dict) -> Settings:
    """The settings stored in the checkpoint ``state``, with ``RESUME_MAY_CHANGE`` taken from ``asked``;
    any other value asked for that differs is named as ignored."""
    kept = Settings(build_config(model_name, state["config"]),
                    from_dict(PretrainConfig, state["pretrain"].get("settings", {}), "checkpoint settings"))
    for section, key in RESUME_MAY_CHANGE:
        setattr(getattr(kept.pretrain, section), key, getattr(getattr(asked.pretrain, section), key))
    ignored = _differences(_plain(asked), _plain(kept))
    if ignored:
        say("--resume continues with the settings the run started with; ignored: " + ", ".join(ignored))
    return kept


def _plain(settings: Settings) -> dict:
    return {"model": to_dict(settings.model), **to_dict(settings.pretrain)}


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
    """ConfigError naming the first run/data/optim value that cannot work."""
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
            raise ConfigError(message)
    check_compile_mode(run.compile)
    check_bf16_cpu(run.bf16_cpu)
    if cfg.optim.lr_scaling not in LR_SCALING:
        raise ConfigError(f"optim.lr_scaling must be one of {', '.join(LR_SCALING)}, got {cfg.optim.lr_scaling!r}")
    if cfg.optim.lr_batch < 1:
        raise ConfigError(f"optim.lr_batch must be at least 1, got {cfg.optim.lr_batch}")
    if not isinstance(run.channels_last, bool):
        raise ConfigError(f"run.channels_last must be true or false, got {run.channels_last!r}")


def resumable_run(job: Job) -> Optional[dict]:
    """The checkpoint ``--resume`` continues: ``job``'s last.ckpt, checked to be a run of ``job.model``
    that can go on. None (and a line saying so) where the run has written none yet."""
    path = job.checkpoint
    if not os.path.exists(path):
        say(f"--resume: no checkpoint at {path} yet; starting a new run from step 0")
        return None
    state = read_checkpoint(path)
    if state["model_name"] != job.model:
        raise CheckpointError(f"{path} holds a {state['model_name']!r} run, not {job.model!r}")
    if not is_run_state(state):
        raise CheckpointError(f"{path} holds weights only (an exported or packaged checkpoint), not a run "
                              "to continue: --resume needs the last.ckpt a mart-pretrain run wrote")
    return state
