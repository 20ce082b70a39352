"""Checkpoints: atomic writes, ``weights_only`` loading, and the frozen-encoder loader.

A checkpoint is a dict of plain data and tensors, so ``torch.load(path, weights_only=True)`` reads it:
``format_version``, ``model_name``, ``config`` (the model config as a dict), ``model`` (state dict),
``optimizer`` (state dict or None), ``step``, ``pretrain`` (the run's settings as a dict).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .config import to_dict
from .fileio import atomic_path
from .models import build_config, build_model
from .models.base import SSLModel

FORMAT_VERSION = 2
# Model-config values a format-1 checkpoint was trained with where format 2 changed the default.
_V1_DEFAULTS = {
    "mart": {"level_window": "paper", "hcl": "paper"},
    "pemr": {"neg_lambda": 1.0},
}
# Checkpoints installed with the package (from ``mart-bench run --export``; a model card <name>.md beside each)
PACKAGED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")


def packaged_checkpoint(name: str) -> str:
    """Path of the packaged ``name`` checkpoint (it may be absent from a build without them)."""
    return os.path.join(PACKAGED_DIR, f"{name}.ckpt")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or of another format."""


def save_checkpoint(path: str, model: SSLModel, model_name: str, step: int,
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """Write atomically: a temp file in the same folder, fsync, then rename over ``path``.

    A run killed at any moment leaves either the previous complete checkpoint or the new one.
    """
    state = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "config": to_dict(model.config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "pretrain": dict(extra or {}),
    }
    with atomic_path(path, suffix=".ckpt", fsync=True) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``, checking its format."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a mart_upstream checkpoint (no format_version)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format_version']}; this version reads <= {FORMAT_VERSION}"
        )
    return _upgrade(state)


def _upgrade(state: Dict[str, Any]) -> Dict[str, Any]:
    """Format 1 -> 2: the model configs of older checkpoints keep the behaviour they were trained with."""
    if state["format_version"] < 2 and isinstance(state.get("config"), dict):
        config = dict(state["config"])
        for key, value in _V1_DEFAULTS.get(state.get("model_name"), {}).items():
            config.setdefault(key, value)
        if state.get("model_name") == "pemr" and not isinstance(config.get("mask_fill", "zero"), str):
            if float(config["mask_fill"]) != 0.0:
                raise CheckpointError(f"pemr checkpoint with mask_fill={config['mask_fill']} cannot be upgraded")
            config["mask_fill"] = "zero"
        state = dict(state, config=config, format_version=2)
    return state


def load_pretrained(path: str, device: Union[str, torch.device] = "cpu") -> Tuple[SSLModel, Any]:
    """Checkpoint -> (frozen model in eval mode on ``device``, its config dataclass).

    This is the one embedding path: the S3PRL and HEAR adapters call it and then use the model's
    ``frame_maps`` / ``clip_embedding`` (see ``mart_upstream.embedding``).
    """
    state = read_checkpoint(path)
    name = state["model_name"]
    config = build_config(name, state["config"])
    model = build_model(name, config)
    model.load_state_dict(state["model"])
    model.model_name = name
    model.requires_grad_(False)
    return model.eval().to(device), config
