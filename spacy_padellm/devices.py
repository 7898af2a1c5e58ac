"""One answer to "which torch device?" for the component, the spacy-llm backend, annotation and the
benchmark: a device asked for by name, else the GPU that thinc (``spacy.require_gpu``/``prefer_gpu``)
is on, else the CPU."""

from __future__ import annotations

from typing import Optional

__all__ = ["DeviceError", "check_device_name", "check_device_available", "resolve_device", "prefer_gpu_device"]


class DeviceError(ValueError):
    """A device that is misspelt or not available on this machine, with the fix in the message."""


def check_device_name(device: Optional[str]) -> Optional[str]:
    """``device`` if it is null, "cpu", "cuda", "cuda:K" or "mps"; else a ``DeviceError`` (no torch needed)."""
    if device is None or device in ("cpu", "cuda", "mps"):
        return device
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise DeviceError(f"device must be null, 'cpu', 'cuda', 'cuda:K' or 'mps', got {device!r}")


def check_device_available(device: Optional[str]) -> Optional[str]:
    """``device`` if this machine's torch can use it (null and "cpu" always), else a ``DeviceError`` with the
    fix. Only asks torch what is there: nothing is put on a device."""
    import torch

    device = check_device_name(device)
    if device is None or device == "cpu":
        return device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r}: CUDA is not available to this torch ({torch.__version__}); install a "
                          "CUDA build of torch (https://pytorch.org/get-started/locally/), or use device 'cpu' "
                          "(spacy.require_gpu() also needs CuPy: pip install cupy-cuda12x)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered from 0")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps': MPS is not available to this torch (it needs Apple silicon and macOS "
                          "12.3 or later); use device 'cpu'")
    return device


def resolve_device(device: Optional[str] = None, *, gpu_id: int = -1):
    """The ``torch.device`` to use: ``device`` if given (checked: it must be available), else GPU
    ``gpu_id`` if it is 0 or more (as ``spacy evaluate --gpu-id``), else the GPU thinc's current ops are
    on, else the CPU."""
    import torch

    device = check_device_name(device)
    if device is None and gpu_id >= 0:
        device = f"cuda:{gpu_id}"
    if device is None:
        from thinc.api import get_current_ops

        ops = get_current_ops()
        if getattr(ops, "device_type", "cpu") == "gpu" and torch.cuda.is_available():
            return torch.device(f"cuda:{max(0, int(getattr(ops, 'device_id', 0)))}")
        return torch.device("cpu")
    check_device_available(device)
    if device == "cuda":
        return torch.device(f"cuda:{torch.cuda.current_device()}")
    return torch.device(device)


def prefer_gpu_device(device: Optional[str] = None) -> str:
    """For corpus jobs: ``device`` if given, else the first visible GPU (also ``spacy.prefer_gpu`` for
    spaCy's own ops), else "cpu". On a Ray worker the first visible GPU is the one Ray assigned to it."""
    if device:
        return str(resolve_device(device))
    import spacy
    import torch

    spacy.prefer_gpu()
    return "cuda:0" if torch.cuda.is_available() else "cpu"
