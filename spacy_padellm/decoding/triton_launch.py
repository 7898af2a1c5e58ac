"""What the static engine's Triton kernels (``tree_attention``, ``head_kernel``) share: whether Triton can be imported,
the device a kernel launches on, why a first call on a device rules the kernels out, and the rounding their checks
against torch allow."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional

import torch

__all__ = ["available", "failure_of", "on_device", "tolerance"]


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether Triton can be imported (it comes with torch's CUDA wheels)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # an import that fails for any reason: ``StaticLM`` says Triton is needed
        return False
    return True


def on_device(device: torch.device):
    """``device`` as the current CUDA device while a kernel is launched (Triton launches on the current one); nothing
    on the CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def failure_of(first_call: Callable[[], None]) -> Optional[str]:
    """None if ``first_call()`` runs (the kernels compiled on a device and checked against torch), else what failed:
    a compiler or driver error of any kind, or a check, as its type and first line."""
    try:
        first_call()
    except Exception as err:  # whatever it is, the kernels are not taken and torch's steps run instead
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def tolerance(dtype: torch.dtype) -> float:
    """The absolute and relative difference from torch that a first call's check allows in ``dtype``."""
    return 1e-4 if dtype == torch.float32 else 5e-2
