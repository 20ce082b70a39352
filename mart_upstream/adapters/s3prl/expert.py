"""S3PRL upstream expert: a frozen pretrained model behind s3prl's ``forward(wavs) -> dict`` interface.

Every layer comes from ``mart_upstream.embedding.frame_features`` (the project's one embedding path),
so all hidden states share one frame grid. s3prl needs a whole number of 16 kHz samples per frame
that divides 16000; the models' native hop (``model.frame_hop``) is 2000 samples for MART (divides)
but 512 for PEMR/SimCLR (128-sample STFT hop x FCN-4 time stride 4; does not). The features are
therefore put on the grid of ``gcd(frame_hop, 16000)`` samples (128 for FCN-4 models: the STFT grid)
by repeating each native frame ``frame_hop / gcd`` times. Output frame j covers samples
[j * rate, (j + 1) * rate), which lie inside native frame floor(j / repeat), so nothing is
interpolated or shifted in time.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ...embedding import frame_features
from ...models.base import SSLModel
from . import PluginError

SAMPLE_RATE = 16000  # s3prl feeds 16 kHz audio to every upstream


class UpstreamExpert(nn.Module):
    def __init__(self, model: SSLModel, name: str):
        super().__init__()
        sr = model.frontend.cfg.sample_rate
        if sr != SAMPLE_RATE:
            raise PluginError(f"upstream {name}: the model expects {sr} Hz audio, s3prl feeds {SAMPLE_RATE} Hz")
        self.name = name
        self.model = model.eval()
        self.rate = math.gcd(model.frame_hop, SAMPLE_RATE)  # samples per output frame
        self.repeat = model.frame_hop // self.rate  # output frames per native frame

    def get_downsample_rates(self, key: str) -> int:
        return self.rate

    def train(self, mode: bool = True) -> "UpstreamExpert":
        """The encoder is frozen: its dropout and batch norm stay in inference mode whatever s3prl asks."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, wavs: List[torch.Tensor]) -> Dict[str, object]:
        """wavs: unpadded 16 kHz 1-D tensors -> every layer [B, ceil(T_max / rate), D] on one grid."""
        if not wavs:
            raise ValueError(f"upstream {self.name}: empty batch")
        for i, w in enumerate(wavs):
            if w.dim() != 1 or w.numel() == 0:
                raise ValueError(f"upstream {self.name}: wav {i} must be a non-empty 1-D tensor, "
                                 f"got shape {tuple(w.shape)}")
            if not torch.is_floating_point(w):
                raise ValueError(f"upstream {self.name}: wav {i} must be float in [-1, 1], got {w.dtype}")
        wav = pad_sequence([w.float() for w in wavs], batch_first=True)  # [B, T_max], zero padded
        n = -(-wav.shape[1] // self.rate)
        layers = frame_features(self.model, wav)  # [B, ceil(T_max / frame_hop), D] each
        if self.repeat > 1:
            layers = [x.repeat_interleave(self.repeat, dim=1)[:, :n] for x in layers]  # [B, n, D]
        return {"hidden_states": layers, "last_hidden_state": layers[-1]}
