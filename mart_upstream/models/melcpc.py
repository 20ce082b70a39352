"""MelCPC: contrastive predictive coding on log-mel segments (strategies paper §2.2.2, eq. 3; §3; §4).

Paper: ``../shared/papers/002_*`` ("Towards Proper Contrastive Self-supervised Learning Strategies for
Music Audio Representation"). One 12 s crop per track is cut into S = 4 segments of 3 s (§3: 752
frames = 4 x 188 at hop 256). Each segment x_s goes through the CNN-5 encoder and a Linear to
y_s = f(x_s) [emb_dim]; a 1-layer GRU over y_1..y_S gives c_1..c_S [gru_hidden]. From c_t, the GRU
output after the t context segments, one Linear W_k per step k predicts y_{t+k}:

    L_CPC = Σ_k InfoNCE(W_k c_t, y_{t+k}, {y^n_1, ..., y^n_{N-1}})   (eq. 3)

with the negatives y^n the y_{t+k} of the other tracks of the (global) batch (§2.2.2), never
another segment of the same track; InfoNCE is eq. (1), a dot product (τ = 1) as printed.

Downstream (§4): every segment of a clip goes through the model at once and the GRU outputs of all
time steps are summarised by mean ‖ standard deviation (2 x gru_hidden = 512 values).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..encoders import FCN, FCNConfig, cnn5_config
from ..frontend import FrontendConfig, LogMel
from ..losses import SIMILARITIES, cpc_step_losses
from .base import SUMMARIES, SSLModel, mean_std
from .siamese import STRATEGIES_AUGMENT, siamese_frontend

# Segments of one sound encoded at once by ``sequence_embedding``: memory stays flat for any length.
SEGMENTS_PER_PASS = 32


@dataclass
class MelCPCConfig:
    frontend: FrontendConfig = field(default_factory=siamese_frontend)  # strategies §3, as the siamese models
    encoder: FCNConfig = field(default_factory=cnn5_config)  # strategies §2.1: five 5x5 conv layers
    clip_samples: int = 192000  # 12 s per track (§3)
    # A 3 s segment (§3: 188 frames at hop 256). Segments are cut from the waveform and each gets its own
    # log-mel: 4 x 188 = 752 frames, the paper's count for 12 s (one log-mel of 12 s has 751), and a
    # segment is encoded exactly as a lone 3 s clip would be, with no conv context across its borders.
    segment_samples: int = 48000
    # The paper's printed setting (default): a 12 s sequence (§3: 752 frames, 4 segments), c_t "from the
    # last timestep t" of t segments predicting y_{t+k} (eq. 3); it does not say how the 4 are split, so
    # they are split evenly: c_2 (6 s of context) predicts y_3 and y_4 (k = 1, 2).
    # The authors' code (option): NUM_CPC_INPUT_STEPS 4 + NUM_CPC_PREDICTIONS 4, 8 of the 11 encoder
    # steps of a 29 s crop from a random start (emb_aggregators.CPCModule): ``context_segments=4
    # prediction_steps=4 clip_samples=0`` (a random 24 s crop, 4 segments predicting the next 4).
    # clip_samples must be their total length; 0 means exactly that.
    context_segments: int = 2
    prediction_steps: int = 2
    emb_dim: int = 128  # y = f(x): the published code's EMB_DIM (a Linear from CNN-5's 512 channels)
    gru_hidden: int = 256  # Table 3 lists MelCPC's representation as 256-d (the code's GRU: EMB_DIM)
    similarity: str = "dot"  # eq. (1) as printed: y^aᵀy^p (the code too); "cosine" normalises first
    temperature: float = 1.0
    # clip_embeddings averages windows of clip_samples; each window's embedding already is the mean ‖
    # std of its GRU outputs (see MelCPC.sequence_embedding for the whole clip at once)
    summary: str = "mean"

    def __post_init__(self):
        if self.clip_samples == 0:  # the sequence's length: every context and predicted segment
            self.clip_samples = (self.context_segments + self.prediction_steps) * self.segment_samples


class MelCPC(SSLModel):
    num_views = 1  # one 12 s crop per track: context and targets come from it
    tiny_config = {"clip_samples": 8000, "segment_samples": 2000,
                   "frontend": {"n_fft": 64, "hop_length": 32, "n_mels": 16},
                   "encoder": {"n_mels": 16, "channels": [4, 4, 8, 8, 16], "freq_pools": [2, 2, 2, 2, 1],
                               "time_pools": [2, 2, 2, 2, 1]},
                   "emb_dim": 8, "gru_hidden": 8}
    # The paper gives no optimiser settings; its published code (cssma_config.yaml) trains with Adam,
    # lr 1e-3, no weight decay, batch 16. Augmentations: the paper's chain (§2.3.1, siamese.STRATEGIES_AUGMENT)
    # on the whole crop, as the authors' code augments its CPC crop (pitch and speed there), not CLMR's.
    pretrain_defaults = {"optim": {"lr": 1e-3, "weight_decay": 0.0}, "run": {"batch_size": 16},
                         "augment": STRATEGIES_AUGMENT}

    def __init__(self, config: MelCPCConfig):
        nn.Module.__init__(self)  # not SSLModel.__init__: no projection head (the W_k predict)
        c = config
        segments = c.context_segments + c.prediction_steps
        if c.context_segments < 1 or c.prediction_steps < 1:
            raise ConfigError(f"context_segments and prediction_steps must be at least 1, got "
                              f"{c.context_segments} and {c.prediction_steps}")
        if c.segment_samples < 1 or c.clip_samples != segments * c.segment_samples:
            raise ConfigError(f"clip_samples must be (context_segments + prediction_steps) x segment_samples = "
                              f"{segments} x {c.segment_samples} = {segments * c.segment_samples}, "
                              f"got {c.clip_samples}")
        if not c.clip_samples <= self.MAX_CLIP_SAMPLES:
            raise ConfigError(f"clip_samples={c.clip_samples} is outside [1, {self.MAX_CLIP_SAMPLES}]")
        if c.similarity not in SIMILARITIES:
            raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {c.similarity!r}")
        if not c.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {c.temperature}")
        if c.summary not in SUMMARIES:
            raise ConfigError(f"summary must be one of {SUMMARIES}, got {c.summary!r}")
        self.config = config
        self.frontend = LogMel(c.frontend)
        self.encoder = FCN(c.encoder)
        self.head = nn.Linear(self.encoder.out_dim, c.emb_dim)  # y = f(x), per segment
        self.gru = nn.GRU(c.emb_dim, c.gru_hidden, num_layers=1, batch_first=True)  # §2.2.2: 1-layer GRU
        # W_k, k = 1..K
        self.predictors = nn.ModuleList(nn.Linear(c.gru_hidden, c.emb_dim) for _ in range(c.prediction_steps))

    @property
    def embedding_dim(self) -> int:
        return 2 * self.config.gru_hidden

    def segment_embeddings(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, L] -> y [B, S, emb_dim], S = ceil(L / segment_samples) (the last segment zero padded), all
        segments in one batch (training's BatchNorm statistics span them)."""
        b, n = wav.shape
        size = self.config.segment_samples
        s = max(1, -(-n // size))
        segments = F.pad(wav, (0, s * size - n)).reshape(b * s, size)
        return self.head(self.encoder(self.frontend(segments))).view(b, s, -1)

    def context(self, y: torch.Tensor) -> torch.Tensor:
        """y [B, S, emb_dim] -> GRU outputs c [B, S, gru_hidden] (causal: c_t sees y_1..y_t), in float32."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            return self.gru(y.float())[0]

    @staticmethod
    def summarise(c: torch.Tensor) -> torch.Tensor:
        """[B, S, H] -> mean ‖ population standard deviation over the time steps [B, 2H] (strategies §4)."""
        return mean_std(c, dim=1)

    def sequence_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, L] audio of any length -> [B, 2 x gru_hidden]: every segment of the clip through the GRU at
        once and its outputs at all time steps summarised (strategies §4), for the whole clip exactly."""
        size = SEGMENTS_PER_PASS * self.config.segment_samples  # whole segments per pass
        y = torch.cat([self.segment_embeddings(part) for part in wav.split(size, dim=1)], dim=1)
        return self.summarise(self.context(y))

    def window_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, clip_samples] -> [B, 2 x gru_hidden]: the window's segments through the GRU, summarised."""
        return self.summarise(self.context(self.segment_embeddings(wav)))

    def forward(self, views):
        c = self.config
        self.check_views(views, 1, c.clip_samples)
        y = self.segment_embeddings(views[:, 0])  # [B, S, E]
        ctx = self.context(y)  # [B, S, H]
        t = c.context_segments
        c_t = ctx[:, t - 1]  # after the t context segments
        pred = torch.stack([w(c_t) for w in self.predictors], dim=1)  # [B, K, E]: W_k c_t
        target = y[:, t:t + c.prediction_steps]  # [B, K, E]: y_{t+k}, k = 1..K
        steps = cpc_step_losses(pred, target, c.temperature, c.similarity)
        loss = steps.sum()  # eq. (3)
        out = {"loss": loss, "cpc": loss.detach()}
        out.update({f"cpc_k{k + 1}": s.detach() for k, s in enumerate(steps)})
        out.update(emb=self.summarise(ctx).detach(), z1=pred[:, 0].detach(), z2=target[:, 0].detach())
        return out
