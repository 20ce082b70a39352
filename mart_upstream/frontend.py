"""Log-mel frontend shared by every model (MART §3.1, PEMR §3.2, §4.1.3)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torchaudio
from torch import nn

from .config import ConfigError


@dataclass
class FrontendConfig:
    sample_rate: int = 16000
    n_fft: int = 256  # MART §3.1 / PEMR §4.1.3: 256-point FFT
    n_mels: int = 128  # 128 mel bands
    hop_length: int = 128  # PEMR §4.1.3; MART overrides it per hierarchy level
    f_min: float = 0.0
    f_max: Optional[float] = None
    log_offset: float = 1e-6  # COLA: log(mel + 1e-6)
    # Strategies §3: "We standardize the input across all training data": the log-mel minus one mean,
    # divided by one standard deviation, both estimated over every training batch (``Standardiser``)
    standardise: bool = False


# Bounds of a sane frontend (beyond them a config is an error, not a huge allocation).
LIMITS = {"sample_rate": (1000, 384000), "n_fft": (16, 1 << 16), "n_mels": (1, 1024), "hop_length": (1, 1 << 16),
          "win_length": (16, 1 << 16)}


def check_frontend(cfg: FrontendConfig, hop_length: int, win_length: int) -> None:
    """ConfigError naming the first frontend value outside ``LIMITS``."""
    values = {"sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft, "n_mels": cfg.n_mels,
              "hop_length": hop_length, "win_length": win_length}
    for key, value in values.items():
        low, high = LIMITS[key]
        if not low <= value <= high:
            raise ConfigError(f"frontend.{key}={value} is outside [{low}, {high}]")
    if cfg.f_max is not None and not 0 <= cfg.f_min < cfg.f_max <= cfg.sample_rate / 2:
        raise ConfigError(f"frontend: need 0 <= f_min < f_max <= sample_rate/2, got f_min={cfg.f_min}, "
                          f"f_max={cfg.f_max}, sample_rate={cfg.sample_rate}")


class Standardiser(nn.Module):
    """x -> (x - mean) / std with one scalar mean and standard deviation over all the training data.

    In training mode every batch updates ``count``, ``mean`` and ``var``, the exact mean and population
    variance of all the values seen so far (Chan et al.'s pairwise update, in float64, so a long run
    loses no precision), and the batch is standardised with the updated statistics; in eval mode they
    are frozen. Training and inference thus apply the same transform (a batch's own statistics, as
    BatchNorm uses in training, would differ from batch to batch). Before any update (``count`` 0)
    it is the identity. The statistics are buffers: saved in checkpoints, restored with a skipped
    batch, and constants of an ONNX export. Under DDP the buffers of rank 0 are broadcast before each
    forward pass, so the estimate is rank 0's share of the data.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold the values of ``x`` into the running statistics."""
        x = x.detach().double()
        n = float(x.numel())
        if n == 0:
            return
        mean, var = x.mean(), x.var(unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta * delta * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(x)
        scale = (self.var + self.eps).rsqrt()
        return (x - self.mean.to(x.dtype)) * scale.to(x.dtype)

    def extra_repr(self) -> str:
        if self.count.is_meta:
            return ""
        return f"count={int(self.count)}, mean={float(self.mean):.4g}, std={float(self.var) ** 0.5:.4g}"


class LogMel(nn.Module):
    """Waveform [B, T] -> log-mel [B, n_mels, frames]; frames = T // hop + 1 (centred STFT), standardised
    if ``cfg.standardise`` (``Standardiser``).

    Always computed in float32 (outside autocast) on the input's device.
    """

    def __init__(self, cfg: FrontendConfig, hop_length: Optional[int] = None, win_length: Optional[int] = None,
                 normalized: bool = False):
        """``win_length`` (default ``cfg.n_fft``) longer than ``cfg.n_fft`` gets the next power-of-two
        FFT; ``normalized`` divides the power by the window's energy, so log-mels of different
        window lengths share one scale."""
        super().__init__()
        self.cfg = cfg
        self.hop_length = int(hop_length or cfg.hop_length)
        self.win_length = int(win_length or cfg.n_fft)
        check_frontend(cfg, self.hop_length, self.win_length)
        n_fft = max(cfg.n_fft, 1 << (self.win_length - 1).bit_length())
        # The filterbank is computed on the CPU even when the model is built on the meta device (the
        # checkpoint loader's shape check): computing it needs real values.
        with warnings.catch_warnings(), torch.device("cpu"):
            # 128 mel bands over 129 FFT bins leaves some low bands empty; that is the papers' setting.
            warnings.filterwarnings("ignore", message="At least one mel filterbank")
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=cfg.sample_rate,
                n_fft=n_fft,
                win_length=self.win_length,
                normalized=normalized,
                hop_length=self.hop_length,
                f_min=cfg.f_min,
                f_max=cfg.f_max,
                n_mels=cfg.n_mels,
                power=2.0,
            )
        self.standardiser = Standardiser() if cfg.standardise else None

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"LogMel expects a waveform batch [B, T], got shape {tuple(wav.shape)}")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = torch.log(self.mel(wav.float()) + self.cfg.log_offset)
            return spec if self.standardiser is None else self.standardiser(spec)
