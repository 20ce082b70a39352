"""The encoders under test, built with random weights, and their embedding calls.

Our models go through the one embedding path of ``mart_upstream.embedding``:
``frames`` = ``frame_features(model, wav)`` (every layer on one frame grid) and
``clip`` = ``clip_embeddings(model, wav)`` (one vector per clip). The SampleCNN reference gives one
vector per 59049-sample window (``frames``) and their mean (``clip``).

Each is measured as variants (``prepare``): ``plain`` (the eager model as built), ``fast``
(``mart_upstream.frozen.for_inference``, what the embedding tools load; SampleCNN: its BatchNorms
folded) and ``onnx`` (our models exported with ``mart_upstream.export`` and run by ONNX Runtime).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from mart_upstream.models import model_names, tiny_config

from .samplecnn import SampleCNN

SR = 16000
OUR_MODELS = tuple(model_names())
REFERENCE_MODELS = ("samplecnn",)
ALL_MODELS = OUR_MODELS + REFERENCE_MODELS
PATHS = ("frames", "clip")
# ``clip-kept``: ``clip`` as computed before its summaries streamed (a padded copy of the input, every
# window's vector kept until the summary), for the time-and-memory section's before/after
LENGTH_PATHS = PATHS + ("clip-kept",)
VARIANTS = ("plain", "fast", "onnx")

# ``--tiny``: the real architectures, narrowed and shortened, for smoke tests of the benchmark itself.
TINY_CONFIGS: Dict[str, dict] = {name: tiny_config(name) for name in OUR_MODELS}


def model_config(name: str, tiny: bool = False) -> Optional[dict]:
    """The model section to build ``name`` with: None (the paper defaults) or the tiny config."""
    return copy.deepcopy(TINY_CONFIGS[name]) if tiny and name in TINY_CONFIGS else None


def build(name: str, device: str = "cpu", tiny: bool = False, config: Optional[dict] = None,
          seed: int = 0) -> nn.Module:
    """A model in eval mode with seeded random weights (speed does not depend on the weights)."""
    torch.manual_seed(seed)
    if name == "samplecnn":
        model = SampleCNN()
    elif name in OUR_MODELS:
        from mart_upstream.models import build_model

        model = build_model(name, config if config is not None else model_config(name, tiny))
    else:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    return model.to(device).eval()


def variants_of(name: str, wanted) -> List[str]:
    """The variants of ``wanted`` that apply to model ``name`` (SampleCNN is not exported)."""
    return [v for v in VARIANTS if v in wanted and not (v == "onnx" and name not in OUR_MODELS)]


def prepare(model: nn.Module, variant: str, workdir: Optional[str] = None):
    """The object the embedding calls of ``variant`` run on; ``onnx`` exports into ``workdir``."""
    if variant == "plain":
        return model
    if variant == "fast":
        from mart_upstream.frozen import fold_batchnorms, for_inference

        return fold_batchnorms(model) if isinstance(model, SampleCNN) else for_inference(model)
    if variant == "onnx":
        from mart_upstream.export import export_onnx, load_onnx

        if workdir is None:
            raise ValueError("the onnx variant needs a folder to export into")
        export_onnx(model, workdir)
        return load_onnx(workdir)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def embed_call(model: nn.Module, path: str) -> Callable[[torch.Tensor], object]:
    """[B, T] waveform -> the embedding call of ``path`` ("frames" or "clip")."""
    if path not in LENGTH_PATHS or (path == "clip-kept" and isinstance(model, SampleCNN)):
        raise ValueError(f"path must be one of {PATHS} (our models also {LENGTH_PATHS[len(PATHS):]}), got {path!r}")
    if isinstance(model, SampleCNN):
        return model.window_embeddings if path == "frames" else model.clip_embeddings
    from mart_upstream.embedding import clip_embeddings, frame_features

    if path == "frames":
        return lambda wav: frame_features(model, wav)
    if path == "clip-kept":
        return lambda wav: kept_clip_embeddings(model, wav)
    return lambda wav: clip_embeddings(model, wav)


@torch.no_grad()
def kept_clip_embeddings(model: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """``clip_embeddings`` with the model's summary as it was computed before the summaries streamed: the
    input padded to whole windows (a copy), every window's vector kept, then summarised at once."""
    from mart_upstream.embedding import SAMPLES_PER_PASS, _device, clip_embeddings, windows
    from mart_upstream.models.base import mean_std

    if hasattr(model, "sequence_embedding"):  # a whole-clip model: its path did not change
        return clip_embeddings(model, wav)
    w = windows(wav, model.clip_samples)
    b, n, L = w.shape
    per_pass, flat, dev = max(1, SAMPLES_PER_PASS // L), w.reshape(b * n, L), _device(model)
    with torch.inference_mode():
        outs = [model.window_embedding(flat[i : i + per_pass].to(dev)) for i in range(0, b * n, per_pass)]
        per_window = torch.cat(outs).view(b, n, -1)
        if getattr(model, "window_summary", "mean") == "mean_std":
            return mean_std(per_window, dim=1)
        return per_window.mean(dim=1)


def window_samples(model: nn.Module, path: str) -> int:
    """The unit of work of a path: audio of this many samples is computed at once (inputs are
    padded up to whole units), so FLOPs per audio second are measured on it."""
    if isinstance(model, SampleCNN):
        return model.window
    return model.feature_chunk if path == "frames" else model.clip_samples  # clip, clip-kept


def computed_samples(model: nn.Module, path: str, n: int) -> int:
    """Samples one row of ``n`` samples is processed as, after padding to whole windows or
    chunks and adding the chunks' context (frames)."""
    if isinstance(model, SampleCNN) or path.startswith("clip"):
        size = window_samples(model, path)
        return max(1, -(-n // size)) * size
    from mart_upstream.embedding import feature_chunks

    _, chunks = feature_chunks(model, n)
    return sum(length + 2 * model.feature_context for _, length in chunks)


def nbytes(out) -> int:
    """Bytes held by the tensors of an embedding call's result."""
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (list, tuple)):
        return sum(nbytes(x) for x in out)
    return 0


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def inference_parameters(model: nn.Module) -> int:
    """Parameters the embedding calls use: the encoder (and MART's part-whole transformer), not the
    projection head, PEMR's predicting module or SampleCNN's tag layer."""
    if isinstance(model, SampleCNN):
        return num_parameters(model.blocks)
    n = num_parameters(model.encoder) + num_parameters(model.frontend)
    if hasattr(model, "pwt"):
        n += num_parameters(model.pwt)
    return n
