"""The HEAR 2021 adapter behind ``hear_api.<model>``: checkpoint lookup, input checks, the two embedding calls.

Both calls are thin layers over ``mart_upstream.embedding``:

* timestamps: ``frame_features`` (one frame grid, chunked, no overlapping windows recomputed), the
  chosen layers concatenated; a frame grid coarser than 50 ms (MART: 125 ms) is linearly
  interpolated onto a finer one (25 ms) whose points include every native frame centre;
* scenes: ``clip_embeddings`` (MART: the whole-clip part-whole output ŝ⁰; FCN-4 models: the pooled
  encoder output), averaged over windows of the pretraining length.

The checkpoint is embedded through its fast inference copy (``mart_upstream.inference.for_inference``:
the same numbers, computed faster). See ``docs/hear.md`` for the hop and layer choices.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from mart_upstream.checkpoint import CheckpointError, load_pretrained
from mart_upstream.checkpoint import default_checkpoint as _default_checkpoint
from mart_upstream.embedding import check_waveforms, clip_embeddings, frame_features
from mart_upstream.inference import for_inference

MAX_HOP_MS = 50.0  # HEAR: timestamps at most 50 ms apart (onset tolerance of music transcription)
FINE_HOP_MS = 25.0  # grid used when the native frame grid is coarser than MAX_HOP_MS
SOUNDS_PER_PASS = 4  # sounds embedded together: memory stays flat for any batch size


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
    path = os.path.expanduser(model_file_path) if model_file_path else default_checkpoint(name)
    if not model_file_path and not os.path.isfile(path):
        raise CheckpointError(
            f"hear_api.{name}: no packaged {name} checkpoint at {path}; "
            f"pass one: load_model('path/to/{name}.ckpt') or `-m path/to/{name}.ckpt`"
        )
    model, _ = load_pretrained(path, device="cpu")
    if model.model_name != name:
        raise CheckpointError(
            f"{path} holds a {model.model_name!r} model; load it with hear_api.{model.model_name}, not hear_api.{name}"
        )
    return HearModel(for_inference(model), layers, combine).eval()


def check_audio(audio, model: nn.Module, sample_rate: Optional[int] = None, model_type: type = HearModel) -> torch.Tensor:
    """-> float32 [n_sounds, n_samples] at the model's rate on the model's device, or a ValueError.

    Conversions (documented in docs/hear.md): other float dtypes -> float32; ``sample_rate`` given
    and different from ``model.sample_rate`` -> resampled. Everything else is refused with the reason.
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
    check_waveforms(audio)  # finite, sane amplitude: the checks of the one embedding path
    device = next(iter(model.parameters()), next(iter(model.buffers()), torch.empty(0))).device
    audio = audio.to(device=device, dtype=torch.float32)
    if sample_rate is not None and sample_rate != model.sample_rate:
        if isinstance(sample_rate, bool) or not float(sample_rate).is_integer() or not 1000 <= sample_rate <= 384000:
            raise ValueError(f"sample_rate must be a whole number of Hz in [1000, 384000], got {sample_rate!r}")
        audio = AF.resample(audio, int(sample_rate), model.sample_rate)
    return audio


def _sub_batches(audio: torch.Tensor):
    for i in range(0, audio.shape[0], SOUNDS_PER_PASS):
        yield audio[i : i + SOUNDS_PER_PASS]


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel,
                             sample_rate: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """HEAR API: [n_sounds, n_samples] at 16 kHz -> (embeddings [n_sounds, n_timestamps,
    timestamp_embedding_size], centres in ms [n_sounds, n_timestamps])."""
    audio = check_audio(audio, model, sample_rate)
    outs = []
    for part in _sub_batches(audio):
        layers = frame_features(model.model, part)  # each [b, ceil(T / frame_hop), D]
        picked = [layers[i] for i in model.layers]
        x = torch.cat(picked, dim=-1) if model.combine == "concat" else torch.stack(picked).sum(dim=0)
        if model.upsample > 1:
            # frame i stands for samples [i, i + 1) * hop, centred at (i + 0.5) * hop; align_corners=False
            # puts fine point k at (k + 0.5) * hop / r: native centres are hit exactly, the ends are held.
            x = F.interpolate(x.transpose(1, 2), scale_factor=model.upsample, mode="linear",
                              align_corners=False).transpose(1, 2)
        outs.append(x)
    hop_samples = model.model.frame_hop / model.upsample
    n = max(1, math.ceil(audio.shape[1] / hop_samples))
    emb = torch.cat(outs)[:, :n].contiguous()
    centres = (torch.arange(n, device=emb.device, dtype=torch.float64) + 0.5) * model.timestamp_hop_ms
    return emb.float(), centres.float().expand(audio.shape[0], n).contiguous()


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HearModel, sample_rate: Optional[int] = None) -> torch.Tensor:
    """HEAR API: [n_sounds, n_samples] at 16 kHz -> [n_sounds, scene_embedding_size]."""
    audio = check_audio(audio, model, sample_rate)
    return torch.cat([clip_embeddings(model.model, part)
                      for part in _sub_batches(audio)]).float()
