"""Activation ranges for SmoothQuant (``smoothing.py``): the largest input magnitude per channel that each
layer's ``wqkv`` and ``wgu`` see while a StaticLM decodes calibration text."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, List, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Recorder", "recording", "recording_decoder", "save_ranges", "load_ranges"]


class Recorder:
    """A float weight that runs as ``F.linear`` and keeps the per-input-channel max of |x| over its calls."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.max = torch.zeros(weight.shape[1], dtype=torch.float32)

    def linear(self, x: torch.Tensor, bias=None) -> torch.Tensor:
        if x.numel():
            self.max = torch.maximum(self.max, x.detach().float().abs().reshape(-1, x.shape[-1]).amax(dim=0))
        return F.linear(x, self.weight, bias)


@contextlib.contextmanager
def recording(lm) -> Iterator[List[Tuple[Recorder, Recorder]]]:
    """While open, ``lm``'s ``wqkv`` and ``wgu`` record their inputs: yields (wqkv, wgu) recorders per layer;
    ``lm``'s layers are restored on exit."""
    saved = lm.layers
    recs = [(Recorder(l.wqkv), Recorder(l.wgu)) for l in saved]
    lm.layers = [dataclasses.replace(l, wqkv=a, wgu=b) for l, (a, b) in zip(saved, recs)]
    try:
        yield recs
    finally:
        lm.layers = saved


@contextlib.contextmanager
def recording_decoder(decoder) -> Iterator[List[Tuple[Recorder, Recorder]]]:
    """``recording`` for a static tree decoder: every KV cache it decodes on (``decoder.lm`` and the caches
    of batches in flight) runs the recording layers while open, and its own layers again after."""
    from .static_lm import StaticLM

    lm = getattr(decoder, "lm", None)
    if (not isinstance(lm, StaticLM) or lm.device.type != "cpu" or lm.dtype != torch.float32
            or not all(isinstance(layer.wqkv, torch.Tensor) for layer in lm.layers)):
        raise ValueError("activation ranges are measured by the static engine on the CPU in float32; load the "
                         "model with device 'cpu' and dtype 'float32' (engine 'auto' or 'static', quantize null)")
    twins = decoder._lms
    try:
        with recording(lm) as recs:
            for twin in twins:
                twin.layers = lm.layers
            yield recs
    finally:  # ``recording`` has restored lm's own layers: the twins take them again
        for twin in twins:
            twin.layers = lm.layers
            twin.cache.release()


def save_ranges(ranges: List[Tuple[torch.Tensor, torch.Tensor]], path) -> None:
    """Write per-layer (wqkv, wgu) input ranges as bfloat16 (rounded up, so that no range shrinks)."""
    from safetensors.torch import save_file

    def stack(i):
        r = torch.stack([pair[i].float() for pair in ranges])
        half = r.bfloat16()
        return torch.where(half.float() < r, torch.nextafter(half, torch.tensor(float("inf"), dtype=half.dtype)), half)

    save_file({"wqkv": stack(0).contiguous(), "wgu": stack(1).contiguous()}, str(path))


def load_ranges(path) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The per-layer (wqkv, wgu) input ranges ``save_ranges`` wrote, as float32."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    return [(a.float(), b.float()) for a, b in zip(t["wqkv"], t["wgu"])]
