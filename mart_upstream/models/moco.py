"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning") on the shared FCN-4 encoder, one of PEMR's baselines (PEMR Table 2).

A query encoder f_q with an MLP head encodes view 1; a key encoder f_k, the momentum copy of the
query encoder and head, encodes view 2. The query's positive is its key; its negatives are a queue of
K keys of earlier batches (MoCo §3.1):

    L_q = −log exp(q·k₊/τ) / Σ_{i=0..K} exp(q·k_i/τ)   (MoCo eq. 1)
    θ_k ← m θ_k + (1 − m) θ_q                           (MoCo eq. 2)

After each update its batch's keys (gathered from every rank in the forward pass) replace the oldest
ones of the queue (MoCo Algorithm 1: update, momentum update, enqueue; ``after_optimizer_step``). The
key encoder's weights, the queue and its pointer are buffers: no gradient, out of the optimizer, saved
in checkpoints; a batch skipped for a non-finite loss gets no update and so enqueues nothing. The
downstream representation is the query encoder's output.

Shuffle-BN (MoCo §3.3; ``shuffle_bn``, on by default as in the paper): BatchNorm normalises each example
with statistics of the examples it is encoded with. If a query and its key are normalised with the
statistics of the same set of examples, the pair can be told apart from the queue's keys by those
statistics alone ("intra-batch communication ... leaks information", MoCo §3.3). So the keys' examples
are encoded in a different grouping from the queries':

* under torchrun (several processes), as MoCo's code: the global batch of key views is shuffled across
  ranks (a permutation drawn on rank 0, ``distributed.batch_shuffle``), each rank encodes its slice with
  its own BatchNorm statistics, and the keys are shuffled back; queries are normalised per rank;
* in one process, as MoCo's single-GPU demo (SplitBatchNorm): the batch is encoded in
  ``shuffle_bn_splits`` sub-batches, each with its own BatchNorm statistics: the queries in their
  order, the keys after a random permutation (shuffled back after encoding).

``shuffle_bn=false`` encodes queries and keys each as one batch (the form before this option).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..distributed import batch_shuffle, batch_unshuffle, gather_with_grad, is_distributed
from ..encoders import FCNConfig, fcn4_config
from ..frontend import FrontendConfig
from ..losses import moco_loss
from .byol import PEMR_BASELINE_TINY, PEMR_BASELINE_TRAINING
from .momentum import MomentumModel


@dataclass
class MoCoConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)  # hop 128 (PEMR §4.1.3)
    encoder: FCNConfig = field(default_factory=fcn4_config)  # FCN-4 (PEMR Table 2)
    clip_samples: int = 59049  # crop length as CLMR, PEMR and SimCLR here (3^10 samples, 3.7 s)
    # PEMR §4.1.3: all its methods share the projection head (Linear(512)-ReLU-Linear(256)); MoCo v2's
    # own head has the same form with 2048 hidden units and 128 outputs.
    proj_hidden: int = 512
    proj_dim: int = 256
    queue_size: int = 65536  # K, MoCo's default (MoCo §4)
    momentum: float = 0.999  # m (MoCo §3.2, eq. 2)
    temperature: float = 0.2  # τ (MoCo v2 §2; MoCo v1: 0.07)
    shuffle_bn: bool = True  # MoCo §3.3 (see the module's docstring)
    # sub-batches with their own BatchNorm statistics in one process (MoCo's single-GPU demo: 8 of 64
    # examples at batch 512); 2 keeps 24 examples per statistic at PEMR's batch 48
    shuffle_bn_splits: int = 2


class MoCo(MomentumModel):
    tiny_config = {**PEMR_BASELINE_TINY, "queue_size": 16}
    # MoCo v2's SGD (lr 0.03, batch 256) is an ImageNet setting for an optimizer the loop does not have.
    pretrain_defaults = PEMR_BASELINE_TRAINING
    copy_names = ("key_encoder", "key_head")
    momentum_field = "momentum"

    def __init__(self, config: MoCoConfig):
        super().__init__(config)
        c = config
        if c.queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {c.queue_size}")
        if not c.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {c.temperature}")
        if c.shuffle_bn_splits < 1:
            raise ConfigError(f"shuffle_bn_splits must be at least 1, got {c.shuffle_bn_splits}")
        self.make_copies()  # f_k and its head, initialised to f_q's (MoCo Algorithm 1)
        # random unit keys until real ones fill it (MoCo's code)
        self.register_buffer("queue", F.normalize(torch.randn(c.queue_size, c.proj_dim), dim=1))  # [K, Dp]
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # where the next key goes
        self.pending_keys = None  # the last training forward's keys, enqueued after the optimizer step

    def _in_splits(self, encoder, spec: torch.Tensor) -> torch.Tensor:
        """``encoder`` over ``spec`` [B, F, T] in ``shuffle_bn_splits`` sub-batches (one process, training):
        each sub-batch normalised with its own BatchNorm statistics."""
        n = min(self.config.shuffle_bn_splits, spec.shape[0])
        if n <= 1:
            return encoder(spec)
        return torch.cat([encoder(part) for part in spec.tensor_split(n)])

    def encode_keys(self, key_views: torch.Tensor) -> torch.Tensor:
        """Key views [B, T] -> keys [B, Dp] (no gradient), with Shuffle-BN while training."""
        with torch.no_grad():
            spec = self.frontend(key_views)
            if not (self.training and self.config.shuffle_bn):
                return self.key_head(self.key_encoder(spec))
            if is_distributed():  # across ranks, MoCo's code
                shuffled, unshuffle = batch_shuffle(spec)
                return batch_unshuffle(self.key_head(self.key_encoder(shuffled)), unshuffle)
            perm = torch.randperm(spec.shape[0], device=spec.device)  # one process: split BatchNorm, shuffled
            k = self.key_head(self._in_splits(self.key_encoder, spec[perm]))
            return k[torch.argsort(perm)]

    def forward(self, views):
        self.check_views(views, 2, self.clip_samples)
        spec = self.frontend(views[:, 0])
        split = self.training and self.config.shuffle_bn and not is_distributed()
        h = self._in_splits(self.encoder, spec) if split else self.encoder(spec)  # [B, D]
        q = self.head(h)
        k = self.encode_keys(views[:, 1])
        loss = moco_loss(q, k, self.queue, self.config.temperature)
        if self.training:  # every rank's keys (a collective: gathered here, where all ranks take part)
            with torch.no_grad():
                self.pending_keys = gather_with_grad(F.normalize(k.float(), dim=-1))
        return {"loss": loss, "moco": loss.detach(), "emb": h.detach(), "z1": q.detach(), "z2": k.detach()}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """``keys`` [N, Dp] replace the oldest keys of the queue (MoCo §3.1), wrapping around its end: N
        need not divide K; of more than K keys the newest K stay, where writing all N in turn leaves them."""
        size, n = self.queue.shape[0], keys.shape[0]
        keys = keys[-size:]
        idx = (self.queue_ptr + (n - keys.shape[0]) + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """MoCo eq. (2): the key encoder and head follow the query's after every update; then the step's
        keys are enqueued (MoCo Algorithm 1: update, momentum update, enqueue). A batch skipped by the
        training loop (no update) thus leaves the queue as it was."""
        self.follow(self.config.momentum)
        if self.pending_keys is not None:
            self.enqueue(self.pending_keys)
            self.pending_keys = None
