"""What ``mart-pretrain`` tells its user, among the logs and progress bars."""
from __future__ import annotations

import sys

from tqdm import tqdm

from ..config import cpu_config_path, to_dict
from ..models import build_config


def say(text: str) -> None:
    """A line the user should see among the logs and progress bars."""
    tqdm.write(f"mart-pretrain: {text}", file=sys.stderr)


def cpu_hint(job, model_cfg, run) -> None:
    """On a CPU, point at the CPU-sized settings when the paper's (GPU-sized) configuration of ``job.model``
    is being trained."""
    if to_dict(build_config(job.model, {})) == to_dict(model_cfg):
        say(f"no CUDA device: training the paper's {job.model} configuration (batch {run.batch_size}, "
            f"{model_cfg.clip_samples / model_cfg.frontend.sample_rate:.1f} s crops) on the CPU: tens of seconds "
            "to minutes per step. For CPU-sized settings add --config cpu "
            f"({cpu_config_path(job.model)}).")


def step_time_hint(seconds: float, steps: int, left: int) -> None:
    """After the first steps: the measured time per step and the time the steps left will take."""
    per_step = seconds / max(steps, 1)
    total = per_step * left
    say(f"about {per_step:.2f} s per step: the {left} steps left take about "
        f"{int(total // 3600)} h {int(total % 3600 // 60):02d} min")
