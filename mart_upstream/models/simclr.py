"""SimCLR/CLMR-style baseline on the shared FCN-4 encoder (the papers' comparison point)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..encoders import FCNConfig, fcn4_config
from ..frontend import FrontendConfig
from ..losses import nt_xent
from .base import SSLModel


@dataclass
class SimCLRConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: FCNConfig = field(default_factory=fcn4_config)
    clip_samples: int = 59049  # CLMR crop length (3^10 samples, 3.7 s at 16 kHz)
    proj_hidden: int = 512
    proj_dim: int = 256
    temperature: float = 0.5  # CLMR default


class SimCLR(SSLModel):
    tiny_config = {"clip_samples": 4000, "encoder": {"channels": [8, 8, 8, 16]}, "proj_hidden": 16, "proj_dim": 8}

    def forward(self, views):
        self.check_views(views, 2, self.clip_samples)
        b = views.shape[0]
        h = self.encoder(self.frontend(views.flatten(0, 1)))  # [2B, D]
        z = self.head(h).view(b, 2, -1)  # [B, 2, Dp]
        loss = nt_xent(z[:, 0], z[:, 1], self.config.temperature)
        return {"loss": loss, "nt_xent": loss.detach(),
                "emb": h.view(b, 2, -1)[:, 0].detach(), "z1": z[:, 0].detach(), "z2": z[:, 1].detach()}
