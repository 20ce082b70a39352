"""Pretraining for the offline benchmark: every model for the same budget, several seeds, resumable.

Each run is ``mart-pretrain`` in a child process (so one run's memory and threads do not leak into the
next) with the model's CPU config (``mart_upstream/configs/<model>_cpu.yaml``; its ``run.steps`` and ``run.batch_size``
are the default budget, sized to about the same CPU time per model; ``--max-minutes`` and ``--steps``
give an equal-time or equal-step budget instead) and ``--resume``: a killed benchmark continues each run where its last checkpoint left it, and a
finished run is not trained again. The random-init references are the same models, built with the
same config and seed, saved before any step.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from mart_upstream.checkpoint import read_checkpoint, save_checkpoint
from mart_upstream.config import cpu_config_path, load_file
from mart_upstream.errors import UsageError
from mart_upstream.fileio import write_json
from mart_upstream.models import build_model, get_entry, model_names
from mart_upstream.train import loop as train_loop

from ..subprocesses import run_logged

log = logging.getLogger("mart-bench.run")
MODELS = tuple(model_names())
# what `mart-bench run` trains without --models: the three models the benchmark's tables and budgets were
# measured for (the strategies-paper models and the BYOL/MoCo baselines join with --models ...)
DEFAULT_MODELS = ("mart", "pemr", "simclr")


@dataclass
class Budget:
    minutes: Optional[float] = None  # training time per run (an equal-time budget)
    steps: Optional[int] = None  # steps per run for every model (default: each config's run.steps)
    batch_size: Optional[int] = None  # default: each config's run.batch_size

    def steps_of(self, model: str) -> int:
        return int(self.steps if self.steps is not None else config_run(model).get("steps", 1000))

    def batch_of(self, model: str) -> int:
        return int(self.batch_size or config_run(model).get("batch_size", 48))

    def describe(self, models=MODELS) -> str:
        parts = ", ".join(f"{m} {self.steps_of(m)}" for m in models)
        batches = sorted({self.batch_of(m) for m in models})
        text = f"steps per run {parts} (batch {'/'.join(map(str, batches))})"
        return text + (f", or {self.minutes:g} min of training if sooner" if self.minutes is not None else "")


def checked_settings(settings: List[str]) -> List[str]:
    """``--set`` values of the benchmark commands (mart-pretrain overrides for every run), each KEY=VALUE."""
    bad = [o for o in settings if "=" not in o or not o.split("=", 1)[0].strip()]
    if bad:
        raise UsageError(f"--set {bad[0]!r}: expected KEY=VALUE, e.g. augment.p_pitch=0")
    return list(settings)


def config_path(model: str) -> str:
    return cpu_config_path(model)


def model_config(model: str) -> dict:
    return load_file(config_path(model)).get("model", {}) or {}


def config_run(model: str) -> dict:
    return load_file(config_path(model)).get("run", {}) or {}


def has_strategy(model: str) -> bool:
    """Whether the model places its positive by a target-instance strategy (strategies paper Table 1)."""
    return any(f.name == "strategy" for f in dataclasses.fields(get_entry(model).config_cls))


def initial_model(model: str, seed: int, config: Optional[dict] = None):
    """The model as ``mart-pretrain --seed SEED`` builds it before any step, with ``config`` (default: the
    benchmark's config)."""
    return train_loop.initial_model(model, model_config(model) if config is None else config, seed)


def random_init(model: str, seed: int, path: str, config: Optional[dict] = None, **extra) -> str:
    """The reference 'same encoder, random weights': ``initial_model`` saved as a checkpoint at step 0."""
    if not os.path.isfile(path):
        save_checkpoint(path, initial_model(model, seed, config), model, step=0,
                        extra={"random_init": True, "seed": seed, **extra})
    return path


def _done_marker(run_dir: str) -> str:
    return os.path.join(run_dir, "finished.json")


def pretrain(model: str, seed: int, data: str, run_dir: str, budget: Budget, device: str = "cpu",
             num_workers: int = 1, overrides: Optional[List[str]] = None, commit: str = "unknown") -> Dict:
    """Train (or finish training) one run; -> {checkpoint, steps, train_minutes, wall_s}."""
    marker = _done_marker(run_dir)
    if os.path.isfile(marker):
        with open(marker) as f:
            return json.load(f)
    cmd = [sys.executable, "-m", "mart_upstream.train", "--model", model, "--data", data, "--out", run_dir,
           "--config", config_path(model), "--seed", str(seed), "--steps", str(budget.steps_of(model)), "--device", device,
           "--num-workers", str(num_workers), "--resume"]
    if budget.minutes is not None:
        cmd += ["--max-minutes", str(budget.minutes)]
    if budget.batch_size:
        cmd += ["--batch-size", str(budget.batch_size)]
    # renderings of one work: positives cross them, for models whose views are independent crops (the
    # strategies-paper models place their views in one track: self-augmented, adjacent, rest of track)
    if os.path.isfile(os.path.join(data, "groups.csv")) and build_model(model, model_config(model)).pairing == "independent":
        cmd.append("data.groups=groups.csv")
    cmd += list(overrides or [])
    os.makedirs(run_dir, exist_ok=True)
    log.info("pretraining %s seed %d (%s) -> %s", model, seed, budget.describe([model]), run_dir)
    t0 = time.perf_counter()
    run_logged(cmd, os.path.join(run_dir, "pretrain.log"), f"pretraining {model} seed {seed}")
    ckpt = os.path.join(run_dir, "last.ckpt")
    state = read_checkpoint(ckpt)
    info = {"model": model, "seed": seed, "checkpoint": ckpt, "steps": int(state["step"]),
            "train_minutes": round(float(state["pretrain"].get("train_seconds", 0.0)) / 60, 3),
            "batch_size": int(state["pretrain"]["settings"]["run"]["batch_size"]),
            "wall_s": round(time.perf_counter() - t0, 1), "budget": budget.describe([model]), "data": os.path.abspath(data),
            "commit": commit}
    write_json(marker, info, sort_keys=False)
    return info
