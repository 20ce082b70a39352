"""Siamese networks of the strategies paper: InfoNCE and multi-level InfoNCE on CNN-5 (§2.2.1, eq. 1-2).

Paper: ``../shared/papers/002_*`` ("Towards Proper Contrastive Self-supervised Learning Strategies for
Music Audio Representation"). Two 3 s segments of one track (§3: 188 frames at hop 256), both
augmented (§2.3.1), go through one CNN-5 encoder (§2.1) and a Linear to y = f(x) [emb_dim]; the loss
is eq. (1) with anchor y^a, its positive y^p and the other tracks' positives of the batch as negatives.
Where the positive comes from is the ``strategy`` (§2.3.2, Table 1):

* ``self_aug``: the anchor's own segment (``pairing="same"``): the two augmentations tell them apart;
* ``adjacent``: the next segment after a 0.5 s gap, or the previous one (``pairing="adjacent"``);
* ``random``: a segment from the rest of the track, not overlapping the anchor (``pairing="rest"``).

``multilevel`` (eq. 2): a Linear on each of the 5 convolutional layers' outputs, one InfoNCE per
level, summed; the representation is then the 5 level vectors concatenated (Table 3: 5 x 128 = 640).
A layer's output [C, F, T] is pooled over time (max, the encoder's ``global_pool``) and flattened
over channels x frequency before its Linear, as in the authors' code (``MelConv5by5EncMulti``): the
low layers keep their frequency detail. The single-level model is the same with the last layer
only (its 96 mel bands pooled to one: a Linear from the encoder output).

Downstream (§4): ``clip_embeddings`` cuts a clip into 3 s windows and summarises their vectors by
mean ‖ standard deviation (``summary``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..encoders import FCN, FCNConfig, cnn5_config
from ..frontend import FrontendConfig, LogMel
from ..losses import SIMILARITIES, multilevel_info_nce
from .base import SUMMARIES, SSLModel

# strategy -> how the training crops place the two views (``train.data.PAIRINGS``), strategies Table 1
STRATEGIES = {"self_aug": "same", "adjacent": "adjacent", "random": "rest"}
# frame features (``window_features``): audio per chunk, about 40 s, in whole last-layer frames
FEATURE_CHUNK_SAMPLES = 16000 * 40

# The augmentation chain of strategies §2.3.1 ("pitch shifting, time stretching, reverberation, noise
# addition, and polarity inversion [21]. We randomly choose from {-2, -1, 1, 2} semitones for pitch
# shifting, and stretch time with a speed factor randomly chosen from a range between 0.8 to 1.2. We apply
# reverberation and noise addition with a probability of 50%, individually."), for the siamese models
# and MelCPC (the authors' code augments the CPC crop too: data_manager.py, ANCHOR_WAV_AUG), as
# ``augment`` overrides of the CLMR chain's defaults (augment.AugmentConfig):
# * pitch by one of {-2, -1, 1, 2} semitones (PitchShift leaves 0 out of -2..2) and time stretch with a
#   speed factor in [0.8, 1.2], on every view; the crops are read 1.2 x long and cut after the chain, so
#   a sped-up view has no trailing silence (``stretch_read_ahead``, as the code);
# * reverb and noise with p = 0.5 each. The paper gives no noise level and its code adds none; CLMR's
#   ratio (noise std 1e-4 to 1e-2 of the signal's, 40-80 dB below it) is inaudible, so the noise is
#   5-40 dB SNR, uniform in dB (audiomentations' AddGaussianSNR/AddColorNoise default range). Reverb
#   keeps the chain's synthetic room (RT60 0.2-1.5 s): the paper gives no setting;
# * polarity inversion with p = 0.5, our choice (the paper gives no probability): a coin flip makes the
#   sign of each view independent, so the encoder has to ignore it;
# * gain, filter and delay off: not in the paper's list.
STRATEGIES_AUGMENT = {"p_pitch": 1.0, "pitch_semitones": [-2, 2], "p_stretch": 1.0, "stretch_rate": [0.8, 1.2],
                      "stretch_read_ahead": True, "p_reverb": 0.5, "p_noise": 0.5, "noise_snr_db": [5.0, 40.0],
                      "p_polarity": 0.5, "p_gain": 0.0, "p_filter": 0.0, "p_delay": 0.0}


def siamese_frontend() -> FrontendConfig:
    """Strategies §3: 16 kHz, 512-point Hann window and FFT, hop 256, the input standardised over the
    training data. §3 gives no number of mel bands; 96 is the authors' code (data_config.yaml
    NUM_MEL_BINS: 96, the encoder's docstring "(batch_size, 1, 188, 96)")."""
    return FrontendConfig(n_fft=512, hop_length=256, n_mels=96, standardise=True)


@dataclass
class SiameseConfig:
    frontend: FrontendConfig = field(default_factory=siamese_frontend)
    encoder: FCNConfig = field(default_factory=cnn5_config)  # strategies §2.1: five 5x5 conv layers
    clip_samples: int = 48000  # a 3 s segment (§3: 188 frames at hop 256)
    emb_dim: int = 128  # Table 3: "Dim. 128" (640 = 5 x 128 with multilevel)
    strategy: str = "self_aug"  # self_aug | adjacent | random (§2.3.2, Table 1)
    gap_seconds: float = 0.5  # §2.3.2: between adjacent segments, against edge-continuity shortcuts
    # Eq. (1) as printed: s = y^aᵀy^p, a dot product without temperature, as the authors' code computes the
    # inter-track loss (contrastive_models.py: torch.mm of the raw vectors, then log-softmax; its
    # INFONCE_TAO = 0.05 only divides the intra-track variant's logits). MelCPC uses the same form, so
    # the paper's Siamese vs MelCPC comparison is like for like. similarity="cosine" (vectors
    # L2-normalised, logits / temperature, SimCLR's form; e.g. temperature=0.05) stays an option.
    similarity: str = "dot"
    temperature: float = 1.0
    multilevel: bool = False  # eq. (2): InfoNCE on each of the 5 layers' outputs, summed
    summary: str = "mean_std"  # §4: segment embeddings summarised as mean ‖ std

    def __post_init__(self):
        """ConfigError naming the first setting that cannot work (so ``mart-pretrain`` stops before it
        reads any data)."""
        rules = [
            (1 <= self.clip_samples <= SSLModel.MAX_CLIP_SAMPLES,
             f"clip_samples={self.clip_samples} is outside [1, {SSLModel.MAX_CLIP_SAMPLES}]"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"),
            (math.isfinite(self.gap_seconds) and self.gap_seconds >= 0,
             f"gap_seconds must be >= 0, got {self.gap_seconds}"),
            (self.similarity in SIMILARITIES, f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}"),
            (math.isfinite(self.temperature) and self.temperature > 0,
             f"temperature must be a positive number, got {self.temperature}"),
            (self.emb_dim >= 1, f"emb_dim must be at least 1, got {self.emb_dim}"),
            (self.summary in SUMMARIES, f"summary must be one of {SUMMARIES}, got {self.summary!r}"),
            (self.encoder.n_mels == self.frontend.n_mels,
             f"encoder.n_mels ({self.encoder.n_mels}) must equal frontend.n_mels ({self.frontend.n_mels})"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(message)


@dataclass
class MultilevelSiameseConfig(SiameseConfig):
    multilevel: bool = True


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def level_input_dims(cfg: FCNConfig) -> List[int]:
    """Values per layer output after pooling over time: channels x frequency bins (ceil- or floor-mode pools)."""
    dims, f = [], cfg.n_mels
    for c, p in zip(cfg.channels, cfg.freq_pools):
        f = _ceil_div(f, p) if cfg.ceil_mode else f // p
        dims.append(c * f)
    return dims


class Siamese(SSLModel):
    """Strategies §2.2.1: a siamese CNN-5 trained with InfoNCE (eq. 1) or multi-level InfoNCE (eq. 2)."""

    tiny_config = {"clip_samples": 8000, "frontend": {"n_mels": 32},
                   "encoder": {"n_mels": 32, "channels": [8, 8, 8, 16, 16], "freq_pools": [2, 2, 2, 2, 2]},
                   "emb_dim": 8}
    # The paper gives no optimiser settings; its published code (cssma_config.yaml) trains with Adam,
    # lr 1e-3, no weight decay, batch 16 (as MelCPC here).
    pretrain_defaults = {
        "optim": {"lr": 1e-3, "weight_decay": 0.0},
        "run": {"batch_size": 16},
        "augment": STRATEGIES_AUGMENT,
    }

    def __init__(self, config: SiameseConfig):
        nn.Module.__init__(self)  # not SSLModel.__init__: no projection head (the level Linears are the heads)
        c = config  # checked when it was made (SiameseConfig.__post_init__)
        self.config = config
        self.frontend = LogMel(c.frontend)
        self.encoder = FCN(c.encoder)
        dims = level_input_dims(c.encoder)
        # the layers with a Linear on their output: all of them (eq. 2), or the last
        self.levels = tuple(range(len(dims))) if c.multilevel else (len(dims) - 1,)
        self.heads = nn.ModuleList(nn.Linear(dims[i], c.emb_dim) for i in self.levels)

    # -- how training feeds the model --------------------------------------------------------
    @property
    def pairing(self) -> str:
        return STRATEGIES[self.config.strategy]

    @property
    def pairing_gap_seconds(self) -> float:
        return self.config.gap_seconds if self.config.strategy == "adjacent" else 0.0

    # -- the representation --------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.config.emb_dim * len(self.levels)

    def _level_maps(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """[B, T] waveform -> the output [B, C_i, F_i, T_i] of every layer that has a Linear."""
        x = self.frontend(wav).unsqueeze(1)  # [B, 1, F, T]
        maps = []
        for block in self.encoder.blocks[: self.levels[-1] + 1]:
            x = block(x)
            maps.append(x)
        return [maps[i] for i in self.levels]

    def level_vectors(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """[B, T] -> ŷ_i [B, emb_dim] per level: the layer's output pooled over time, flattened, its Linear."""
        mean = self.encoder.cfg.global_pool == "mean"
        return [head((m.mean(dim=-1) if mean else m.amax(dim=-1)).flatten(1))
                for head, m in zip(self.heads, self._level_maps(wav))]

    def window_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, embedding_dim]: y = f(x) (the level vectors concatenated with multilevel)."""
        return torch.cat(self.level_vectors(wav), dim=1)

    # -- frame-level features ------------------------------------------------------------------
    def _stride(self, layer: int) -> int:
        """Samples per output frame of encoder layer ``layer``."""
        return self.frontend.hop_length * math.prod(self.encoder.cfg.time_pools[: layer + 1])

    @property
    def frame_hop(self) -> int:
        """The frame grid of the first layer with a Linear: 512 samples with multilevel (hop 256 x the
        first time pool), 40960 (2.56 s) for the single-level model (hop 256 x 160)."""
        return self._stride(self.levels[0])

    @property
    def feature_chunk(self) -> int:
        """About 40 s, a whole number of last-layer frames (so every chunk has the same pooling grid)."""
        coarse = self._stride(len(self.encoder.cfg.time_pools) - 1)
        return coarse * max(1, round(FEATURE_CHUNK_SAMPLES / coarse))

    @property
    def feature_context(self) -> int:
        """Samples on each side of a chunk, in whole last-layer frames, so that chunk borders change no
        feature: what a last-layer frame sees beyond its own samples (every 5x5 convolution adds 2
        frames of its input grid: 94 log-mel frames for CNN-5, plus half an STFT window), plus, at the
        end of a last chunk cut to a whole number of ``frame_hop``, the rest of the last-layer frame it
        ends in. CNN-5: 81920 samples (5.1 s) with multilevel, 40960 for the single-level model."""
        cfg = self.encoder.cfg
        frames, jump = 0, 1
        for p in cfg.time_pools:
            frames += (cfg.kernel // 2) * jump
            jump *= p
        coarse = self._stride(len(cfg.time_pools) - 1)
        reach = frames * self.frontend.hop_length + self.frontend.win_length // 2 + coarse - self.frame_hop
        return coarse * _ceil_div(reach, coarse)

    def window_features(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """[B, L] -> one layer per level, [B, frames, embedding_dim] on the ``frame_hop`` grid.

        Layer i is level i's Linear applied to every frame of its layer output (flattened over channels
        x frequency, not pooled over time), each frame repeated over the finer frames it spans, in the
        i-th block of ``emb_dim`` values (zeros elsewhere): the layers summed give the concatenated
        per-frame level vectors, the frame-level counterpart of ``window_embedding``. The single-level
        model has one layer.
        """
        maps = self._level_maps(wav)
        n = maps[0].shape[-1]
        e, total = self.config.emb_dim, self.embedding_dim
        out = []
        for k, (head, m, level) in enumerate(zip(self.heads, maps, self.levels)):
            y = head(m.flatten(1, 2).transpose(1, 2))  # [B, T_i, emb_dim]
            y = y.repeat_interleave(self._stride(level) // self.frame_hop, dim=1)[:, :n]
            out.append(F.pad(y, (k * e, total - (k + 1) * e)))
        return out

    # -- training ------------------------------------------------------------------------------
    def forward(self, views: torch.Tensor) -> Dict[str, torch.Tensor]:
        c = self.config
        self.check_views(views, 2, c.clip_samples)
        b = views.shape[0]
        pairs = [y.view(b, 2, -1) for y in self.level_vectors(views.flatten(0, 1))]  # per level [B, 2, E]
        loss, terms = multilevel_info_nce([y[:, 0] for y in pairs], [y[:, 1] for y in pairs], c.temperature,
                                          c.similarity, return_levels=True)  # eq. (2); eq. (1) for one level
        z1 = torch.cat([y[:, 0] for y in pairs], dim=1).detach()
        z2 = torch.cat([y[:, 1] for y in pairs], dim=1).detach()
        out = {"loss": loss, "info_nce": loss.detach(), "emb": z1, "z1": z1, "z2": z2}
        if c.multilevel:
            out.update({f"info_nce_{i + 1}": t for i, t in zip(self.levels, terms)})
        return out
