"""Checkpoints: atomic writes, ``weights_only`` loading, and the frozen-encoder loader.

A checkpoint is a dict of plain data and tensors, so ``torch.load(path, weights_only=True)`` reads it:
``format_version``, ``model_name``, ``config`` (the model config as a dict), ``model`` (state dict),
``optimizer`` (state dict or None), ``step``, ``pretrain`` (the run's settings as a dict) and, from
format 3, ``sha256``: a hash of everything else, checked on every read, so that a damaged file is refused
instead of loading silently.

Reading checks, before any model is built: the structure, the hash, that every weight is finite, and
that the stored config describes exactly the tensors in the file (the model is first built on the
``meta`` device, which allocates nothing), so a small crafted file cannot make the loader allocate
what its config asks for.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .config import ConfigError, to_dict
from .errors import CheckpointError  # noqa: F401  (re-exported)
from .fileio import atomic_path
from .frozen import make_fast
from .models import all_names, build_config, build_model, get_entry
from .models.base import SSLModel

FORMAT_VERSION = 3
_REQUIRED = {"model_name": str, "config": dict, "model": dict, "step": int}
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


def default_checkpoint(name: str) -> str:
    """The checkpoint a model name stands for when none is given: a pretraining model's packaged one
    (it may be absent from a build without them), a reference model's published weights (converted at
    first use: ``CheckpointError`` when their source is not installed)."""
    published = get_entry(name).model_cls.published_checkpoint()
    return published if published is not None else packaged_checkpoint(name)


def save_checkpoint(path: str, model: SSLModel, model_name: str, step: int,
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """Write atomically: a temp file in the same folder, fsync, then rename over ``path``.

    A run killed at any moment leaves either the previous complete checkpoint or the new one.
    """
    write_state(path, {
        "model_name": model_name,
        "config": to_dict(model.config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "pretrain": dict(extra or {}),
    })


def is_run_state(state: Dict[str, Any]) -> bool:
    """A run's state that training can continue (``--resume``, a device window): its optimizer state and
    its settings are there, not only weights."""
    return bool(state.get("optimizer")) and "settings" in (state.get("pretrain") or {})


def write_state(path: str, state: Dict[str, Any]) -> None:
    """Write a checkpoint dict atomically in the current format, with its content hash."""
    state = {k: v for k, v in state.items() if k != "sha256"}
    state["format_version"] = FORMAT_VERSION
    state["sha256"] = content_hash(state)
    with atomic_path(path, suffix=".ckpt", fsync=True) as tmp:
        torch.save(state, tmp)


def compact(state: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint dict without optimizer state, its float32 weights as float16 (the packaged checkpoints'
    form: ``load_pretrained`` casts them back). Float64 buffers (the input Standardiser's running count,
    mean and variance) stay as they are: a count of billions of values is beyond float16."""
    out = dict(state, optimizer=None, pretrain=dict(state.get("pretrain") or {}))
    out["model"] = {k: v.half() if v.dtype == torch.float32 else v for k, v in state["model"].items()}
    return out


def content_hash(state: Dict[str, Any]) -> str:
    """SHA-256 of a checkpoint dict without its ``sha256`` entry: keys, plain values, and every
    tensor's dtype, shape and bytes, in a fixed order."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            h.update(b"{")
            for k in sorted(value, key=repr):
                h.update(repr(k).encode())
                feed(value[k])
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for v in value:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(value, default=repr).encode())

    feed({k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


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
    version = state["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}; this version reads <= {FORMAT_VERSION}")
    if version >= 3 or "sha256" in state:
        if state.get("sha256") != content_hash(state):
            raise CheckpointError(f"{path} is damaged: its contents do not match the sha256 stored in it "
                                  "(a partial copy or flipped bits); use another copy")
    _check_structure(path, state)
    state = _upgrade(path, state)
    _check_weights(path, state)
    return state


def _check_structure(path: str, state: Dict[str, Any]) -> None:
    for key, kind in _REQUIRED.items():
        if key not in state:
            raise CheckpointError(f"{path}: not a complete checkpoint, '{key}' is missing")
        value = state[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: '{key}' should be a {kind.__name__}, got {type(value).__name__}")
    if state["model_name"] not in all_names():
        raise CheckpointError(f"{path} holds an unknown model {state['model_name']!r}; "
                              f"this version knows {', '.join(all_names())}")
    if state["step"] < 0:
        raise CheckpointError(f"{path}: step {state['step']} is negative")
    for key, kind in (("optimizer", dict), ("pretrain", dict)):
        if state.get(key) is not None and not isinstance(state[key], kind):
            raise CheckpointError(f"{path}: '{key}' should be a {kind.__name__} or absent, "
                                  f"got {type(state[key]).__name__}")
    for name, tensor in state["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: weight {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight {name!r} holds NaN or infinite values; the run that wrote "
                                  "it diverged, or the file is damaged")


def _check_weights(path: str, state: Dict[str, Any]) -> None:
    """The stored config must build a model whose tensors are exactly the stored ones. The model is
    built on the ``meta`` device, so an absurd config costs nothing before it is refused."""
    name = state["model_name"]
    try:
        config = build_config(name, state["config"])
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(name, config).state_dict().items()}
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its {name} config is not valid: {e}") from None
    stored = {k: tuple(v.shape) for k, v in state["model"].items()}
    missing, unexpected = sorted(set(shapes) - set(stored)), sorted(set(stored) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(f"{path}: its weights do not fit its {name} config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, shape in shapes.items():
        if stored[k] != shape:
            raise CheckpointError(f"{path}: weight {k!r} has shape {list(stored[k])} but its config builds "
                                  f"{list(shape)}")


def _upgrade(path: str, state: Dict[str, Any]) -> Dict[str, Any]:
    """Format 1 -> 2: the model configs of older checkpoints keep the behaviour they were trained with
    (format 3 only adds the hash)."""
    if state["format_version"] < 2 and isinstance(state.get("config"), dict):
        config = dict(state["config"])
        for key, value in _V1_DEFAULTS.get(state.get("model_name"), {}).items():
            config.setdefault(key, value)
        try:
            config = get_entry(state["model_name"]).model_cls.upgrade_v1_config(config)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
        state = dict(state, config=config, format_version=2)
    return state


def _model_from_state(state: Dict[str, Any]) -> Tuple[SSLModel, Any]:
    """A checked checkpoint dict (``read_checkpoint``) -> (frozen model in eval mode on the CPU, its config)."""
    name = state["model_name"]
    config = build_config(name, state["config"])
    model = build_model(name, config)
    model.load_state_dict(state["model"])  # names and shapes already checked against the config
    model.model_name = name
    model.requires_grad_(False)
    return model.eval(), config


def load_pretrained(path: str, device: Union[str, torch.device] = "cpu") -> Tuple[SSLModel, Any]:
    """Checkpoint -> (frozen model in eval mode on ``device``, its config dataclass): the model as trained,
    for fine-tuning or inspection. To embed, use ``load_for_embedding``."""
    model, config = _model_from_state(read_checkpoint(path))
    return model.to(device), config


class MissingCheckpoint(CheckpointError):
    """The checkpoint file a model name or path stands for is not there."""

    def __init__(self, path: str):
        super().__init__(f"checkpoint not found: {path}")
        self.path = path


class WrongModel(CheckpointError):
    """A checkpoint holds another model than the one asked for (``found`` instead of ``wanted``)."""

    def __init__(self, path: str, found: str, wanted: str):
        super().__init__(f"{path} holds a {found} model, not {wanted}")
        self.path, self.found, self.wanted = path, found, wanted


def checkpoint_for(name: str, path: Optional[str] = None) -> str:
    """The checkpoint file ``name`` is loaded from: ``path`` (``~`` expanded) or, when none is given, the
    name's default checkpoint (``default_checkpoint``)."""
    return os.path.expanduser(str(path)) if path else default_checkpoint(name)


def load_for_embedding(name: str, path: Optional[str] = None,
                       device: Union[str, torch.device] = "cpu") -> SSLModel:
    """A model name and, optionally, a checkpoint file -> the model ready to embed: frozen, in eval mode,
    on ``device``, its encoder replaced in place by the fast inference one (``frozen.make_fast``).

    The one way from a name or path to a model that the HEAR and S3PRL adapters and ``mart-embed`` use.
    ``path`` empty or None: the name's packaged (or published) checkpoint. The file is read and checked
    (``read_checkpoint``: structure, hash, weights, and the config on the ``meta`` device), its model name
    compared with ``name``, and only then is the model built, once.

    Raises ``MissingCheckpoint`` (no such file), ``WrongModel`` (another model's checkpoint) or another
    ``CheckpointError`` (an unreadable or damaged file; a published model whose source is not installed).
    """
    path = checkpoint_for(name, path)
    if not os.path.isfile(path):
        raise MissingCheckpoint(path)
    state = read_checkpoint(path)
    if state["model_name"] != name:
        raise WrongModel(path, state["model_name"], name)
    model, _ = _model_from_state(state)
    return make_fast(model).to(device)
