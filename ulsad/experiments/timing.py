"""How long a call takes: timed calls with the device's queue drained, rounds of interleaved calls,
and this machine's matrix-multiply rate (the yardstick for compute floors).

The benchmark scripts (`benchmarks/`) and the efficiency notebook measure with these.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["interleaved", "matmul_gflops", "median", "synchronize", "timed"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds for one call of `fn`, with the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in rounds (a, b, c, a, b, c, ...) so that a
    change in the machine's load during the run affects all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def matmul_gflops(device: torch.device, n: int = 4096, repeats: int = 3) -> float:
    """fp32 matrix-multiply rate (GFLOP/s) of this machine now: the yardstick for compute floors."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = interleaved({"mm": lambda: a @ b}, device, repeats, warmup=1)["mm"]
    return 2 * n**3 / median(times) / 1e9
