"""What every pretraining model shares: a log-mel frontend, an FCN encoder and a projection head."""
from __future__ import annotations

from typing import ClassVar, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..encoders import FCN
from ..frontend import LogMel, Standardiser
from ..layers import ProjectionHead


# how ``embedding.clip_embeddings`` summarises a clip's windows (``SSLModel.window_summary``)
SUMMARIES = ("mean", "mean_std")


def mean_std(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean ‖ population standard deviation of ``x`` over ``dim`` (strategies §4's summary)."""
    return torch.cat([x.mean(dim=dim), x.std(dim=dim, unbiased=False)], dim=-1)


class StreamingSummary:
    """A ``SUMMARIES`` summary of the windows of ``groups`` sounds, fed a chunk of windows at a time, so
    the windows' vectors need not be kept: per sound a running count, mean and (for ``"mean_std"``) sum
    of squared deviations in float64, each chunk's own statistics merged in exactly (Chan, Golub & LeVeque's
    parallel algorithm). ``result()`` equals ``mean`` / ``mean_std`` over all the windows at once within
    float32 rounding, whatever the chunks, their order or how they mix sounds."""

    def __init__(self, kind: str, groups: int):
        if kind not in SUMMARIES:
            raise ValueError(f"summary must be one of {SUMMARIES}, got {kind!r}")
        self.kind, self.groups = kind, int(groups)
        self.count: Optional[torch.Tensor] = None
        self.mean: Optional[torch.Tensor] = None
        self.m2: Optional[torch.Tensor] = None
        self.dtype = torch.float32

    def add(self, x: torch.Tensor, group: torch.Tensor) -> None:
        """``x`` [n, D]: n window vectors; ``group`` [n]: the sound (0 .. groups - 1) each belongs to."""
        if self.count is None:  # allocated once, before the first chunk's work is freed
            b, d = self.groups, x.shape[1]
            self.count = torch.zeros(b, 1, dtype=torch.float64, device=x.device)
            self.mean = torch.zeros(b, d, dtype=torch.float64, device=x.device)
            self.m2 = torch.zeros(b, d, dtype=torch.float64, device=x.device) if self.kind == "mean_std" else None
            self.dtype = x.dtype
        group = group.to(x.device)
        x = x.double()
        nb = torch.zeros_like(self.count).index_add_(0, group, torch.ones_like(x[:, :1]))
        mean_b = torch.zeros_like(self.mean).index_add_(0, group, x) / nb.clamp(min=1)
        n = self.count + nb
        delta = mean_b - self.mean
        share = nb / n.clamp(min=1)  # 0 for sounds without windows in this chunk: they stay as they were
        if self.m2 is not None:
            m2_b = torch.zeros_like(self.m2).index_add_(0, group, (x - mean_b[group]) ** 2)
            self.m2 += m2_b + delta * delta * (self.count * share)
        self.mean += delta * share
        self.count = n

    def result(self) -> torch.Tensor:
        """[groups, D] (``mean``) or [groups, 2D] (``mean_std``: mean ‖ population standard deviation)."""
        if self.count is None:
            raise ValueError("no windows were summarised")
        if self.m2 is None:
            return self.mean.to(self.dtype)
        std = (self.m2 / self.count.clamp(min=1)).sqrt()
        return torch.cat([self.mean, std], dim=-1).to(self.dtype)


class SSLModel(nn.Module):
    """Base class. Subclasses set ``config`` (a dataclass with ``frontend``, ``encoder``,
    ``clip_samples``, ``proj_hidden``, ``proj_dim``) and implement ``forward(views) -> losses``.

    ``views``: [B, V, clip_samples] raw 16 kHz crops (already augmented), V = ``num_views``.
    The returned dict holds ``loss`` (the scalar to minimise) and its named components.

    What the embedding path (``mart_upstream.embedding``) calls, and nothing else, is the model's
    inference interface; a new model overrides what differs:

    * ``window_embedding(wav [B, clip_samples]) -> [B, embedding_dim]``: the vector of one window of
      pretraining length; ``embedding.clip_embeddings`` summarises a clip's windows (``window_summary``).
    * ``sequence_embedding(wav [B, T]) -> [B, embedding_dim]`` (optional): the vector of a whole clip of
      any length at once, for models that summarise a sequence themselves (MelCPC's GRU, musicnn's
      patches); ``clip_embeddings`` then uses it instead of windows.
    * ``window_features(wav [B, L]) -> layers [B, ~L / frame_hop, frame_dim]``: every layer on one frame
      grid; ``embedding.frame_features`` runs it over chunks of ``feature_chunk`` samples with
      ``feature_context`` samples of context on each side.
    * ``clip_samples``, ``embedding_dim``, ``frame_dim``, ``frame_hop``, ``feature_chunk``,
      ``feature_context``, ``window_summary``: the sizes those calls need.

    What the training code, the tests and the benchmarks need to know about a model is stated on its
    class (``tiny_config``, ``has_unused_parameters``, ``upgrade_v1_config``) and read through the
    registry in ``mart_upstream.models``.
    """

    num_views = 2
    # False for a published reference model with fixed weights: embedded and served, never trained
    trainable: ClassVar[bool] = True
    MAX_CLIP_SAMPLES = 16000 * 600  # a pretraining crop / embedding window of at most 10 minutes
    # The real architecture narrowed and shortened (config overrides), for CPU tests and smoke runs.
    tiny_config: ClassVar[dict] = {}
    # Pretraining settings (``optim``/``data``/``run``/``augment`` keys) of this model's paper where they
    # differ from the shared defaults: the first layer above the defaults (a config file overrides them).
    pretrain_defaults: ClassVar[dict] = {}

    @classmethod
    def has_unused_parameters(cls, config) -> bool:
        """Whether training with ``config`` leaves some parameters without a gradient (DDP then has
        to look for them: ``find_unused_parameters``)."""
        return False

    @classmethod
    def upgrade_v1_config(cls, config: dict) -> dict:
        """The config dict of a format-1 checkpoint in today's terms (ConfigError where it cannot be)."""
        return config

    def __init__(self, config):
        super().__init__()
        if not 1 <= config.clip_samples <= self.MAX_CLIP_SAMPLES:
            raise ConfigError(f"clip_samples={config.clip_samples} is outside [1, {self.MAX_CLIP_SAMPLES}]")
        self.config = config
        self.frontend = LogMel(config.frontend)
        self.encoder = FCN(config.encoder)
        self.head = ProjectionHead(self.encoder.out_dim, config.proj_hidden, config.proj_dim)

    @property
    def clip_samples(self) -> int:
        return self.config.clip_samples

    # -- how training feeds the model --------------------------------------------------------
    @property
    def pairing(self) -> str:
        """How the views of a training example are placed in their track (``train.data.PAIRINGS``)."""
        return "independent"

    @property
    def pairing_gap_seconds(self) -> float:
        """Gap between adjacent views (``pairing == "adjacent"``)."""
        return 0.0

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called after every optimizer update (``step`` counts the updates done, of ``total_steps``):
        momentum encoders follow the online weights here."""

    # buffers besides BatchNorm's and the Standardiser's that a training forward pass changes (none of the
    # registered models: MoCo enqueues its keys after the optimizer step)
    forward_buffer_names: ClassVar[tuple] = ()

    def forward_buffers(self) -> List[torch.Tensor]:
        """The buffers a training forward pass changes: BatchNorm running statistics, the input
        Standardiser's and those named in ``forward_buffer_names``. What a skipped batch
        restores; constant buffers (mel filters, windows) and those that change after the optimizer
        step (momentum copies' weights) are left out, so the per-step snapshot stays small."""
        out = [getattr(self, name) for name in self.forward_buffer_names]
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                out += [b for n, b in module.named_buffers(recurse=False)
                        if n in ("running_mean", "running_var", "num_batches_tracked")]
            elif isinstance(module, Standardiser):
                out += list(module.buffers(recurse=False))
        return out

    @property
    def embedding_dim(self) -> int:
        """Width of a window's (and a sequence's) embedding."""
        return self.encoder.out_dim

    @property
    def frame_dim(self) -> int:
        """Width of every frame layer of ``window_features`` (the clip width for the encoder models)."""
        return self.embedding_dim

    @classmethod
    def published_checkpoint(cls) -> Optional[str]:
        """A reference model's checkpoint of its published weights (converted at first use); None for the
        pretraining models, whose default checkpoints are packaged (``checkpoint.packaged_checkpoint``)."""
        return None

    # -- inference (the one embedding path the adapters use; see the class docstring) ------------
    # frame-level features: every layer [B, frames, D] on one frame grid of ``frame_hop`` samples
    @property
    def frame_hop(self) -> int:
        """Samples per output frame: STFT hop x the encoder's time pooling (FCN-4: 128 x 4 = 512)."""
        return self.frontend.hop_length * self.encoder.cfg.time_stride

    @property
    def feature_chunk(self) -> int:
        """Samples processed at once by ``window_features`` for long audio (a multiple of frame_hop)."""
        return self.frame_hop * 1024

    @property
    def feature_context(self) -> int:
        """Extra samples on each side of a chunk so chunk borders do not change the features."""
        return self.frame_hop * 16

    def window_features(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """[B, L] -> every encoder block's frame map on the last block's frame grid, [B, ~L/hop, D].

        Earlier blocks are average-pooled in time to the last block's grid and zero-padded in
        channels to D, so the layers can be weighted and summed (S3PRL's featurizer).
        """
        maps = self.encoder.forward_maps(self.frontend(wav))  # per block [B, T_k, C_k]
        n, d = maps[-1].shape[1], self.encoder.out_dim
        out = []
        for m in maps:
            if m.shape[1] != n:
                m = F.adaptive_avg_pool1d(m.transpose(1, 2), n).transpose(1, 2)
            if m.shape[2] < d:
                m = F.pad(m, (0, d - m.shape[2]))
            out.append(m)
        return out

    @property
    def window_summary(self) -> str:
        """How ``embedding.clip_embeddings`` summarises the windows of a clip: ``"mean"``, or
        ``"mean_std"`` (mean ‖ standard deviation) for models whose config asks for it (``summary``)."""
        return getattr(self.config, "summary", "mean")

    def window_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, clip_samples] window -> [B, D]: the representation a window of pretraining length gets (the
        encoder's output, before the head)."""
        return self.encoder(self.frontend(wav))

    def forward(self, views: torch.Tensor) -> Dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def check_views(views: torch.Tensor, num_views: int, clip_samples: int) -> None:
        if views.dim() != 3 or views.shape[1] != num_views:
            raise ValueError(f"expected views [B, {num_views}, T], got shape {tuple(views.shape)}")
        if views.shape[2] != clip_samples:
            raise ValueError(f"expected crops of {clip_samples} samples, got {views.shape[2]}")
