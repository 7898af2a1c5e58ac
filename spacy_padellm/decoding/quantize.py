"""Reduced-precision weights for the static engine (the ``quantize`` setting).

"int8-weight-only" (on the GPU and the CPU): every matrix of the decoder layers and the LM head is stored in int8,
symmetric per output channel (row), with its scales in the model's dtype; each product converts the int8 matrix
to the activations' dtype, multiplies and scales the result, so activations, the KV cache and attention keep their
precision. Its matrices take half the memory of bfloat16 ones (the model's own weights stay loaded for the
other engines); each product converts its matrix first (no fused kernel), so a pass moves more bytes, not fewer.
It is not exact: entities can change.

The others run on the CPU only.

"bf16": every matrix of the decoder layers and the LM head is kept in bfloat16, and each product casts its input to
bfloat16 (the result stays bfloat16 until it joins the float32 residual stream; the LM head's logits are bfloat16
values, cast to float32 before the softmax); the static engine keeps its KV cache and runs attention in bfloat16
too. The residual stream, the norms, RoPE and the softmax stay in float32. On a CPU with Intel AMX the products ran
several times faster than in float32 (docs/results-speed.md); on one without bfloat16 matrix instructions
(AVX512-BF16 or AMX) they run slower, and a warning says so. It is not exact: entities can change.

"int8": the attention projections and the MLP's gate and up projections of every decoder layer (after a LoRA
adapter has been merged into them) are quantized to int8 once, symmetric per output channel, and run as
dynamically quantized matrix products: each call quantizes its activations to 7 bits with one range of their own
(PyTorch's quantized CPU kernels, as ``torch.ao.quantization.quantize_dynamic`` runs them on x86; 8 bits overflow
the kernels' 16-bit sums there). The MLP's down projection, the embedding and the norms stay in float32; so does the
LM head under "int8", so that the log-probabilities that choose every token are computed at full precision from
the last hidden state, while "int8-head" quantizes it too (per output row, like the others): with Gemma 3's
262k-entry vocabulary it is the largest matrix a token passes through. Given the activation ranges a model folder
ships (``calibration.py``), the matrices after a norm are smoothed first (``smoothing.py``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .architectures import Layer
from .settings import QUANTIZATIONS
from .smoothing import SMOOTH_ALPHA, smooth_layer

__all__ = ["QUANTIZATIONS", "WEIGHT_ONLY", "Bf16Weight", "Int8Weight", "Int8WeightOnly", "cpu_has_bf16", "head_rows",
           "linear", "quantize_layers", "quantize_head"]

# The matrices of a layer that int8 quantizes. Not the MLP's down projection: its inputs (gate x up) carry outlier
# activations that one 8-bit range per pass cannot hold (quantized too, half of 48 CoNLL03 test sentences changed
# entities on SmolLM2-135M; without it, 5).
_WEIGHTS = ("wqkv", "wo", "wgu")
_BF16_WEIGHTS = ("wqkv", "wo", "wgu", "wd")  # bf16: all of them
WEIGHT_ONLY = "int8-weight-only"  # the method that runs on any device (all matrices, like bf16)


class Int8Weight:
    """A (out, in) float weight as int8 per output channel, packed for PyTorch's dynamic quantized linear."""

    def __init__(self, weight: torch.Tensor):
        if not hasattr(torch.ops.quantized, "linear_dynamic"):
            raise ValueError("quantize 'int8' needs PyTorch's quantized CPU kernels (torch.ops.quantized."
                             "linear_dynamic), which this build of torch does not have")
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.5).clamp_min(1e-12).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated; the packed kernels are not
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None)
        self.shape = tuple(weight.shape)
        self.nbytes = w.numel() + 8 * len(scale)

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        # reduce_range: 7-bit activations, as quantize_dynamic runs them on x86 (no overflow in the int16 sums)
        y = torch.ops.quantized.linear_dynamic(x, self.packed, True)
        return y if bias is None else y + bias


class Bf16Weight:
    """A (out, in) float weight kept in bfloat16; its products take their input in bfloat16 and give bfloat16 (float32
    when a float32 bias is added)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.detach().to(torch.bfloat16)
        self.shape = tuple(weight.shape)
        self.nbytes = self.weight.numel() * 2

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight)
        return y if bias is None else y + bias


class Int8WeightOnly:
    """A (out, in) weight as int8 per output channel and its scales in the weight's dtype; its products convert
    the int8 matrix to the input's dtype and scale the result (weight-only: the activations are not quantized)."""

    def __init__(self, weight: torch.Tensor):
        w = weight.detach()
        scale = (w.float().abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        self.q = torch.round(w.float() / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.scale = scale.to(w.dtype)
        self.shape = tuple(weight.shape)
        self.nbytes = self.q.numel() + self.scale.numel() * self.scale.element_size()

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = F.linear(x, self.q.to(x.dtype)) * self.scale.to(x.dtype)
        return y if bias is None else y + bias


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AMX tiles or AVX512-BF16). The checks are private
    ``torch.cpu._is_*`` functions of recent PyTorch releases; where they are missing the answer is False (at worst a
    needless warning, never an error)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if check is not None)


def linear(x: torch.Tensor, weight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` for a float weight, an ``Int8Weight``, an ``Int8WeightOnly`` or a ``Bf16Weight``."""
    if isinstance(weight, torch.Tensor):
        return F.linear(x, weight, bias)
    return weight.linear(x, bias)


def head_rows(weight, ids: torch.Tensor):
    """The rows ``ids`` of an LM head, as a weight of its kind (float, or ``Bf16Weight``); None for an int8 head,
    whose rows are not kept apart."""
    if isinstance(weight, torch.Tensor):
        return weight.index_select(0, ids)
    if isinstance(weight, Bf16Weight):
        return Bf16Weight(weight.weight.index_select(0, ids))
    return None


Ranges = Sequence[Tuple[torch.Tensor, torch.Tensor]]
# The methods that store every matrix (and the LM head) in one kind of weight, with no activation ranges.
_WHOLE = {"bf16": Bf16Weight, WEIGHT_ONLY: Int8WeightOnly}


def _check(method: str) -> None:
    if method not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {method!r}; choose one of {', '.join(QUANTIZATIONS)}")


def quantize_layers(layers: List[Layer], method: str, ranges: Optional[Ranges] = None) -> List[Layer]:
    """Copies of ``layers`` whose matrices are quantized by ``method`` (one of ``QUANTIZATIONS``); for int8, smoothed
    first by ``ranges`` (per layer, the input ranges of ``wqkv`` and ``wgu``) if given."""
    _check(method)
    whole = _WHOLE.get(method)
    if whole is not None:  # exact enough without smoothing: bfloat16 keeps a range per value, int8 one per row
        return [dataclasses.replace(layer, **{name: whole(getattr(layer, name)) for name in _BF16_WEIGHTS})
                for layer in layers]
    if ranges is not None:
        if len(ranges) != len(layers):
            raise ValueError(f"int8 ranges for {len(ranges)} layers, but the model has {len(layers)}")
        layers = [smooth_layer(l, a, b, SMOOTH_ALPHA) for l, (a, b) in zip(layers, ranges)]
    return [dataclasses.replace(layer, **{name: Int8Weight(getattr(layer, name)) for name in _WEIGHTS})
            for layer in layers]


def quantize_head(lm_head: torch.Tensor, method: str):
    """The LM head as ``method`` runs it: bfloat16 under "bf16", int8 under "int8-head" and "int8-weight-only", else
    unchanged."""
    _check(method)
    if not isinstance(lm_head, torch.Tensor):
        return lm_head
    return {**_WHOLE, "int8-head": Int8Weight}.get(method, lambda w: w)(lm_head)
