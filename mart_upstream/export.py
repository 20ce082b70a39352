"""``mart-export``: a pretrained model's frozen embedding functions as ONNX files, and ``load_onnx`` to run
them with ONNX Runtime through the same embedding path (``mart_upstream.embedding``).

    mart-export --format onnx CKPT|NAME OUT

writes into the folder ``OUT``:

* ``clip.onnx``: the window function of ``clip_embeddings``: ``wav`` float32 [N, clip_samples] ->
  ``embedding`` [N, D] (MART: the whole clip's part-whole output; FCN-4 models: the pooled encoder output);
* ``frames.onnx``: the chunk function of ``frame_features``: ``wav`` float32 [N, feature_chunk +
  2 * feature_context] -> ``layer0`` ... ``layerK``, each [N, frames, D];
* ``export.json``: what the functions need around them (sample rate, window, chunk and context lengths,
  frame hop, embedding size, layer count), the model's config and the checkpoint's SHA-256.

The folder is built beside ``OUT`` and swapped in whole, so ``OUT`` never holds the files of two exports
(a kill leaves the old folder, and the next export removes the half-built one); an ``OUT`` holding other
files is refused. ``export.json`` records the opset the files were written with, checked after writing.

N (windows or chunks per call) is free; the lengths are fixed. Everything else — cutting audio into
windows and chunks, padding, trimming the context, averaging windows — is ``mart_upstream.embedding``'s
and works unchanged on ``load_onnx(OUT)``. The log-mel frontend is part of both graphs (ONNX STFT).
Exporting needs ``onnx`` and ``onnxscript``, running ``onnxruntime`` (``pip install -e .[onnx]``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional

import torch
from torch import nn

from .errors import UsageError, command
from .fileio import owned_staging_dir, remove_dead_staging, replace_dir, sha256_file, write_json

FORMATS = ("onnx",)
OPSET = 18  # the lowest opset of torch's ONNX exporter with the STFT and every op the models use
EXPORT_BATCH = 2  # windows in the example input (1 would let the exporter fix the batch size)
MANIFEST = "export.json"
FILES = ("clip.onnx", "frames.onnx", MANIFEST)
PROG = "mart-export"


class ClipFunction(nn.Module):
    """``clip_embeddings``' window function: [N, clip_samples] -> [N, D]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.window_embedding(wav)


class FrameFunction(nn.Module):
    """``frame_features``' chunk function: [N, feature_chunk + 2 * feature_context] -> layers [N, frames, D]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, wav: torch.Tensor):
        return tuple(self.model.window_features(wav))


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"ONNX needs {', '.join(missing)}: pip install -e '.[onnx]' "
                         "(or pip install onnx onnxscript onnxruntime)")


def _export(fn: nn.Module, example: torch.Tensor, path: str, outputs: List[str], opset: int) -> None:
    import logging
    import warnings

    # the exporter's notes on optional packages it does not need (torchvision) and on deprecations
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(fn.eval(), (example,), path, input_names=["wav"], output_names=outputs,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes={"wav": {0: torch.export.Dim("windows")}})
    finally:
        registry.setLevel(level)


def _staging_prefix(out: str) -> str:
    return f".tmp-{os.path.basename(os.path.abspath(out))}-"


def prepare_out(out: str) -> str:
    """Check that ``OUT`` can take an export and make its parent; -> the parent. UsageError in one line:
    ``OUT`` a file, under a file, holding other files, or in a folder that cannot be written."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"{out} exists and is not a folder")
    if os.path.isdir(out):
        other = sorted(n for n in os.listdir(out) if n not in FILES)
        if other:
            raise UsageError(f"{out} holds other files than an export ({', '.join(other[:3])}); give a new or "
                             "empty folder, or an earlier export's")
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        remove_dead_staging(parent, _staging_prefix(out))
        with tempfile.TemporaryFile(dir=parent):
            pass
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{out}: a folder above it is a file") from None
    except OSError as e:
        raise UsageError(f"{out} cannot be written in {parent} ({e.strerror or e})") from None
    return parent


def onnx_opset(path: str) -> int:
    """The default-domain opset an ONNX file was written with."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=-1)


def export_onnx(model: nn.Module, out: str, opset: int = OPSET, checkpoint: Optional[str] = None) -> Dict:
    """Write ``clip.onnx``, ``frames.onnx`` and ``export.json`` of a model in eval mode into ``out``, built
    in a staging folder beside it and swapped in whole; returns the manifest."""
    _require("onnx", "onnxscript")
    parent = prepare_out(out)
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    chunk = model.feature_chunk + 2 * model.feature_context
    with torch.no_grad():
        n_layers = len(model.window_features(torch.zeros(1, chunk)))
    layers = [f"layer{i}" for i in range(n_layers)]
    try:
        tmp = owned_staging_dir(parent, _staging_prefix(out))
    except OSError as e:
        raise UsageError(f"{out} cannot be written in {parent} ({e.strerror or e})") from None
    try:
        _export(ClipFunction(model), 0.1 * torch.randn(EXPORT_BATCH, model.clip_samples, generator=gen),
                os.path.join(tmp, "clip.onnx"), ["embedding"], opset)
        _export(FrameFunction(model), 0.1 * torch.randn(EXPORT_BATCH, chunk, generator=gen),
                os.path.join(tmp, "frames.onnx"), layers, opset)
        written = {onnx_opset(os.path.join(tmp, n)) for n in ("clip.onnx", "frames.onnx")}
        if written != {opset}:
            raise UsageError(f"--opset {opset}: torch {torch.__version__}'s exporter wrote opset "
                             f"{', '.join(map(str, sorted(written)))}; nothing was written to {out}")
        from .config import to_dict

        manifest = {
            "format": "onnx",
            "opset": opset,
            "model": getattr(model, "model_name", type(model).__name__.lower()),
            "config": to_dict(model.config),
            "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
            "sample_rate": int(model.frontend.cfg.sample_rate),
            "clip_samples": int(model.clip_samples),
            "frame_hop": int(model.frame_hop),
            "feature_chunk": int(model.feature_chunk),
            "feature_context": int(model.feature_context),
            "embedding_dim": int(model.embedding_dim),
            "layers": n_layers,
            "window_summary": model.window_summary,
            "files": {"clip": "clip.onnx", "frames": "frames.onnx"},
            "torch": torch.__version__,
        }
        write_json(os.path.join(tmp, MANIFEST), manifest)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


class OnnxModel:
    """An exported model run by ONNX Runtime, with the attributes and the two functions that
    ``clip_embeddings`` and ``frame_features`` use, so they work on it as on the PyTorch model."""

    def __init__(self, folder: str, threads: Optional[int] = None):
        _require("onnxruntime")
        import onnxruntime as ort

        path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(path):
            raise UsageError(f"{folder} is not a mart-export folder (no {MANIFEST})")
        with open(path, encoding="utf-8") as f:
            self.manifest = m = json.load(f)
        self.model_name = m["model"]
        self.sample_rate, self.clip_samples, self.frame_hop = m["sample_rate"], m["clip_samples"], m["frame_hop"]
        self.feature_chunk, self.feature_context = m["feature_chunk"], m["feature_context"]
        self.embedding_dim = m["embedding_dim"]
        self.window_summary = m.get("window_summary", "mean")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        self.sessions = {k: ort.InferenceSession(os.path.join(folder, name), options,
                                                 providers=["CPUExecutionProvider"])
                         for k, name in m["files"].items()}

    def parameters(self):
        return iter(())  # the embedding path then keeps the audio on the CPU

    def _run(self, key: str, wav: torch.Tensor) -> List[torch.Tensor]:
        x = wav.detach().to("cpu", torch.float32).contiguous().numpy()
        return [torch.from_numpy(y) for y in self.sessions[key].run(None, {"wav": x})]

    def window_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        return self._run("clip", wav)[0]

    def window_features(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """A chunk shorter than the exported length (the last one) is zero padded to it; the frames past
        its end are computed on zeros and never read."""
        size = self.feature_chunk + 2 * self.feature_context
        if wav.shape[1] < size:
            wav = torch.nn.functional.pad(wav, (0, size - wav.shape[1]))
        return self._run("frames", wav)


def load_onnx(folder: str, threads: Optional[int] = None) -> OnnxModel:
    """A ``mart-export --format onnx`` folder -> an ``OnnxModel`` for ``mart_upstream.embedding``."""
    return OnnxModel(folder, threads)


def max_difference(model: nn.Module, exported: OnnxModel, seconds: float = 5.0, seed: int = 0) -> Dict[str, float]:
    """Largest difference between the model's and the export's clip embeddings and frame features on
    random audio, relative to the largest value."""
    from .embedding import clip_embeddings, frame_features

    n = int(seconds * exported.sample_rate)
    wav = 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(seed))
    out = {}
    for key, fn in (("clip", clip_embeddings), ("frames", frame_features)):
        a, b = fn(model, wav), fn(exported, wav)
        a, b = (a, b) if key == "frames" else ([a], [b])
        out[key] = max(float((x - y).abs().max()) / max(float(x.abs().max()), 1e-6) for x, y in zip(a, b))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Export a pretrained model's frozen embedding functions "
                                "(clip window, frame-feature chunk) for ONNX Runtime.")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint from mart-pretrain, or a model name "
                   "(mart, pemr, simclr) for its packaged checkpoint")
    p.add_argument("out", metavar="OUT", help="output folder (clip.onnx, frames.onnx, export.json)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing ONNX Runtime's output with the PyTorch model's on random audio")
    return p


@command(PROG)
def main(argv: Optional[List[str]] = None) -> int:
    from .checkpoint import load_pretrained, packaged_checkpoint
    from .models import model_names

    args = build_parser().parse_args(argv)
    path = args.checkpoint
    if not os.path.exists(path) and path in model_names():
        path = packaged_checkpoint(path)
    if args.opset < OPSET:
        raise UsageError(f"--opset {args.opset}: the models need opset >= {OPSET} (ONNX STFT, reflect padding)")
    _require("onnx", "onnxscript")
    import onnx

    if args.opset > onnx.defs.onnx_opset_version():
        raise UsageError(f"--opset {args.opset}: onnx {onnx.__version__} knows opsets up to "
                         f"{onnx.defs.onnx_opset_version()}")
    prepare_out(args.out)
    model, _ = load_pretrained(path)
    export_onnx(model, args.out, args.opset, checkpoint=path)
    print(f"{PROG}: wrote {os.path.join(args.out, 'clip.onnx')}, frames.onnx and {MANIFEST}", file=sys.stderr)
    if not args.no_check:
        _require("onnxruntime")
        diff = max_difference(model, load_onnx(args.out))
        print(f"{PROG}: ONNX Runtime vs PyTorch on random audio: max abs difference / max value "
              f"{diff['clip']:.1e} (clip embeddings), {diff['frames']:.1e} (frame features)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
