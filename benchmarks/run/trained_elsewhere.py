"""Checkpoints trained elsewhere as benchmark runs: ``mart-bench run --checkpoints DIR``.

``DIR/<anything>.ckpt`` (e.g. a GPU run unpacked by ``mart-bench device-unpack``), at most one per
model, the model read from each checkpoint. Each becomes a run dict like ``pretraining.pretrain``
returns (model, seed, checkpoint, steps, train_minutes, batch_size, budget, commit, wall_s), plus
where and how it was trained, taken from the checkpoint's ``pretrain`` dict and, when present,
``DIR/device_run.json``, so the report and ``--export`` treat it like a run of the benchmark. Its
random-init reference is the same model built with the checkpoint's own config under its own seed
(what ``mart-pretrain`` starts from), saved at step 0.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Dict, List

from mart_upstream.checkpoint import read_checkpoint
from mart_upstream.config import to_dict
from mart_upstream.models import build_config

from . import pretraining
from mart_upstream.errors import UsageError
from .pretraining import MODELS, Budget


def _device_run(folder: str) -> Dict:
    path = os.path.join(folder, "device_run.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _commit(trained: Dict, fallback: str) -> str:
    c = trained.get("commit")
    if c and c != "unknown":
        return c
    if trained.get("kit_commit") and trained["kit_commit"] != "unknown":
        return f"{trained['kit_commit']} (when the kit was packed)"
    return fallback


def run_from_checkpoint(path: str, device_run: Dict, commit: str = "unknown") -> Dict:
    """One checkpoint -> a benchmark run dict, with ``device``, ``gpu``, ``throughput`` and ``train_data``."""
    state = read_checkpoint(path)
    name = state["model_name"]
    if name not in MODELS:
        raise UsageError(f"{path} holds a {name!r} model; the benchmark evaluates {', '.join(MODELS)}")
    pre = state.get("pretrain") or {}
    settings = (pre.get("settings") or {}).get("run") or {}
    trained = dict(pre.get("device_run") or {})
    measured = (device_run.get("models") or {}).get(name) or {}
    env = device_run.get("environment") or {}
    for k in ("clips_per_s", "step_time_s", "peak_mem_gb"):
        if trained.get(k) is None:
            trained[k] = measured.get(k)
    trained.setdefault("gpu", env.get("gpu"))
    trained.setdefault("device", (device_run.get("settings") or {}).get("device") or settings.get("device"))
    if trained.get("models_together") is None and device_run.get("settings"):
        s = device_run["settings"]
        trained["models_together"] = 1 if s.get("sequential") else len(s.get("models", [])) or 1
    train_s = float(pre.get("train_seconds", 0.0))
    minutes = settings.get("max_minutes")
    data = trained.get("kit")
    if data and trained.get("kit_codec"):
        data += f", as 16 kHz mono {trained['kit_codec']}"
    return {
        "model": name, "seed": int(settings.get("seed", 0)), "checkpoint": os.path.abspath(path),
        "steps": int(state["step"]), "train_minutes": round(train_s / 60, 3),
        "batch_size": int(settings.get("batch_size", 0)), "wall_s": measured.get("wall_s", round(train_s, 1)),
        "budget": Budget(float(minutes) if minutes else None, int(settings.get("steps", state["step"])),
                         int(settings.get("batch_size", 0)) or None).describe([name]),
        "commit": _commit(trained, commit), "data": os.path.abspath(os.path.dirname(path)),
        "train_data": data or f"not recorded (checkpoint {os.path.abspath(path)})",
        "device": trained.get("device") or "unknown", "gpu": trained.get("gpu"),
        "trained_by": "`scripts/device_pretrain.sh`" if pre.get("device_run") or measured else "`mart-pretrain`",
        "config": (None if to_dict(build_config(name, {})) == state["config"]
                   else "model settings changed from the papers' defaults"),
        "selected_by": None,  # one checkpoint per model: nothing chosen
        "throughput": {k: trained.get(k) for k in ("clips_per_s", "step_time_s", "peak_mem_gb", "models_together")},
    }


def runs_from(folder: str, commit: str = "unknown") -> List[Dict]:
    """Every ``folder/*.ckpt`` as a run, in the benchmark's model order; one checkpoint per model."""
    if not os.path.isdir(folder):
        raise UsageError(f"--checkpoints: {folder} is not a folder")
    paths = sorted(glob.glob(os.path.join(folder, "*.ckpt")))
    if not paths:
        raise UsageError(f"--checkpoints: no .ckpt files in {folder}")
    device_run = _device_run(folder)
    runs: Dict[str, Dict] = {}
    for p in paths:
        r = run_from_checkpoint(p, device_run, commit)
        if r["model"] in runs:
            raise UsageError(f"--checkpoints: {runs[r['model']]['checkpoint']} and {p} both hold {r['model']}; "
                            "keep one checkpoint per model")
        runs[r["model"]] = r
    return [runs[m] for m in MODELS if m in runs]


def random_init(run: Dict, folder: str) -> str:
    """The run's model with random weights: ``build_model`` with the checkpoint's own config under
    ``torch.manual_seed(seed)``, saved at step 0 as ``folder/<model>-<config hash>.ckpt``."""
    state = read_checkpoint(run["checkpoint"])
    name, config = state["model_name"], state["config"]
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return pretraining.random_init(name, run["seed"], os.path.join(folder, f"{name}-{key}-seed{run['seed']}.ckpt"),
                                   config, config_of=run["checkpoint"])


def describe(runs: List[Dict]) -> str:
    """The table's budget line for checkpoints trained elsewhere."""
    parts = []
    for r in runs:
        where = r["gpu"] or r["device"]
        parts.append(f"{r['model']} {r['train_minutes']:.1f} min ({r['steps']} steps of batch {r['batch_size']}) "
                     f"on {where}")
    return "trained elsewhere: " + "; ".join(parts)
