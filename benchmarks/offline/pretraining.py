"""Pretraining for the offline benchmark: every model for the same budget, several seeds, resumable.

Each run is ``mart-pretrain`` in a child process (so one run's memory and threads do not leak into the
next) with the benchmark's config (``configs/<model>.yaml``), ``--max-minutes`` as the shared budget
and ``--resume``: a killed benchmark continues each run where its last checkpoint left it, and a
finished run is not trained again. The random-init references are the same models, built with the
same config and seed, saved before any step.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from mart_upstream.checkpoint import read_checkpoint, save_checkpoint
from mart_upstream.config import load_file
from mart_upstream.fileio import write_json
from mart_upstream.models import build_model

log = logging.getLogger("mart-bench.run")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
MODELS = ("mart", "pemr", "simclr")


@dataclass
class Budget:
    minutes: Optional[float]  # training time per run (the default budget: equal compute)
    steps: int  # step cap (alone: an equal-step budget)
    batch_size: Optional[int] = None

    def describe(self) -> str:
        time_part = f"{self.minutes:g} min" if self.minutes is not None else "no time limit"
        return f"{time_part}, at most {self.steps} steps" + (f", batch {self.batch_size}" if self.batch_size else "")


def config_path(model: str) -> str:
    return os.path.join(CONFIG_DIR, f"{model}.yaml")


def model_config(model: str) -> dict:
    return load_file(config_path(model)).get("model", {}) or {}


def initial_model(model: str, seed: int, config: Optional[dict] = None):
    """The model as ``mart-pretrain --seed SEED`` builds it before any step, with ``config`` (default: the
    benchmark's config)."""
    torch.manual_seed(seed)
    return build_model(model, model_config(model) if config is None else config)


def random_init(model: str, seed: int, path: str, config: Optional[dict] = None, **extra) -> str:
    """The reference 'same encoder, random weights': ``initial_model`` saved as a checkpoint at step 0."""
    if not os.path.isfile(path):
        save_checkpoint(path, initial_model(model, seed, config), model, step=0,
                        extra={"random_init": True, "seed": seed, **extra})
    return path


def child_env(**extra: str) -> Dict[str, str]:
    """The environment of the benchmark's child processes: this checkout importable, plus ``extra``."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _done_marker(run_dir: str) -> str:
    return os.path.join(run_dir, "finished.json")


def pretrain(model: str, seed: int, data: str, run_dir: str, budget: Budget, device: str = "cpu",
             num_workers: int = 1, overrides: Optional[List[str]] = None, commit: str = "unknown") -> Dict:
    """Train (or finish training) one run; -> {checkpoint, steps, train_minutes, wall_s}."""
    marker = _done_marker(run_dir)
    if os.path.isfile(marker):
        with open(marker) as f:
            return json.load(f)
    cmd = [sys.executable, "-m", "mart_upstream.pretrain", "--model", model, "--data", data, "--out", run_dir,
           "--config", config_path(model), "--seed", str(seed), "--steps", str(budget.steps), "--device", device,
           "--num-workers", str(num_workers), "--resume"]
    if budget.minutes is not None:
        cmd += ["--max-minutes", str(budget.minutes)]
    if budget.batch_size:
        cmd += ["--batch-size", str(budget.batch_size)]
    if os.path.isfile(os.path.join(data, "groups.csv")):  # renderings of one work: positives cross them
        cmd.append("data.groups=groups.csv")
    cmd += list(overrides or [])
    os.makedirs(run_dir, exist_ok=True)
    log.info("pretraining %s seed %d (%s) -> %s", model, seed, budget.describe(), run_dir)
    t0 = time.perf_counter()
    with open(os.path.join(run_dir, "pretrain.log"), "a") as logf:
        r = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=child_env())
    if r.returncode != 0:
        raise RuntimeError(f"pretraining {model} seed {seed} failed (exit {r.returncode}); "
                           f"see {os.path.join(run_dir, 'pretrain.log')}")
    ckpt = os.path.join(run_dir, "last.ckpt")
    state = read_checkpoint(ckpt)
    info = {"model": model, "seed": seed, "checkpoint": ckpt, "steps": int(state["step"]),
            "train_minutes": round(float(state["pretrain"].get("train_seconds", 0.0)) / 60, 3),
            "batch_size": int(state["pretrain"]["settings"]["run"]["batch_size"]),
            "wall_s": round(time.perf_counter() - t0, 1), "budget": budget.describe(), "data": os.path.abspath(data),
            "commit": commit}
    write_json(marker, info, sort_keys=False)
    return info
