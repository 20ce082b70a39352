"""A frozen, faster copy of a model for embedding (``for_inference``), equal to the model within float
rounding.

The FCN encoders spend most of their CPU time outside their convolutions: in the first block, whose
3x3 convolution from one input channel writes 64 channels at the log-mel's full resolution, and in
batch normalisation, ReLU and max pooling over those maps. The copy made here

* folds every BatchNorm into the convolution before it (eval mode: a per-channel scale and shift),
* applies ReLU after max pooling (they commute: max is monotone), on maps 4-8x smaller,
* keeps the maps channels-last, where max pooling is an order of magnitude faster than in NCHW,
* computes the first block's convolution on the CPU as a matrix product of 3x3 patches, in tiles of
  a few MB so its full-resolution output never leaves the cache and is pooled at once,
* encodes constant inputs once: every all-silent window (zero padding, digital silence) has the same
  constant log-mel and so the same encoding.

The original model is left untouched (it may still train); ``for_inference`` returns a copy in eval
mode without gradients. The loaders of the embedding tools (HEAR adapter, ``mart-embed``) apply it
once; ``mart_upstream.embedding`` works with either.
"""
from __future__ import annotations

import copy
from typing import Callable, List, Tuple, TypeVar, Union

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import SAMPLES_PER_PASS
from .encoders import FCN

# Positions (log-mel cells) per tile of the first block's patch product: 64 channels x 16 K
# positions x 4 bytes = 4 MiB of output per tile, which stays in the cache until it is pooled.
STEM_TILE_POSITIONS = 16384

# Log-mel cells per encoder call: larger batches are split (whole examples), which bounds the memory of
# one call and keeps the first blocks' maps (64 channels on a quarter of the cells: 16 MiB here) small
# enough to be reused by the allocator instead of being fresh pages from the kernel on every call. Derived
# from the one bound on the audio of a pass (``embedding.SAMPLES_PER_PASS``, 2^19 samples): half of it,
# 2^18 cells (at the packaged models' 128 bands and 128-sample hop, half a pass's log-mel).
BATCH_POSITIONS = SAMPLES_PER_PASS // 2

M = TypeVar("M", bound=nn.Module)


def folded_weights(conv: Union[nn.Conv1d, nn.Conv2d], bn: Union[nn.BatchNorm1d, nn.BatchNorm2d]):
    """(weight, bias) of one convolution computing ``bn(conv(x))`` with ``bn`` in eval mode (its running
    statistics), computed in float64 and returned in the convolution's dtype."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("folding needs a BatchNorm with running statistics")
    with torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        shift = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        weight = conv.weight.double() * scale.view(shape)
    return weight.to(conv.weight.dtype), shift.to(conv.weight.dtype)


def fold_batchnorm(conv: Union[nn.Conv1d, nn.Conv2d], bn: Union[nn.BatchNorm1d, nn.BatchNorm2d]):
    """A new convolution computing ``bn(conv(x))`` with ``bn`` in eval mode (its running statistics)."""
    weight, bias = folded_weights(conv, bn)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    fused.bias = nn.Parameter(bias, requires_grad=False)
    return fused


def fold_batchnorms(module: M) -> M:
    """A copy of ``module`` for inference in which every BatchNorm that directly follows a convolution in
    an ``nn.Sequential`` is folded into it (and replaced by ``nn.Identity``)."""
    module = copy.deepcopy(module).eval()
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(1, len(seq)):
            conv, bn = seq[i - 1], seq[i]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                seq[i - 1], seq[i] = fold_batchnorm(conv, bn), nn.Identity()
    return module.requires_grad_(False)


class FoldedBlock(nn.Sequential):
    """An FCN block ``conv3x3 - BN - ReLU - max pool`` for inference: BN folded into the convolution,
    max pool before ReLU, channels-last maps.

    It holds the block's own layers, so its ``state_dict`` is the block's (same keys, same values: a
    checkpoint's weights load into it, and compare with it); the folded weights are derived from them
    and recomputed when any of them changes (``load_state_dict``, ``to(device)``)."""

    def __init__(self, block: nn.Sequential):
        conv, bn, relu, pool = block
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
                and isinstance(pool, nn.MaxPool2d)):
            raise TypeError(f"expected an FCN block (Conv2d, BatchNorm2d, ReLU, MaxPool2d), got {block}")
        super().__init__(conv, bn, relu, pool)
        self.pool_size = _pair(pool.kernel_size)
        if _pair(pool.stride) != self.pool_size or _pair(pool.padding) != (0, 0) or not pool.ceil_mode:
            raise TypeError(f"expected a non-overlapping ceil-mode max pool, got {pool}")
        self._folded_key, self._folded = None, None

    def folded(self):
        """(weight, bias) of the convolution with the BatchNorm folded in."""
        tensors = [t for m in (self[0], self[1]) for t in list(m.parameters()) + list(m.buffers())]
        key = tuple((t.device, t.data_ptr(), t._version) for t in tensors)
        if key != self._folded_key:
            self._folded, self._folded_key = folded_weights(self[0], self[1]), key
        return self._folded

    def _pool(self, y: torch.Tensor) -> torch.Tensor:
        if self.pool_size == (1, 1):
            return y
        return F.max_pool2d(y, self.pool_size, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self[0]
        weight, bias = self.folded()
        x = x.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)
        return torch.relu_(self._pool(y))


class StemBlock(FoldedBlock):
    """The first FCN block (one input channel). On the CPU its convolution is a matrix product of
    ``k x k`` patches with the folded weights, computed and pooled tile by tile; the bias (constant per
    channel, so it commutes with max pooling) and ReLU are applied to the pooled maps."""

    def __init__(self, block: nn.Sequential, tile_positions: int = STEM_TILE_POSITIONS):
        super().__init__(block)
        c = self[0]
        if c.in_channels != 1 or c.groups != 1 or _pair(c.stride) != (1, 1) or _pair(c.dilation) != (1, 1) \
                or not isinstance(c.padding, tuple) or c.padding_mode != "zeros":
            raise TypeError(f"StemBlock needs a stride-1 convolution from one channel, got {c}")
        self.tile_positions = int(tile_positions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.shape[1] != 1:
            return super().forward(x)
        c = self[0]
        folded, bias = self.folded()
        kh, kw = _pair(c.kernel_size)
        ph, pw = _pair(c.padding)
        ch = c.out_channels
        b, _, fq, t = x.shape
        fo, to = fq + 2 * ph - kh + 1, t + 2 * pw - kw + 1  # convolution output size
        p_f, p_t = self.pool_size
        fe, te = -(-fo // p_f) * p_f, -(-to // p_t) * p_t  # ... in whole pooling windows (ceil mode)
        weight = folded.reshape(ch, kh * kw).t()  # [k*k, C]
        # the extra rows and columns of whole windows are computed from zeros and masked with -inf
        xp = F.pad(x[:, 0], (pw, pw + te - to, ph, ph + fe - fo))
        out = x.new_empty(b, fe // p_f, te // p_t, ch)  # pooled maps, channels last
        per_row = fe * te
        if 2 * per_row > 3 * self.tile_positions:  # one example at a time, in tiles of whole pooling columns
            n = -(-per_row // self.tile_positions)
            cols = -(-(-(-te // n)) // p_t) * p_t  # ceil(te / n) rounded up to whole pooling windows
            tiles = [(i, i + 1, s, min(te, s + cols)) for i in range(b) for s in range(0, te, cols)]
        else:  # whole examples, as many per tile as fit
            rows = max(1, self.tile_positions // per_row)
            tiles = [(i, min(b, i + rows), 0, te) for i in range(0, b, rows)]
        for i, j, s, e in tiles:
            patches = torch.stack([xp[i:j, dy : dy + fe, s + dx : e + dx] for dy in range(kh) for dx in range(kw)],
                                  dim=-1)  # [n, fe, e - s, k*k]
            y = torch.mm(patches.view(-1, kh * kw), weight).view(j - i, fe, e - s, ch)
            if fe > fo:
                y[:, fo:] = float("-inf")
            if e > to:
                y[:, :, to - s :] = float("-inf")
            _max_pool_into(out[i:j, :, s // p_t : e // p_t], y, p_f, p_t)
        out += bias
        return torch.relu_(out).permute(0, 3, 1, 2)


def _max_pool_into(dst: torch.Tensor, y: torch.Tensor, p_f: int, p_t: int) -> None:
    """Non-overlapping max pooling of channels-last maps ``y`` [n, F, T, C] (F, T whole windows) into
    ``dst`` [n, F / p_f, T / p_t, C], as elementwise maxima of strided views: no copy, no indices."""
    views = [y[:, a::p_f, c::p_t] for a in range(p_f) for c in range(p_t)]
    if len(views) == 1:
        dst.copy_(views[0])
        return
    torch.maximum(views[0], views[1], out=dst)
    for v in views[2:]:
        torch.maximum(dst, v, out=dst)


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def share_constant_rows(x: torch.Tensor, fn: Callable[[torch.Tensor], object]):
    """``fn(x)`` for a batch whose rows are computed independently (eval mode), where rows holding one
    constant value (the log-mel of silence: zero-padded windows, digital silence) are computed once per
    value. ``fn`` returns a tensor or a list of tensors with the batch as first dimension."""
    if x.shape[0] < 2:
        return fn(x)
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    const = (lo == hi).nonzero().flatten()
    if const.numel() < 2:
        return fn(x)
    values, which = torch.unique(lo[const], return_inverse=True)
    if values.numel() == const.numel():
        return fn(x)
    first = torch.full((values.numel(),), x.shape[0], dtype=torch.long, device=x.device)
    first = first.scatter_reduce(0, which, const, reduce="amin")
    source = torch.arange(x.shape[0], device=x.device)
    source[const] = first[which]
    rows = source.unique()  # sorted
    where = torch.searchsorted(rows, source)
    out = fn(x[rows])
    if isinstance(out, torch.Tensor):
        return out[where]
    return [o[where] for o in out]


class FastFCN(FCN):
    """An FCN for inference: folded blocks (see the module docstring), constant inputs encoded once."""

    def __init__(self, fcn: FCN, tile_positions: int = STEM_TILE_POSITIONS):
        nn.Module.__init__(self)
        self.cfg = fcn.cfg
        blocks: List[nn.Module] = []
        for i, block in enumerate(fcn.blocks):
            conv = block[0]
            stem = i == 0 and isinstance(conv, nn.Conv2d) and conv.in_channels == 1
            blocks.append(StemBlock(block, tile_positions) if stem else FoldedBlock(block))
        self.blocks = nn.ModuleList(blocks)
        self.batch_positions = BATCH_POSITIONS
        self.requires_grad_(False)
        self.eval()

    def _batched(self, spec: torch.Tensor, fn):
        """``fn`` over sub-batches of at most ``batch_positions`` log-mel cells (whole examples)."""
        n = max(1, self.batch_positions // max(1, spec[0].numel()))
        if spec.shape[0] <= n:
            return fn(spec)
        parts = [fn(spec[i : i + n]) for i in range(0, spec.shape[0], n)]
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(parts)
        return [torch.cat(p) for p in zip(*parts)]

    def forward_maps(self, spec: torch.Tensor) -> List[torch.Tensor]:
        return share_constant_rows(spec, lambda x: self._batched(x, super(FastFCN, self).forward_maps))

    def frame_map(self, spec: torch.Tensor) -> torch.Tensor:
        return share_constant_rows(spec, lambda x: self._batched(x, super(FastFCN, self).frame_map))

    def train(self, mode: bool = True):
        """Stays in eval mode whatever is asked: BatchNorm is folded (train the original model)."""
        return super().train(False)


def for_inference(model: M) -> M:
    """A copy of ``model`` for embedding: eval mode, no gradients, its FCN encoder replaced by a
    ``FastFCN``. The result equals the model's within float rounding; ``model`` itself is not changed.
    A model that already is such a copy is returned as it is."""
    if is_fast(model):
        return model
    return make_fast(copy.deepcopy(model))


def make_fast(model: M) -> M:
    """``model`` itself turned into its inference form (what ``for_inference`` does to a copy): eval
    mode, no gradients, its FCN encoder replaced by a ``FastFCN`` holding the same layers. For a model
    built only to embed (``checkpoint.load_for_embedding``), so it is not built twice."""
    if is_fast(model):
        return model
    model.requires_grad_(False)
    model.eval()
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, FCN):
        model.encoder = FastFCN(encoder)
    model.fast_inference = True
    return model


def is_fast(model: nn.Module) -> bool:
    """True for a copy made by ``for_inference``."""
    return bool(getattr(model, "fast_inference", False))
