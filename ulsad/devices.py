"""Devices: which one to compute on when the user does not say (CUDA, then Apple MPS, then CPU)."""

from __future__ import annotations

import torch

__all__ = ["native_bfloat16", "resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, or the best available: CUDA, then Apple MPS, then CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively, so that autocast to it speeds training up:
    CUDA GPUs that support it, and x86 CPUs with AVX512-BF16 or AMX. Elsewhere bf16 is emulated
    and slower than float32. (torch exposes the CPU checks only as underscored helpers, hence
    the `getattr` fallbacks.)"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False
