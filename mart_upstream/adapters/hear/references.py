"""Hand-made references without weights behind the HEAR 2021 modules ``hear_api.mfcc``, ``hear_api.mfcc40``
and ``hear_api.chroma`` (the reference rows of ``mart-bench run``; heareval runs them as any module).

* MFCC statistics: 20 MFCCs and their deltas (torchaudio), mean and standard deviation over time
  (80-d scene embedding); the classic timbre baseline.
* MFCC-40 (``hear_api.mfcc40``): the strategies paper's baseline (Table 3: "MFCC", Dim. 40; §4 says only
  "we also use MFCCs as input"; its code has none). Read as 40 coefficients per frame, no deltas, on
  the paper's front end (§3: 16 kHz, 512-point window and FFT, hop 256) over the 96 mel bands of the
  authors' encoder input (128 bands leave some of a 512-point FFT's filters empty), summarised as the
  learned models are (§4: mean ‖ standard deviation, 80-d). The other reading of "40" (20 MFCCs + 20
  deltas) is ``hear_api.mfcc``.
* Chroma statistics: a 12-bin chroma of the STFT power (librosa's chroma filterbank on a torch STFT),
  each frame scaled to max 1, mean and standard deviation over time (24-d). For cover songs the
  mean chroma is compared under all 12 transpositions (``key_invariant_similarity`` of ``mart-bench
  run``'s evaluation), as the key-invariant chroma baseline of cover-song identification does.

Both go through the same harness paths as the learned encoders (heareval's runners, the cover-song
evaluator); neither has weights, so ``load_model`` ignores its path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn

from . import check_audio
from mart_upstream.embedding import prepare_waveforms

SR = 16000


class ReferenceModel(nn.Module):
    """Frame features (``frames``) plus their mean and standard deviation as the scene embedding."""

    sample_rate = SR

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "mfcc":
            self.hop = 320  # 20 ms
            self.feature = T.MFCC(SR, n_mfcc=20, melkwargs=dict(n_fft=1024, hop_length=self.hop, n_mels=128))
            dim = 40  # MFCCs and deltas
        elif kind == "mfcc40":
            self.hop = 256  # strategies §3: 512-point window and FFT, hop 256 (16 ms)
            self.feature = T.MFCC(SR, n_mfcc=40, melkwargs=dict(n_fft=512, hop_length=self.hop, n_mels=96))
            dim = 40  # 40 coefficients (strategies Table 3)
        elif kind == "chroma":
            import librosa  # only its chroma filterbank

            self.hop, self.n_fft = 800, 4096  # 50 ms hop; 256 ms window resolves low pitches
            fb = librosa.filters.chroma(sr=SR, n_fft=self.n_fft, n_chroma=12)  # [12, n_fft // 2 + 1]
            self.register_buffer("chroma_fb", torch.from_numpy(fb).float())
            self.register_buffer("window", torch.hann_window(self.n_fft))
            dim = 12
        else:
            raise ValueError(f"unknown reference {kind!r}: mfcc, mfcc40 or chroma")
        self.timestamp_embedding_size = dim
        self.scene_embedding_size = 2 * dim
        self.timestamp_hop_ms = 1000.0 * self.hop / SR

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, n_frames, dim], frame i centred at i * hop."""
        if self.kind == "mfcc":
            m = self.feature(wav)  # [B, 20, F]
            x = torch.cat([m, AF.compute_deltas(m)], dim=1)
        elif self.kind == "mfcc40":
            x = self.feature(wav)  # [B, 40, F]
        else:
            spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, center=True,
                              return_complex=True).abs() ** 2  # [B, n_fft // 2 + 1, F]
            c = torch.einsum("cf,bft->bct", self.chroma_fb, spec)
            x = c / c.amax(dim=1, keepdim=True).clamp_min(1e-10)
        return x.transpose(1, 2)

    def scene(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.frames(wav)
        return torch.cat([x.mean(dim=1), x.std(dim=1, unbiased=False)], dim=-1)


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), next(iter(model.buffers()), torch.empty(0))).device


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: ReferenceModel,
                             sample_rate: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """HEAR API of ``hear_api.mfcc`` / ``mfcc40`` / ``chroma``: frame features and their centres in ms."""
    audio = prepare_waveforms(check_audio(audio, model, model_type=ReferenceModel), sample_rate, SR, _device(model))
    emb = model.frames(audio)
    centres = torch.arange(emb.shape[1], dtype=torch.float32) * model.timestamp_hop_ms
    return emb.float(), centres.expand(audio.shape[0], -1).contiguous()


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: ReferenceModel,
                         sample_rate: Optional[int] = None) -> torch.Tensor:
    """HEAR API of ``hear_api.mfcc`` / ``mfcc40`` / ``chroma``: mean and standard deviation of the frame features."""
    audio = prepare_waveforms(check_audio(audio, model, model_type=ReferenceModel), sample_rate, SR, _device(model))
    return model.scene(audio).float()
