"""Throughput accounting: the machine's measured matmul peak, training FLOPs, MFU.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, PaLM, appendix B) is the training
FLOPs a step needs divided by the time it took and by the hardware's peak. The peak
here is *measured* -- the best of a few square GEMMs with ``torch.mm`` in the training
dtype on the training device -- not a datasheet number, so on a shared CPU it is what
this process can actually get; it is measured once per process and cached.
Training FLOPs come from :func:`layerwise.analysis.analyze` (``totals.flops_train``:
2 FLOPs per multiply-accumulate, forward plus the backward products that are needed,
so frozen layers cost less).
"""

from __future__ import annotations

import time
from functools import cache

import torch
from torch import nn


@cache
def _matmul_peak(device: str, dtype: torch.dtype, size: int, repeats: int) -> float:
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)  # a private generator: the global RNG is not touched
    a = torch.randn(size, size, device=dev, dtype=torch.float32, generator=g).to(dtype)
    b = torch.randn(size, size, device=dev, dtype=torch.float32, generator=g).to(dtype)
    out = torch.empty(size, size, device=dev, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t
        if i:  # the first call warms up
            best = min(best, dt)
    return 2.0 * size**3 / best


def matmul_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None, repeats: int = 5) -> float:
    """Measured peak FLOP/s of a square ``torch.mm`` (best of ``repeats``), cached per process.

    size: the matrix side; default 1024 on the CPU, 8192 on CUDA (big enough to reach the
    GEMM plateau on each).
    """
    dev = torch.device(device)
    if size is None:
        size = 8192 if dev.type == "cuda" else 1024
    key = str(dev) if dev.type != "cuda" or dev.index is not None else f"cuda:{torch.cuda.current_device()}"
    return _matmul_peak(key, dtype, size, repeats)


def train_flops(model: nn.Module, inputs) -> int | None:
    """Training FLOPs (forward + backward) of one call ``model(*inputs)``, or None if the
    analysis cannot trace the model. Runs one forward pass without keeping activations."""
    from layerwise.analysis import analyze
    from layerwise.errors import LayerwiseError

    try:
        a = analyze(model, inputs=inputs)
    except (LayerwiseError, RuntimeError, TypeError, ValueError):
        return None
    return int(a.totals.flops_train) or None


def mfu(flops: float, seconds: float, peak: float) -> float | None:
    """flops / seconds / peak, or None when it cannot be computed."""
    if not flops or seconds <= 0 or not peak:
        return None
    return flops / seconds / peak
