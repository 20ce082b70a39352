"""MART: hierarchical audio cropping, part-whole transformer and hierarchical contrastive loss.

Paper: ``../shared/papers/000_*`` (Yao et al., WWW'24 Companion), §2.1-2.3.
Views: view 1 goes through cropping + encoder + part-whole transformer (ŝ); view 2, another
augmented crop of the same track, is encoded as a whole (s̃⁰) and is ŝ⁰'s positive in eq. (5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

from ..encoders import FCNConfig, fcn7_config
from ..frontend import FrontendConfig, LogMel
from ..layers import TransformerBlock
from ..losses import HCL_FORMS, hierarchical_contrastive
from .base import SSLModel

LEVEL_WINDOWS = ("hop", "paper")


@dataclass
class MartConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: FCNConfig = field(default_factory=fcn7_config)  # MART §3.1: FCN-7 projection encoder
    clip_samples: int = 128000  # whole clip S⁰: 8 s at 16 kHz
    parts: int = 2  # M (MART §2.1, Fig. 1)
    levels: int = 4  # N
    # hop at level N-1; level n uses finest_hop * M^(N-1-n), so all levels give equal-size log-mels
    # (MART §2.2, which gives no value). 125 samples keeps every frame grid on whole milliseconds:
    # FCN-7 frames are 16 x 125 = 2000 samples (125 ms), 8 per 1 s part, 64 per 8 s whole.
    finest_hop: int = 125
    pwt_layers: int = 3  # MART §3.1: three stacked part-whole transformers
    pwt_heads: int = 3  # ... each with three attention heads
    pwt_head_dim: int = 128
    pwt_ff_mult: int = 4
    pwt_dropout: float = 0.1
    pwt_lambda: float = 1.0  # λⁿ in eq. (1)-(2), the same at every level
    proj_hidden: int = 512  # head Linear(512)-ReLU-Linear(256)
    proj_dim: int = 256
    temperature: float = 0.5
    # Each level's STFT window. "hop": win_length = max(n_fft, hop), n_fft the next power of two, power
    # normalised by the window energy (one scale for all levels), so every level reads all its samples.
    # "paper": the 256-sample window of MART §3.1 at every level; with hops of 1000 and 500 samples the
    # two coarsest levels then read only 26% and 51% of their audio.
    level_window: str = "hop"
    use_pwt: bool = True  # False: "w/o PWT" ablation (MART Table 4)
    use_hcl: bool = True  # False: "w/o HCL" ablation
    # L^pw of eq. (3)-(5). "batch": part-whole InfoNCE with in-batch negatives added to the cross-view
    # term (losses.part_whole_infonce). "paper": eq. (5) as printed, which the part-whole sum can
    # satisfy without the cross-view pair agreeing (see README, "MART's part-whole term").
    hcl: str = "batch"


def level_lengths(clip_samples: int, parts: int, levels: int) -> List[int]:
    """Clip length at each level n: L⁰ / Mⁿ; L⁰ must split evenly down to the last level."""
    if parts < 2 or levels < 1:
        raise ValueError(f"MART needs parts M >= 2 and levels N >= 1, got M={parts}, N={levels}")
    if clip_samples % parts ** (levels - 1):
        raise ValueError(
            f"clip_samples={clip_samples} does not split into M^(N-1)={parts ** (levels - 1)} equal parts"
        )
    return [clip_samples // parts**n for n in range(levels)]


def hierarchical_crop(x: torch.Tensor, parts: int, levels: int) -> List[torch.Tensor]:
    """Hierarchical audio cropping (MART §2.1): [B, L⁰] -> levels [B, Mⁿ, L⁰/Mⁿ].

    Level n+1 splits every clip of level n into M equal, contiguous parts, so part j of whole m
    is clip m*M + j and lies inside it.
    """
    lengths = level_lengths(x.shape[-1], parts, levels)
    return [x.reshape(x.shape[0], parts**n, length) for n, length in enumerate(lengths)]


def crop_spans(clip_samples: int, parts: int, levels: int) -> List[torch.Tensor]:
    """[start, end) sample spans of every clip per level, [Mⁿ, 2], matching ``hierarchical_crop``."""
    out = []
    for n, length in enumerate(level_lengths(clip_samples, parts, levels)):
        start = torch.arange(parts**n) * length
        out.append(torch.stack([start, start + length], dim=1))
    return out


class PartWholeLayer(nn.Module):
    """One part-whole transformer: the interaction unit applied to every adjacent level pair.

    eq. (1): ŝⁿ_m = s̃ⁿ_m + λⁿ Transformer(Qⁿ, Kⁿ⁺¹, Vⁿ⁺¹)   (a whole queries its M parts)
    eq. (2): ŝⁿ⁺¹ = s̃ⁿ⁺¹ + λⁿ⁺¹ Transformer(Qⁿ⁺¹, Kⁿ, Vⁿ)  (the parts query their whole)
    All part-whole pairs of all levels are batched into one call of each unit. Intermediate levels
    are whole and part at once and receive both updates.
    """

    def __init__(self, d: int, heads: int, head_dim: int, ff_mult: int, dropout: float, lam: float):
        super().__init__()
        self.whole_from_parts = TransformerBlock(d, heads, head_dim, ff_mult, dropout)
        self.parts_from_whole = TransformerBlock(d, heads, head_dim, ff_mult, dropout)
        self.lam = lam

    def forward(self, levels: List[torch.Tensor], parts: int) -> List[torch.Tensor]:
        if len(levels) == 1:
            return levels
        b, d = levels[0].shape[0], levels[0].shape[-1]
        wholes = torch.cat(levels[:-1], dim=1)  # [B, W, D], W = Σ_{n<N-1} Mⁿ
        kids = torch.cat(levels[1:], dim=1)  # [B, W*M, D], the parts of each whole in order
        w = wholes.shape[1]
        wq = wholes.reshape(b * w, 1, d)
        pq = kids.reshape(b * w, parts, d)
        up = self.whole_from_parts(wq, pq).reshape(b, w, d)  # eq. (1)
        down = self.parts_from_whole(pq, wq).reshape(b, w * parts, d)  # eq. (2)
        sizes = [x.shape[1] for x in levels]
        up_split = list(torch.split(up, sizes[:-1], dim=1)) + [torch.zeros_like(levels[-1])]
        down_split = [torch.zeros_like(levels[0])] + list(torch.split(down, sizes[1:], dim=1))
        return [s + self.lam * (u + v) for s, u, v in zip(levels, up_split, down_split)]


class PartWholeTransformer(nn.Module):
    def __init__(self, cfg: MartConfig, d: int):
        super().__init__()
        self.parts = cfg.parts
        self.layers = nn.ModuleList(
            PartWholeLayer(d, cfg.pwt_heads, cfg.pwt_head_dim, cfg.pwt_ff_mult, cfg.pwt_dropout, cfg.pwt_lambda)
            for _ in range(cfg.pwt_layers)
        )

    def forward(self, levels: List[torch.Tensor], return_all: bool = False):
        """levels: s̃ [B, Mⁿ, D] per level -> ŝ per level (and every layer's output if return_all)."""
        outs = []
        for layer in self.layers:
            levels = layer(levels, self.parts)
            outs.append(levels)
        return outs if return_all else levels


class Mart(SSLModel):
    tiny_config = {"clip_samples": 8000, "finest_hop": 50, "encoder": {"channels": [8, 8, 8, 8, 8, 8, 16]},
                   "pwt_head_dim": 8, "proj_hidden": 16, "proj_dim": 8}

    @classmethod
    def has_unused_parameters(cls, config: MartConfig) -> bool:
        # "w/o PWT" builds the part-whole transformer but skips it; "w/o HCL" trains on the whole only,
        # which the last layer's parts-from-whole attention does not reach
        return not (config.use_pwt and config.use_hcl)

    def __init__(self, config: MartConfig):
        super().__init__(config)
        c = config
        self.lengths = level_lengths(c.clip_samples, c.parts, c.levels)
        hops = [c.finest_hop * c.parts ** (c.levels - 1 - n) for n in range(c.levels)]
        # One frontend per level: every clip, whatever its length, gives the same number of frames.
        if c.level_window not in LEVEL_WINDOWS:
            raise ValueError(f"MartConfig.level_window must be one of {LEVEL_WINDOWS}, got {c.level_window!r}")
        if c.hcl not in HCL_FORMS:
            raise ValueError(f"MartConfig.hcl must be one of {HCL_FORMS}, got {c.hcl!r}")
        if c.level_window == "hop":
            self.level_frontends = nn.ModuleList(
                LogMel(c.frontend, hop_length=h, win_length=max(c.frontend.n_fft, h), normalized=True) for h in hops)
        else:
            self.level_frontends = nn.ModuleList(LogMel(c.frontend, hop_length=h) for h in hops)
        self.frontend = self.level_frontends[0]
        self.pwt = PartWholeTransformer(c, self.encoder.out_dim)

    def encode_levels(self, x: torch.Tensor, levels: int) -> List[torch.Tensor]:
        """[B, L⁰] -> s̃ per level [B, Mⁿ, D]: crop, per-level log-mel, one batched encoder call."""
        b = x.shape[0]
        crops = hierarchical_crop(x, self.config.parts, self.config.levels)[:levels]
        specs = [fe(c.flatten(0, 1)) for fe, c in zip(self.level_frontends, crops)]  # [B*Mⁿ, F, T]
        h = self.encoder(torch.cat(specs, dim=0))
        sizes = [s.shape[0] for s in specs]
        return [y.view(b, -1, y.shape[-1]) for y in torch.split(h, sizes, dim=0)]

    def part_whole(self, x: torch.Tensor, return_all: bool = False):
        """Whole clip [B, L⁰] -> ŝ per level (the part-whole transformer's outputs)."""
        levels = self.encode_levels(x, self.config.levels)
        return self.pwt(levels, return_all) if self.config.use_pwt else levels

    def window_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, L⁰] -> ŝ⁰, the whole clip's part-whole transformer output [B, D]."""
        return self.part_whole(wav)[0][:, 0]

    @property
    def frame_hop(self) -> int:
        """FCN-7 frames at the finest level's hop: 125 x 16 = 2000 samples (125 ms) by default."""
        return self.config.finest_hop * self.encoder.cfg.time_stride

    @property
    def feature_chunk(self) -> int:
        return self.config.clip_samples  # whole clips, as in pretraining

    @property
    def feature_context(self) -> int:
        return 0

    def window_features(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """Whole clip [B, L⁰] -> layers on the FCN-7 frame grid, each [B, L⁰ / frame_hop, D]:
        the encoder's frame map at the finest hop, then the finest-level parts s̃ᴺ⁻¹ and ŝᴺ⁻¹ after
        every part-whole transformer layer, each part repeated over the frames it spans."""
        c = self.config
        n = -(-c.clip_samples // self.frame_hop)
        frames = self.encoder.frame_map(self.level_frontends[-1](wav))[:, :n]
        levels = self.encode_levels(wav, c.levels)
        outs = [levels] + (self.pwt(levels, return_all=True) if c.use_pwt else [])
        finest = c.parts ** (c.levels - 1)
        part_of_frame = torch.arange(n, device=wav.device) * self.frame_hop * finest // c.clip_samples
        return [frames] + [o[-1][:, part_of_frame] for o in outs]

    def forward(self, views: torch.Tensor) -> Dict[str, torch.Tensor]:
        c = self.config
        self.check_views(views, 2, c.clip_samples)
        if c.use_pwt:
            s_hat = self.part_whole(views[:, 0])
        else:
            s_hat = self.encode_levels(views[:, 0], c.levels if c.use_hcl else 1)
        z_hat = [self.head(s) for s in s_hat]
        z_tilde0 = self.head(self.encoder(self.frontend(views[:, 1])))
        loss, cross = hierarchical_contrastive(z_hat, z_tilde0, c.parts, c.temperature, use_part_whole=c.use_hcl,
                                               form=c.hcl, return_cross=True)
        return {"loss": loss, "hcl": loss.detach(), "cross": cross, "emb": s_hat[0][:, 0].detach(),
                "z1": z_hat[0][:, 0].detach(), "z2": z_tilde0.detach()}
