"""Measuring tools: synchronised wall-clock medians, the matmul rate, FLOP counts, peak memory and
a description of the machine."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_runs(fn: Callable[[], object], repeats: int, device: str = "cpu", warmup: int = 1) -> List[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` (no grad) after ``warmup`` untimed calls."""
    out = []
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        sync(device)
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t)
    return out


def median_time(fn: Callable[[], object], repeats: int, device: str = "cpu", warmup: int = 1) -> float:
    return statistics.median(time_runs(fn, repeats, device, warmup))


def matmul_gflops(device: str, n: int, repeats: int = 5) -> float:
    """The machine's float32 matrix-multiply rate: 2 n^3 FLOPs of ``torch.mm`` on [n, n] operands."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    out = torch.empty(n, n, device=device)
    t = median_time(lambda: torch.mm(a, b, out=out), repeats, device, warmup=2)
    return 2 * n**3 / t / 1e9


def conv_gflops(device: str, frames: int = 1024, repeats: int = 5) -> float:
    """The machine's rate for the encoders' main operation: a 3x3 convolution of 64 to 64 channels on
    [1, 64, 64, frames] channels-last maps (FCN-4's second block on ``frames`` x 256 samples of audio)."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 64, frames, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=gen).to(device)
    b = torch.randn(64, generator=gen).to(device)
    t = median_time(lambda: F.conv2d(x, w, b, padding=1), repeats, device, warmup=2)
    return 2 * 64 * 64 * 9 * 64 * frames / t / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call as ``FlopCounterMode`` counts them: matmuls, convolutions and attention
    (elementwise ops, pooling, normalisation and FFTs are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _proc_status_mb(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set size, MiB: Linux's VmHWM, which ``reset_peak_rss`` can reset
    and which, unlike ``ru_maxrss``, does not start at the parent's peak in a child started with
    fork/vfork + exec. Elsewhere ``ru_maxrss``."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 2**10  # macOS reports bytes


def reset_peak_rss() -> bool:
    """Reset the peak to the current resident size (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    rss = _proc_status_mb("VmRSS")
    if rss is not None:
        return rss
    return float("nan")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> List[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(device: str) -> Dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "load_average_start": load_average(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    try:
        import torchaudio

        info["torchaudio"] = torchaudio.__version__
    except ImportError:  # pragma: no cover
        pass
    return info
