"""MusiCNN (Pons and Serra, 2019), a frozen reference: a PyTorch port of the published music taggers.

Source: the ``musicnn`` package 0.1.0 (github jordipons/musicnn, ISC licence): ``models.py``
(``build_musicnn``, ``frontend``, ``timbral_block``, ``tempo_block``, ``midend``, ``backend``),
``extractor.py`` (``batch_data``, ``extractor``) and ``configuration.py``. The weights are the package's
own (``MTT_musicnn``: MagnaTagATune, ``MSD_musicnn``: Million Song Dataset), converted by
``mart_upstream.musicnn_weights``; this model is never trained here.

* Front end (``extractor.batch_data``): 16 kHz, |STFT|² with a 512-point Hann window and hop 256
  (centred frames; librosa 0.9's zero padding), 96 mel bands (librosa's defaults: Slaney scale and
  area normalisation, 0-8 kHz), rounded to float16, then ``log10(10000 x + 1)`` in float32. The spectrogram is cut into patches of 187 frames (3 s: ``time_to_frames(3) + 1``).
* Network (``build_musicnn``): batch norm of the input; timbral filters (7 frames x 38 and x 67 mel
  bands, 204 each) and temporal filters (128, 64 and 32 frames x 1 band, 51 each), each conv - ReLU -
  batch norm - max over frequency; a dense mid-end of three 7-frame convolutions (64 filters, the last
  two residual) over the front end's 561 channels; a back-end of max and mean pooling over time
  (753 + 753, interleaved as TensorFlow flattens them), batch norm, a 200-unit dense layer (ReLU, batch
  norm: ``penultimate``) and the 50 tag logits.

Frame features: the front end's and mid-end's maps per frame (hop 256 samples, 16 ms), each patch of 187
frames computed on its own as musicnn does. Clip features: ``penultimate`` (default), ``max_pool``,
``mean_pool`` or the tag probabilities of every patch, averaged over the patches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..errors import UsageError
from .base import SSLModel

# the published models this port loads (musicnn 0.1.0 also ships MTT_vgg and MSD_vgg, a different network)
VARIANTS = ("MTT_musicnn", "MSD_musicnn")
# musicnn's frame layers, in the order of its dense mid-end (models.build_musicnn: midend_features)
FRAME_LAYERS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3")
SCENE_LAYERS = ("penultimate", "max_pool", "mean_pool", "taggram")
TF_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon
PATCHES_PER_PASS = 16  # 3 s patches through the network at once: memory stays flat for any length


@dataclass
class MusicnnFrontendConfig:
    sample_rate: int = 16000  # configuration.SR
    n_fft: int = 512  # configuration.FFT_SIZE (the Hann window is as long)
    hop_length: int = 256  # configuration.FFT_HOP
    n_mels: int = 96  # configuration.N_MELS
    log_scale: float = 10000.0  # extractor.batch_data: np.log10(10000 * x + 1)
    patch_frames: int = 187  # extractor: librosa.time_to_frames(3 s, sr, n_fft, hop) + 1


@dataclass
class MusicnnConfig:
    variant: str = "MTT_musicnn"  # which published weights (VARIANTS)
    frontend: MusicnnFrontendConfig = field(default_factory=MusicnnFrontendConfig)
    frontend_filters: float = 1.6  # build_musicnn: num_filt_frontend (204 timbral, 51 temporal filters)
    midend_filters: int = 64  # define_model: num_filt_midend
    backend_units: int = 200  # define_model: num_units_backend
    num_classes: int = 50  # 50 tags (MTT_LABELS, MSD_LABELS)
    scene_layer: str = "penultimate"  # the clip embedding (SCENE_LAYERS)


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale (librosa ``hz_to_mel``, htk=False): linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    return torch.where(f >= min_log_hz, min_log_hz / f_sp + torch.log(f / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """[n_mels, n_fft / 2 + 1] float32: ``librosa.filters.mel`` with the defaults musicnn uses (htk=False,
    norm="slaney", fmin=0, fmax=sr/2), computed in float64 and rounded to float32 where librosa rounds
    (the triangles, then their area normalisation), so the weights are librosa's to the last bit."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = _hz_to_mel(torch.tensor([0.0, sample_rate / 2], dtype=torch.float64))
    mel_f = _mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))
    fdiff = mel_f.diff()
    ramps = mel_f[:, None] - freqs[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0).float()
    enorm = 2.0 / (mel_f[2:] - mel_f[:-2])
    return (weights.double() * enorm[:, None]).float()


class MusicnnFrontend(nn.Module):
    """Waveform -> musicnn's log-mel frames [B, frames, n_mels] (float32 holding float16 values)."""

    def __init__(self, cfg: MusicnnFrontendConfig):
        super().__init__()
        self.cfg = cfg
        n_freqs = cfg.n_fft // 2 + 1
        # computed again from the config, so not stored in checkpoints (on the CPU: also when the model is
        # built on the meta device to check a checkpoint's shapes)
        with torch.device("cpu"):
            fb = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
        self.register_buffer("mel_fb", fb.double().T.contiguous(), persistent=False)  # [n_freqs, n_mels]
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64),
                             persistent=False)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames of a centred STFT of ``num_samples`` samples (librosa: 1 + T // hop)."""
        return 1 + num_samples // self.cfg.hop_length

    def mel_power(self, wav: torch.Tensor, center: bool = True) -> torch.Tensor:
        """[B, T] -> mel power [B, frames, n_mels] in float64. ``center``: frame i centred at sample
        i * hop, the signal zero padded by n_fft / 2 on both sides (librosa 0.9's ``pad_mode="constant"``);
        otherwise frame i starts at sample i * hop."""
        x = wav.double()
        if center:
            x = F.pad(x, (self.cfg.n_fft // 2, self.cfg.n_fft // 2))
        frames = x.unfold(-1, self.cfg.n_fft, self.cfg.hop_length)  # [B, frames, n_fft]
        power = torch.fft.rfft(frames * self.window, dim=-1).abs().square()
        return power @ self.mel_fb

    def compress(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel power -> musicnn's log-mel: ``astype(np.float16)``, then ``np.log10(10000 * x + 1)``, which
        numpy 1.x computes in float32 (the int 10000 promotes float16 to float32)."""
        x = mel.float().half().float()
        return torch.log10(x * self.cfg.log_scale + 1.0)

    def forward(self, wav: torch.Tensor, center: bool = True) -> torch.Tensor:
        return self.compress(self.mel_power(wav, center))


def _bn(channels: int, dims: int = 2) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=TF_BN_EPS)


class FrequencyMaxBlock(nn.Module):
    """models.timbral_block / tempo_block: conv - ReLU - batch norm - max over all frequency bands.
    ``time_pad``: zeros before and after in time (timbral: 3 and 3 with 'valid' convolution; temporal:
    TensorFlow's 'same' padding, (k - 1) // 2 before and the rest after)."""

    def __init__(self, filters: int, kernel: tuple, time_pad: tuple):
        super().__init__()
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = _bn(filters)
        self.time_pad = time_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, T, F] -> [B, filters, T]
        return self.bn(F.relu(self.conv(F.pad(x, (0, 0) + self.time_pad)))).amax(dim=3)


class MidendLayer(nn.Module):
    """models.midend: a 7-frame convolution over all channels ('valid' after 3 zeros on each side in
    time), ReLU, batch norm."""

    def __init__(self, in_channels: int, filters: int, width: int = 7):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, filters, width)
        self.bn = _bn(filters, dims=1)
        self.pad = (width // 2, width // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, filters, T]
        return self.bn(F.relu(self.conv(F.pad(x, self.pad))))


class Musicnn(SSLModel):
    """The musicnn network over 3 s log-mel patches; see the module docstring."""

    trainable = False  # a published model: mart-pretrain refuses it, the tests do not train it

    def __init__(self, config: MusicnnConfig):
        nn.Module.__init__(self)  # not SSLModel.__init__: no FCN encoder nor projection head
        c = config
        if c.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {c.variant!r}")
        if c.scene_layer not in SCENE_LAYERS:
            raise ConfigError(f"scene_layer must be one of {SCENE_LAYERS}, got {c.scene_layer!r}")
        fc = c.frontend
        if fc.n_mels < 2 or fc.patch_frames < 1 or fc.hop_length < 1 or fc.n_fft < 2:
            raise ConfigError(f"frontend: n_mels >= 2, n_fft >= 2, hop_length >= 1, patch_frames >= 1 expected, "
                              f"got {fc}")
        self.config = c
        self.frontend = MusicnnFrontend(fc)
        self.input_bn = _bn(1)  # models.frontend: batch norm of the log-mel input
        timbral, temporal = int(c.frontend_filters * 128), int(c.frontend_filters * 32)
        # timbral: 7 frames x 40% and 70% of the mel bands; temporal: 128, 64, 32 frames x 1 band
        self.timbral = nn.ModuleList(FrequencyMaxBlock(timbral, (7, int(share * fc.n_mels)), (3, 3))
                                     for share in (0.4, 0.7))
        self.temporal = nn.ModuleList(FrequencyMaxBlock(temporal, (k, 1), ((k - 1) // 2, k - 1 - (k - 1) // 2))
                                      for k in (128, 64, 32))
        front = 2 * timbral + 3 * temporal
        m = c.midend_filters
        self.midend = nn.ModuleList([MidendLayer(front, m), MidendLayer(m, m), MidendLayer(m, m)])
        self.widths = (2 * timbral, 3 * temporal, m, m, m)  # FRAME_LAYERS
        dense = sum(self.widths)
        # models.backend: [max ‖ mean] over time -> batch norm -> dense (ReLU) -> batch norm -> logits
        self.pool_bn = _bn(2 * dense, dims=1)
        self.dense = nn.Linear(2 * dense, c.backend_units)
        self.dense_bn = _bn(c.backend_units, dims=1)
        self.classifier = nn.Linear(c.backend_units, c.num_classes)
        self.requires_grad_(False)

    # -- what the rest of the project reads ----------------------------------------------------
    @property
    def patch_samples(self) -> int:
        """Samples between the starts of two 3 s patches (187 frames x hop 256 = 47872)."""
        return self.config.frontend.patch_frames * self.frontend.hop_length

    @property
    def clip_samples(self) -> int:
        return self.patch_samples

    @property
    def frame_hop(self) -> int:
        return self.frontend.hop_length

    @property
    def frame_dim(self) -> int:
        """Width of the frame layers: the dense mid-end vector (753), each layer in its own slot."""
        return sum(self.widths)

    @property
    def embedding_dim(self) -> int:
        c = self.config
        return {"penultimate": c.backend_units, "taggram": c.num_classes}.get(c.scene_layer, self.frame_dim)

    @property
    def feature_chunk(self) -> int:
        return self.patch_samples  # one patch per chunk, as musicnn cuts the spectrogram

    @property
    def feature_context(self) -> int:
        return self.frame_hop  # the STFT of a patch's first frame reaches half a window (one hop) back

    @property
    def window_summary(self) -> str:
        return "mean"

    @classmethod
    def published_checkpoint(cls, variant: str = VARIANTS[0]) -> str:
        """The converted checkpoint of the musicnn package's ``variant`` (see ``musicnn_weights``)."""
        from ..musicnn_weights import musicnn_checkpoint  # it reads the checkpoint module, which reads this one

        return musicnn_checkpoint(variant)

    def forward(self, views):
        raise UsageError("musicnn is a published reference model with fixed weights; it is not trained here")

    # -- the network ----------------------------------------------------------------------------
    def patch_maps(self, logmel: torch.Tensor) -> Dict[str, torch.Tensor]:
        """[P, frames, n_mels] log-mel patches -> musicnn's frame layers [P, frames, C] (``FRAME_LAYERS``)
        and the dense mid-end ``midend`` [P, C, frames] (channels first, for the back-end)."""
        x = self.input_bn(logmel[:, None])  # [P, 1, T, F]
        timbral = torch.cat([b(x) for b in self.timbral], dim=1)
        temporal = torch.cat([b(x) for b in self.temporal], dim=1)
        front = torch.cat([timbral, temporal], dim=1)  # [P, 561, T]
        cnn1 = self.midend[0](front)
        cnn2 = self.midend[1](cnn1) + cnn1  # residual connections (models.midend)
        cnn3 = self.midend[2](cnn2) + cnn2
        maps = {"timbral": timbral, "temporal": temporal, "cnn1": cnn1, "cnn2": cnn2, "cnn3": cnn3}
        out = {k: v.transpose(1, 2) for k, v in maps.items()}
        out["midend"] = torch.cat([front, cnn1, cnn2, cnn3], dim=1)  # [P, 753, T]
        return out

    def backend(self, midend: torch.Tensor) -> Dict[str, torch.Tensor]:
        """[P, C, frames] dense mid-end -> ``max_pool``, ``mean_pool`` [P, C], ``penultimate``
        [P, backend_units], ``logits`` and ``taggram`` (sigmoid) [P, num_classes]."""
        max_pool, mean_pool = midend.amax(dim=2), midend.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF: concat([max, mean], 2), flattened
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(flat))))
        logits = self.classifier(penultimate)
        return {"max_pool": max_pool, "mean_pool": mean_pool, "penultimate": penultimate, "logits": logits,
                "taggram": torch.sigmoid(logits)}

    def patch_outputs(self, logmel: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Log-mel patches [P, frames, n_mels] -> everything ``musicnn.extractor`` returns per patch."""
        maps = self.patch_maps(logmel)
        out = self.backend(maps.pop("midend"))
        out.update(maps)
        return out

    # -- musicnn's patches ------------------------------------------------------------------------
    def patch_count(self, num_samples: int) -> int:
        """Patches of a clip as ``extractor.batch_data`` cuts them: non-overlapping, a tail shorter than a
        patch left out, and at least one (a clip shorter than a patch is zero padded to one; musicnn itself
        has no patch to return then)."""
        return max(1, self.frontend.num_frames(num_samples) // self.config.frontend.patch_frames)

    def patch_logmels(self, wav: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """[T] waveform -> log-mels [count, 187, n_mels] of its patches first .. first + count - 1: frames
        of one centred log-mel of the whole clip, computed only where these patches need it."""
        if wav.dim() != 1:
            raise ValueError(f"expected one waveform [T], got shape {tuple(wav.shape)}")
        frames, hop, half = self.config.frontend.patch_frames, self.frame_hop, self.frontend.cfg.n_fft // 2
        padded = F.pad(wav, (half, half))  # the centred STFT's zero padding
        start, end = first * frames * hop, ((first + count) * frames - 1) * hop + 2 * half
        part = F.pad(padded[start:end], (0, max(0, end - max(start, padded.shape[0]))))
        logmel = self.frontend(part[None], center=False)[0]
        return logmel.view(count, frames, -1)

    def patches(self, wav: torch.Tensor) -> torch.Tensor:
        """[T] waveform -> all its log-mel patches [P, 187, n_mels] (``patch_count``)."""
        return self.patch_logmels(wav, 0, self.patch_count(wav.shape[-1]))

    def sequence_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, embedding_dim]: the ``scene_layer`` of every patch of each clip (``patch_count``),
        averaged, as ``musicnn.extractor`` computes it per patch; ``PATCHES_PER_PASS`` patches at a time."""
        layer, out = self.config.scene_layer, []
        for w in wav:
            n = self.patch_count(w.shape[0])
            total = sum(self.patch_outputs(self.patch_logmels(w, i, min(PATCHES_PER_PASS, n - i)))[layer].sum(dim=0)
                        for i in range(0, n, PATCHES_PER_PASS))
            out.append(total / n)
        return torch.stack(out)

    def window_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, patch_samples] windows -> [B, embedding_dim]: each window as one patch (its own log-mel)."""
        frames = self.config.frontend.patch_frames
        logmel = self.frontend(wav)[:, :frames]
        return self.patch_outputs(logmel)[self.config.scene_layer]

    def window_features(self, wav: torch.Tensor) -> List[torch.Tensor]:
        """[B, frame_hop + L + frame_hop] (a chunk of L <= patch_samples samples with one hop of signal on
        each side, as ``embedding.frame_features`` passes it) -> the layers [B, 1 + L / hop + 1, frame_dim].

        The chunk is one musicnn patch (zero padded to 187 frames when shorter): frame i centred at sample
        i * hop of the chunk. Each layer fills its own slot of the 753-d dense mid-end vector (zeros
        elsewhere), so the sum of the layers is that vector; the first and last frames stand for the
        context and are dropped by ``frame_features``."""
        hop, frames = self.frame_hop, self.config.frontend.patch_frames
        n = (wav.shape[1] - 2 * hop) // hop
        wav = F.pad(wav, (0, max(0, self.patch_samples + 2 * hop - wav.shape[1])))
        logmel = self.frontend(wav, center=False)[:, :frames]  # frame i: samples [i - 1, i + 1) * hop of the chunk
        maps = self.patch_maps(logmel)
        out, offset = [], 0
        for name, width in zip(FRAME_LAYERS, self.widths):
            x = maps[name][:, :n]
            out.append(F.pad(x, (offset, self.frame_dim - offset - width, 1, 1)))
            offset += width
        return out
