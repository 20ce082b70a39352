"""MusiCNN's published weights in this project's checkpoint format, converted at first use and cached.

The weights come from the installed ``musicnn`` package (``pip install --no-deps musicnn==0.1.0``; its
TensorFlow 1 checkpoints ``musicnn/<variant>/``), read with ``tfbundle`` (no TensorFlow needed), mapped
onto ``models.musicnn.Musicnn`` and written as an ordinary checkpoint (content hash included) to
``$MART_UPSTREAM_CACHE/musicnn/`` (default ``$XDG_CACHE_HOME/mart_upstream``, else
``~/.cache/mart_upstream``). Nothing is downloaded. The file name holds a hash of the package's
checkpoint files and of this converter's version, so a changed package is converted again.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

from .checkpoint import CheckpointError, read_checkpoint, write_state
from .config import to_dict
from .models.musicnn import VARIANTS, MusicnnConfig, Musicnn
from .tfbundle import read_bundle, source_files

INSTALL = "pip install --no-deps musicnn==0.1.0"
CONVERTER_VERSION = 1  # part of the cache key: bump when the mapping below changes
CACHE_ENV = "MART_UPSTREAM_CACHE"
# TensorFlow variable scopes in the order models.build_musicnn creates them -> our module names
BATCH_NORMS = ["input_bn", "timbral.0.bn", "timbral.1.bn", "temporal.0.bn", "temporal.1.bn", "temporal.2.bn",
               "midend.0.bn", "midend.1.bn", "midend.2.bn", "pool_bn", "dense_bn"]
CONVS = ["timbral.0.conv", "timbral.1.conv", "temporal.0.conv", "temporal.1.conv", "temporal.2.conv",
         "midend.0.conv", "midend.1.conv", "midend.2.conv"]
DENSES = ["dense", "classifier"]
LABELS = {"MTT_musicnn": "MTT_LABELS", "MSD_musicnn": "MSD_LABELS"}  # in musicnn/configuration.py


def cache_dir() -> str:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mart_upstream")
    return os.path.join(root, "musicnn")


def package_dir() -> str:
    """The installed ``musicnn`` package's folder (without importing it: its modules import TensorFlow)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"musicnn's weights come from the musicnn package, which is not installed: {INSTALL}")
    return list(spec.submodule_search_locations)[0]


def source_prefix(variant: str) -> str:
    """The TensorFlow checkpoint prefix of ``variant`` in the package (saved with an empty file prefix)."""
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown musicnn variant {variant!r}; available: {', '.join(VARIANTS)}")
    prefix = os.path.join(package_dir(), variant) + os.sep
    if not os.path.isfile(prefix + ".index"):
        raise CheckpointError(f"the musicnn package has no {variant} checkpoint ({prefix}.index is missing); "
                              f"reinstall it: {INSTALL} --force-reinstall")
    return prefix


def source_hash(variant: str) -> str:
    """SHA-256 of the converter version and of the variant's checkpoint files (names and bytes)."""
    prefix = source_prefix(variant)
    h = hashlib.sha256(f"musicnn-converter-{CONVERTER_VERSION}:{variant}".encode())
    for path in source_files(prefix):
        h.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e.strerror or e}; reinstall musicnn: {INSTALL}") from None
    return h.hexdigest()


def labels(variant: str) -> List[str]:
    """The 50 tag names of ``variant``, read from the package's configuration.py (not imported)."""
    path = os.path.join(package_dir(), "configuration.py")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError) as e:
        raise CheckpointError(f"cannot read musicnn's tag names from {path}: {e}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == LABELS[variant] for t in node.targets):
            return [str(x) for x in ast.literal_eval(node.value)]
    raise CheckpointError(f"{path} does not define {LABELS[variant]}")


def convert(variant: str) -> Dict[str, torch.Tensor]:
    """The variant's TensorFlow variables as a ``Musicnn`` state dict."""
    prefix = source_prefix(variant)
    tf = read_bundle(prefix, keep=lambda n: "/Adam" not in n and not n.endswith("_power"))

    def take(name: str) -> torch.Tensor:
        if name not in tf:
            raise CheckpointError(f"{prefix}.index has no variable {name!r}: not a musicnn checkpoint of this layout")
        return torch.from_numpy(np.ascontiguousarray(tf.pop(name), dtype=np.float32))

    state: Dict[str, torch.Tensor] = {}
    for i, ours in enumerate(BATCH_NORMS):
        scope = "batch_normalization" + (f"_{i}" if i else "")
        for tf_name, name in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                              ("moving_variance", "running_var")):
            state[f"{ours}.{name}"] = take(f"{scope}/{tf_name}")
        state[f"{ours}.num_batches_tracked"] = torch.tensor(0)
    for i, ours in enumerate(CONVS):
        scope = "conv2d" + (f"_{i}" if i else "")
        kernel = take(f"{scope}/kernel")  # [time, freq, in, out]
        # 2-D convolutions -> [out, in, time, freq]; the mid-end's span every channel: Conv1d [out, channels, time]
        state[f"{ours}.weight"] = (kernel[:, :, 0, :].permute(2, 1, 0) if ours.startswith("midend")
                                   else kernel.permute(3, 2, 0, 1)).contiguous()
        state[f"{ours}.bias"] = take(f"{scope}/bias")
    for i, ours in enumerate(DENSES):
        scope = "dense" + (f"_{i}" if i else "")
        state[f"{ours}.weight"] = take(f"{scope}/kernel").t().contiguous()  # [in, out] -> [out, in]
        state[f"{ours}.bias"] = take(f"{scope}/bias")
    if tf:
        raise CheckpointError(f"{prefix}.index holds variables this port does not know: {sorted(tf)[:5]}")
    return state


def musicnn_checkpoint(variant: str = "MTT_musicnn") -> str:
    """Path of ``variant``'s converted checkpoint, converting it first if the cache has no intact copy."""
    digest = source_hash(variant)
    path = os.path.join(cache_dir(), f"{variant}-{digest[:16]}.ckpt")
    if os.path.isfile(path):
        try:
            read_checkpoint(path)
            return path
        except CheckpointError:
            pass  # damaged: written again below
    config = MusicnnConfig(variant=variant)
    state = convert(variant)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Musicnn(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        bad = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
        raise CheckpointError(f"musicnn {variant}: the package's weights do not fit this port: {bad[:3]}")
    try:
        write_state(path, {"model_name": "musicnn", "config": to_dict(config), "model": state, "optimizer": None,
                           "step": 0, "pretrain": {"source": f"musicnn 0.1.0 package, {variant} (ISC licence)",
                                                   "source_sha256": digest, "labels": labels(variant)}})
    except OSError as e:
        raise CheckpointError(f"cannot write the converted musicnn weights to {path}: {e.strerror or e} "
                              f"(set {CACHE_ENV} to a writable folder)") from None
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m mart_upstream.musicnn_weights [VARIANT ...]``: convert (if needed) and print the paths."""
    variants = list(argv if argv is not None else sys.argv[1:]) or [VARIANTS[0]]
    try:
        for v in variants:
            print(musicnn_checkpoint(v))
    except CheckpointError as e:
        print(f"musicnn_weights: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
