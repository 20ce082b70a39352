"""Upstream entry points, added to ``s3prl.hub`` by the launcher: ``-u NAME [-k CKPT]``.

``mart``, ``pemr``, ``simclr``: the pretrained models by name; without ``-k`` they load the checkpoint
installed with the package (``mart_upstream/checkpoints/<name>.ckpt``, model card beside it), with
``-k CKPT`` a checkpoint written by ``mart-pretrain``. Never random weights: a missing file is an error.
``musicnn``: MusiCNN's published MagnaTagATune weights, converted from the installed ``musicnn`` package at
first use (``mart_upstream.musicnn_weights``).
``mart_local``, ``pemr_local``, ``simclr_local``: s3prl's convention for a local checkpoint, ``-k CKPT``.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, Optional

from ...checkpoint import CheckpointError, WrongModel, checkpoint_for, load_for_embedding
from . import UPSTREAM_MODELS, PluginError
from .expert import UpstreamExpert


def checkpoint_path(entry: str, ckpt: Optional[str]) -> str:
    """The checkpoint file an entry point will load; one-line errors when it is not given or absent."""
    model_name = entry[: -len("_local")] if entry.endswith("_local") else entry
    if not ckpt and entry == model_name:
        try:
            ckpt = checkpoint_for(model_name)
        except CheckpointError as e:
            raise PluginError(f"upstream {entry}: {e}") from None
        if not os.path.isfile(ckpt):
            raise PluginError(f"upstream {entry}: the packaged checkpoint {ckpt} is missing from this install; "
                              f"pass one written by mart-pretrain with -k CKPT")
    if not ckpt:
        raise PluginError(f"upstream {entry} needs a checkpoint: pass one written by mart-pretrain with -k CKPT "
                          f"(or -u {model_name} for the packaged one)")
    path = os.path.expanduser(str(ckpt))
    if not os.path.isfile(path):
        raise PluginError(f"upstream {entry}: checkpoint not found: {ckpt}")
    return path


def load_upstream(model_name: str, ckpt: Optional[str], entry: str) -> UpstreamExpert:
    """A ``model_name`` checkpoint at ``ckpt`` -> frozen UpstreamExpert on the CPU (s3prl moves it)."""
    ckpt = checkpoint_path(entry, ckpt)
    print(f"[{entry}] - loading {ckpt}", file=sys.stderr)  # in the style of s3prl's own progress lines
    try:
        model = load_for_embedding(model_name, ckpt, device="cpu")
    except WrongModel as e:
        raise PluginError(f"upstream {entry}: {ckpt} holds a {e.found} model, not {model_name}; "
                          f"use -u {e.found}_local") from None
    except CheckpointError as e:
        raise PluginError(f"upstream {entry}: {e}") from None
    return UpstreamExpert(model, entry)


def _entry(model_name: str, local: bool) -> Callable[..., UpstreamExpert]:
    entry = f"{model_name}_local" if local else model_name

    def upstream(ckpt: Optional[str] = None, *args, **kwargs) -> UpstreamExpert:
        return load_upstream(model_name, ckpt, entry)

    upstream.__name__ = upstream.__qualname__ = entry
    upstream.__doc__ = (f"{model_name} frame features from a local checkpoint, -k CKPT" if local else
                        f"{model_name} frame features from the packaged checkpoint, or -k CKPT")
    return upstream


ENTRY_POINTS: Dict[str, Callable[..., UpstreamExpert]] = {
    f"{name}{suffix}": _entry(name, bool(suffix))
    for name in UPSTREAM_MODELS
    for suffix in ("", "_local")
}
