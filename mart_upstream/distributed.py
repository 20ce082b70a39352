"""torch.distributed helpers (torchrun: multi-GPU and multi-node; gloo on CPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError, UsageError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    launched: bool = False  # started by torchrun: a process group and DDP, even with one process

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ and "RANK" in os.environ


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    Under torchrun the group is made even for one process, so the DDP code path runs as it would on
    many (``torchrun --nproc_per_node 1`` tests it on one GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), launched=True)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [B, ...] from every rank along dim 0, keeping gradients to the local part.

    Used so contrastive negatives and Barlow-Twins batch statistics cover the global batch.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor):
    """MoCo's Shuffle-BN across processes (MoCo §3.3, ``_batch_shuffle_ddp`` of its code): gather ``x``
    [B, ...] from every rank, permute the global batch with a permutation drawn on rank 0 and broadcast,
    and give each rank its slice of the permuted batch -> (this rank's [B, ...] examples, the index that
    ``batch_unshuffle`` needs). Every rank must hold the same B. One process: (x, None), nothing to do."""
    if not is_distributed():
        return x, None
    world, rank = dist.get_world_size(), dist.get_rank()
    b = x.shape[0]
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    full = torch.cat(parts)
    perm = torch.randperm(full.shape[0], device=x.device) if rank == 0 else torch.empty(
        full.shape[0], dtype=torch.long, device=x.device)
    dist.broadcast(perm, src=0)
    return full[perm[rank * b:(rank + 1) * b]], torch.argsort(perm)


@torch.no_grad()
def batch_unshuffle(y: torch.Tensor, unshuffle) -> torch.Tensor:
    """The inverse of ``batch_shuffle``: gather every rank's outputs [B, ...] of the permuted examples and
    return this rank's own examples' outputs, in their order. ``unshuffle`` None: ``y`` as it is."""
    if unshuffle is None:
        return y
    world, rank = dist.get_world_size(), dist.get_rank()
    b = y.shape[0]
    parts = [torch.empty_like(y) for _ in range(world)]
    dist.all_gather(parts, y.contiguous())
    return torch.cat(parts)[unshuffle[rank * b:(rank + 1) * b]]


def local_offset(batch: int) -> int:
    """Index of this rank's first example inside the gathered global batch."""
    return dist.get_rank() * batch if is_distributed() else 0


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (so all ranks take the same branch)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def require_cuda(request: str) -> None:
    """The one check of every tool's ``--device``: UsageError when it names CUDA (``cuda``, ``cuda:N``) and
    torch sees no CUDA device."""
    if str(request).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"CUDA was requested (--device {request}) but torch.cuda.is_available() is False (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}): install a CUDA build of torch or use --device cpu"
        )


def pick_device(request: str, local_rank: int = 0) -> torch.device:
    """``--device`` of the tools: ``auto`` (CUDA when there is a device), ``cpu`` or ``cuda``; with CUDA,
    this process's GPU (``LOCAL_RANK`` under torchrun). UsageError when CUDA is asked for and absent."""
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request == "cuda":
        require_cuda(request)
        return torch.device("cuda", local_rank)
    if request != "cpu":
        raise ConfigError(f"--device must be auto, cpu or cuda, got {request!r}")
    return torch.device("cpu")
