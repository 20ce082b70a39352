"""Opt-in ways to run the training step faster, each equal to the eager step within float rounding:

* ``run.compile``: the model's forward (and through AOTAutograd its backward) compiled by
  ``torch.compile`` (TorchInductor; on the CPU it generates C++ and needs a C++ compiler).
  ``default``; ``reduce-overhead`` (CUDA graphs on a GPU, where every step has the same shapes: the
  step sampler always gives full batches); ``max-autotune``; ``none`` (the default) runs eagerly.
* ``run.bf16_cpu``: bfloat16 autocast on the CPU as on CUDA (``auto``: where the CPU has AMX); not equal
  to float32 within float rounding, the same precision as the GPU runs.
* ``run.channels_last``: the model's 4-D weights and the inputs of its 2-D convolutions in
  channels-last memory order (NHWC), which oneDNN and cuDNN convolve faster than NCHW.

``apply_speedups`` returns what the step calls (the compiled module holds ``model``'s own parameters,
so the optimizer, checkpoints and ``after_optimizer_step`` keep working on ``model``).
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

import torch
from torch import nn

from ..errors import ConfigError, UsageError

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
BF16_CPU = ("false", "true", "auto")


def check_bf16_cpu(value: str) -> None:
    if value not in BF16_CPU:
        raise ConfigError(f"run.bf16_cpu must be one of {', '.join(BF16_CPU)}, got {value!r}")


def cpu_has_bf16_units() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 matrix products (oneDNN runs bf16 convolutions and
    matmuls on them; without them bf16 is emulated and slower than float32)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def cpu_bf16(value: str) -> bool:
    """``run.bf16_cpu`` -> whether the CPU step autocasts to bfloat16 (``auto``: where the CPU has AMX)."""
    check_bf16_cpu(value)
    return value == "true" or (value == "auto" and cpu_has_bf16_units())


def uses_bf16(run, device: torch.device) -> bool:
    """Whether the training step on ``device`` autocasts to bfloat16 under ``run`` (a RunConfig):
    ``run.bf16`` on CUDA, and on the CPU where ``run.bf16_cpu`` says so."""
    return run.bf16 and (device.type == "cuda" or cpu_bf16(run.bf16_cpu))


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ConfigError(f"run.compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def cpp_compiler() -> Optional[str]:
    """The C++ compiler TorchInductor would use on the CPU (``$CXX``, else c++, g++ or clang++), or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def check_compile_possible(mode: str, device: torch.device) -> None:
    """UsageError (one line) where ``run.compile=mode`` cannot work on ``device`` in this environment."""
    check_compile_mode(mode)
    if mode == "none":
        return
    if not hasattr(torch, "compile"):
        raise UsageError(f"run.compile={mode} needs torch >= 2.0 (this is torch {torch.__version__}); "
                         "use run.compile=none")
    if device.type == "cpu" and cpp_compiler() is None:
        raise UsageError(f"run.compile={mode} needs a C++ compiler on the CPU (TorchInductor generates C++) and "
                         "none was found (install g++ or set CXX); use run.compile=none")


def _channels_last_input(module: nn.Module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` (in place) with its 4-D weights in channels-last order and every ``nn.Conv2d`` reading
    its input in that order; its parameters stay the same objects (an optimizer built on them is unaffected)."""
    model.to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not getattr(m, "_mart_channels_last", False):
            m.register_forward_pre_hook(_channels_last_input)
            m._mart_channels_last = True
    return model


def match_state_layout(optim: torch.optim.Optimizer) -> None:
    """Every per-parameter state tensor of ``optim`` (Adam's moments) in its parameter's memory layout.
    A fused optimizer reads parameter, gradient and moments as flat arrays: moments restored in NCHW
    order for weights now channels-last would be updated element for the wrong element."""
    for group in optim.param_groups:
        for p in group["params"]:
            state = optim.state.get(p) or {}
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def apply_speedups(model: nn.Module, net: nn.Module, compile_mode: str, channels_last: bool,
                   device: torch.device, optim: Optional[torch.optim.Optimizer] = None) -> nn.Module:
    """What the training step calls for ``net`` (``model``, or ``model`` in DDP) with the run's settings:
    ``model`` put in channels-last order if asked (and ``optim``'s state, e.g. a resumed run's, with
    it), then ``net`` compiled if asked."""
    check_compile_possible(compile_mode, device)
    if channels_last:
        to_channels_last(model)
    if optim is not None:
        match_state_layout(optim)
    if compile_mode == "none":
        return net
    # static shapes: every step has the same shapes (full batches of fixed-length crops), and after a
    # shape change dynamo's automatic dynamic shapes made TorchInductor fail on MART's step
    # ("cannot determine truth value of Relational: 1 < s64", torch 2.13 on the CPU)
    return torch.compile(net, mode=None if compile_mode == "default" else compile_mode, dynamic=False)
