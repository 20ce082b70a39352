"""The HEAR 2021 adapter behind ``hear_api.<model>``: the API's model object, its input contract, the two
embedding calls.

Both calls are thin layers over ``mart_upstream.embedding``, which checks the audio (finite, sane
amplitude), resamples it and bounds the memory of each pass:

* timestamps: ``frame_features`` (one frame grid, chunked, no overlapping windows recomputed), the
  chosen layers concatenated; a frame grid coarser than 50 ms (MART: 125 ms) is linearly
  interpolated onto a finer one (25 ms) whose points include every native frame centre;
* scenes: ``clip_embeddings`` (MART: the whole-clip part-whole output ŝ⁰; FCN-4 models: the pooled
  encoder output), averaged over windows of the pretraining length.

The checkpoint is loaded by ``checkpoint.load_for_embedding`` (the fast inference form: the same
numbers, computed faster). See ``docs/hear.md`` for the hop and layer choices.

Beside it in this folder: ``references`` (MFCC and chroma without weights, behind ``hear_api.mfcc``,
``hear_api.mfcc40`` and ``hear_api.chroma``) and ``tasks`` (``mart-hear-task``: the HEAR task folders),
as ``adapters/s3prl/`` holds its downstream tasks.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from mart_upstream.checkpoint import CheckpointError, MissingCheckpoint, WrongModel, load_for_embedding
from mart_upstream.checkpoint import default_checkpoint as _default_checkpoint
from mart_upstream.embedding import clip_embeddings, frame_features

MAX_HOP_MS = 50.0  # HEAR: timestamps at most 50 ms apart (onset tolerance of music transcription)
FINE_HOP_MS = 25.0  # grid used when the native frame grid is coarser than MAX_HOP_MS


def default_checkpoint(name: str) -> str:
    """The checkpoint ``load_model("")`` reads: ``mart_upstream/checkpoints/<name>.ckpt``, or a reference
    model's converted published weights."""
    return _default_checkpoint(name)


class HearModel(nn.Module):
    """A frozen pretrained model with the attributes the HEAR API asks for.

    ``layers``: indices into ``frame_features``' layers, concatenated for timestamp embeddings
    (``combine="concat"``) or summed (``"sum"``: for models whose layers fill disjoint slots of one
    vector, such as the multi-level Siamese model's levels).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], combine: str = "concat"):
        super().__init__()
        if combine not in ("concat", "sum"):
            raise ValueError(f"combine must be 'concat' or 'sum', got {combine!r}")
        self.model = model
        self.layers = tuple(layers)
        self.combine = combine
        self.sample_rate = int(model.frontend.cfg.sample_rate)
        # mean ‖ std summaries (``window_summary``) are twice the window embedding
        self.scene_embedding_size = int(model.embedding_dim) * (2 if model.window_summary == "mean_std" else 1)
        self.timestamp_embedding_size = int(model.frame_dim) * (len(self.layers) if combine == "concat" else 1)
        native_ms = 1000.0 * model.frame_hop / self.sample_rate
        # an odd integer upsampling factor: the fine grid holds every native frame centre (frame i's centre
        # is fine point r * i + (r - 1) / 2, a whole number only for odd r)
        r = math.ceil(native_ms / FINE_HOP_MS)
        self.upsample = 1 if native_ms <= MAX_HOP_MS else r + (r % 2 == 0)
        self.timestamp_hop_ms = native_ms / self.upsample


def load_model(name: str, model_file_path: str, layers: Sequence[int], combine: str = "concat") -> HearModel:
    """``hear_api.<name>.load_model``: a checkpoint from ``mart-pretrain --model <name>``; "" reads the
    packaged ``mart_upstream/checkpoints/<name>.ckpt`` (a clear error if it is absent)."""
    try:
        model = load_for_embedding(name, model_file_path, device="cpu")
    except MissingCheckpoint as e:
        if model_file_path:
            raise
        raise CheckpointError(
            f"hear_api.{name}: no packaged {name} checkpoint at {e.path}; "
            f"pass one: load_model('path/to/{name}.ckpt') or `-m path/to/{name}.ckpt`"
        ) from None
    except WrongModel as e:
        raise CheckpointError(
            f"{e.path} holds a {e.found!r} model; load it with hear_api.{e.found}, not hear_api.{name}"
        ) from None
    return HearModel(model, layers, combine).eval()


def check_audio(audio, model: nn.Module, model_type: type = HearModel) -> torch.Tensor:
    """The HEAR API's input contract: a float tensor [n_sounds, n_samples] with at least one sample, for a
    model from ``load_model``; TypeError or ValueError with the reason (and a hint for common mistakes).

    The values themselves (finite, sane amplitude) are checked by the embedding path, which also makes
    the documented conversions (docs/hear.md): other float dtypes -> float32; ``sample_rate`` given and
    different from ``model.sample_rate`` -> resampled.
    """
    if not isinstance(model, model_type):
        raise TypeError(f"model must come from this module's load_model(), got {type(model).__name__}")
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"audio must be a torch.Tensor [n_sounds, n_samples], got {type(audio).__name__}")
    if audio.dim() != 2:
        hint = (" (stereo or multichannel? mix to mono first, e.g. audio.mean(dim=1))" if audio.dim() == 3
                else " (one sound? use audio[None])" if audio.dim() == 1 else "")
        raise ValueError(f"audio must be mono [n_sounds, n_samples], got shape {tuple(audio.shape)}{hint}")
    if not torch.is_floating_point(audio):
        raise ValueError(f"audio must be float in [-1, 1], got dtype {audio.dtype}"
                         f"{' (int16 PCM? divide by 32768)' if audio.dtype == torch.int16 else ''}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"audio is empty: shape {tuple(audio.shape)}")
    return audio


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel,
                             sample_rate: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """HEAR API: [n_sounds, n_samples] at 16 kHz -> (embeddings [n_sounds, n_timestamps,
    timestamp_embedding_size], centres in ms [n_sounds, n_timestamps])."""
    audio = check_audio(audio, model)
    # the chosen layers, each [n_sounds, ceil(T * upsample / frame_hop), D] on the timestamp grid
    picked = frame_features(model.model, audio, sample_rate=sample_rate, layers=model.layers,
                            upsample=model.upsample)
    emb = torch.cat(picked, dim=-1) if model.combine == "concat" else torch.stack(picked).sum(dim=0)
    n = emb.shape[1]
    centres = (torch.arange(n, device=emb.device, dtype=torch.float64) + 0.5) * model.timestamp_hop_ms
    return emb.contiguous().float(), centres.float().expand(audio.shape[0], n).contiguous()


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HearModel, sample_rate: Optional[int] = None) -> torch.Tensor:
    """HEAR API: [n_sounds, n_samples] at 16 kHz -> [n_sounds, scene_embedding_size]."""
    audio = check_audio(audio, model)
    return clip_embeddings(model.model, audio, sample_rate=sample_rate).float()
