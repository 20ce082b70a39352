"""Track embeddings from any HEAR module or S3PRL upstream, cached on disk by model and file.

* ``HearSource``: ``hear_api.mart`` / ``hear_api.pemr`` / ``hearbaseline`` / any HEAR 2021 module:
  ``pooling="scene"`` -> ``get_scene_embeddings``; ``"timestamp"`` -> the mean of
  ``get_timestamp_embeddings`` over time.
* ``S3prlSource``: any upstream the ``s3prl`` launcher knows (ours registered, e.g. ``mart``,
  ``fbank``): the mean over time of one hidden state (default the last).
* ``CatalogueSource``: what ``mart-embed`` wrote (catalogue scale, sharded, resumable, ``torchrun``):
  read, not computed.

Cache: ``CACHE/<source key>/<file key>.npy``; the source key hashes the module/upstream, the model
file (path, size, mtime), the pooling and the crop; the file key hashes the audio path, size, mtime.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from mart_upstream.audio import load_audio
from mart_upstream.errors import AudioError, CheckpointError, UsageError
from mart_upstream.fileio import atomic_path
from mart_upstream.tasks.covers import Track

from .cache import digest, file_identity

log = logging.getLogger(__name__)


class HearSource:
    def __init__(self, module: str, model_path: str = "", pooling: str = "scene", device: str = "cpu"):
        if pooling not in ("scene", "timestamp"):
            raise UsageError(f"pooling must be 'scene' or 'timestamp', got {pooling!r}")
        try:
            self.module = importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise UsageError(f"HEAR module {module!r} cannot be imported: {e}") from None
        if model_path and not os.path.isfile(model_path):
            raise CheckpointError(f"model file {model_path} does not exist")
        self.model = self.module.load_model(model_path) if model_path else self.module.load_model()
        self.model = self.model.to(device).eval() if hasattr(self.model, "to") else self.model
        self.sample_rate = int(self.model.sample_rate)
        self.pooling = pooling
        model_id = file_identity(model_path) if model_path else "default"
        self.name = module
        self.key = digest("hear", module, model_id, pooling, self.sample_rate)

    @torch.no_grad()
    def __call__(self, wav: torch.Tensor) -> np.ndarray:
        audio = wav[None]
        if self.pooling == "scene":
            emb = self.module.get_scene_embeddings(audio, self.model)[0]
        else:
            emb = self.module.get_timestamp_embeddings(audio, self.model)[0][0].mean(dim=0)
        return emb.float().cpu().numpy()


class S3prlSource:
    sample_rate = 16000  # s3prl upstreams take 16 kHz

    def __init__(self, upstream: str, ckpt: str = "", layer: int = -1, device: str = "cpu"):
        from mart_upstream.adapters.s3prl import launcher

        launcher.register()
        launcher.check_upstream(upstream)
        from s3prl import hub

        if ckpt and not os.path.isfile(ckpt):
            raise CheckpointError(f"checkpoint {ckpt} does not exist")
        self.model = (getattr(hub, upstream)(ckpt) if ckpt else getattr(hub, upstream)()).to(device).eval()
        self.device, self.layer, self.name = device, layer, upstream
        self.key = digest("s3prl", upstream, file_identity(ckpt) if ckpt else "default", layer)

    @torch.no_grad()
    def __call__(self, wav: torch.Tensor) -> np.ndarray:
        hidden = self.model([wav.to(self.device)])["hidden_states"]
        if not -len(hidden) <= self.layer < len(hidden):
            raise UsageError(f"--layer {self.layer}: upstream {self.name} has {len(hidden)} hidden states")
        return hidden[self.layer][0].mean(dim=0).float().cpu().numpy()


class CatalogueSource:
    """Embeddings already computed by ``mart-embed`` (``OUT`` of a finished run, any model, any number of
    processes): looked up by audio path instead of embedded again. Frame-level outputs count as the mean
    of each track's frames."""

    def __init__(self, folder: str):
        from mart_upstream.embed import read_catalogue

        self.catalogue = read_catalogue(folder)
        meta = self.catalogue.meta
        self.name = f"{meta['model']}@{os.path.basename(os.path.normpath(folder))}"
        self.folder = folder

    def lookup(self, tracks: Sequence[Track], max_seconds: Optional[float] = None
               ) -> Tuple[np.ndarray, List[Track], List[str]]:
        """-> embeddings [n, D] of ``tracks`` in order, the tracks, and [] (nothing is read here).
        UsageError when the run embedded other excerpts or lacks some tracks."""
        meta = self.catalogue.meta
        if max_seconds != meta.get("max_seconds"):
            raise UsageError(f"{self.folder} was embedded with --max-seconds {meta.get('max_seconds')}, "
                             f"not {max_seconds}: give the same --max-seconds or embed again")
        emb, found = self.catalogue.rows_of([t.path for t in tracks])
        if len(found) < len(tracks):
            lost = [t.path for i, t in enumerate(tracks) if i not in set(found)]
            raise UsageError(f"{len(lost)} of the {len(tracks)} tracks are not in {self.folder}/index.csv, e.g. "
                             f"{lost[0]} (embed them: mart-embed --input LIST --out {self.folder}, with a list "
                             "of the manifest's paths)")
        return emb, list(tracks), []


def _read_cached(path: str) -> Optional[np.ndarray]:
    """A cached embedding, or None when absent or damaged (then it is computed again and rewritten)."""
    if not os.path.isfile(path):
        return None
    try:
        e = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        log.warning("%s: damaged cache entry (%s); recomputed", path, err)
        return None
    if e.ndim != 1 or not np.isfinite(e).all():
        log.warning("%s: damaged cache entry (shape %s or non-finite values); recomputed", path, e.shape)
        return None
    return e


def embed_tracks(source, tracks: Sequence[Track], cache_dir: Optional[str] = None,
                 max_seconds: Optional[float] = None) -> Tuple[np.ndarray, List[Track], List[str]]:
    """-> embeddings [n_ok, D], the tracks embedded, and the unreadable files (reported, skipped)."""
    folder = os.path.join(cache_dir, digest(source.key, max_seconds)) if cache_dir else None
    embs, kept, bad = [], [], []
    for t in tqdm(tracks, desc=f"embedding ({source.name})", unit="track", leave=False, disable=None):
        cached = os.path.join(folder, digest(*file_identity(t.path)) + ".npy") if folder else None
        hit = _read_cached(cached) if cached else None
        if hit is not None:
            embs.append(hit)
            kept.append(t)
            continue
        try:
            wav = load_audio(t.path, source.sample_rate, max_seconds)
        except AudioError as e:
            log.warning("skipped: %s", e)
            bad.append(t.path)
            continue
        e = source(wav)
        if cached:
            with atomic_path(cached, suffix=".npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, e)
        embs.append(e)
        kept.append(t)
    if not kept:
        raise AudioError(f"none of the {len(tracks)} audio files could be embedded")
    return np.stack(embs), kept, bad
