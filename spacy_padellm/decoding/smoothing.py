"""SmoothQuant for the int8 weights (Xiao et al., 2023): activation outliers moved into the weights.

A matrix that reads an RMSNorm's output (``wqkv`` after ``ln1``, ``wgu`` after ``ln2``) sees ``h_j = g_j * n_j``
(``g`` the norm's weight). Dividing ``g_j`` by ``s_j`` and multiplying the matrix's input column ``j`` by ``s_j``
leaves the product unchanged in exact arithmetic, while the activations that int8 quantizes with one range per
call lose their outlier channels. ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``, with ``max|X_j|`` measured on
calibration passes (``calibration.py``).
"""

from __future__ import annotations

import dataclasses

import torch

from .architectures import Layer

__all__ = ["SMOOTH_ALPHA", "smooth_scales", "smooth_layer"]

# Chosen on CoNLL03 dev sentences with the shipped model (docs/results-speed.md).
SMOOTH_ALPHA = 0.9


def smooth_scales(act_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per input channel scales of a (out, in) ``weight`` whose inputs reach ``act_max`` (in,) in magnitude."""
    w_max = weight.detach().float().abs().amax(dim=0).clamp_min(1e-5)
    s = act_max.float().clamp_min(1e-5).pow(alpha) / w_max.pow(1.0 - alpha)
    return s.clamp_min(1e-5)


def smooth_layer(layer: Layer, attn_max: torch.Tensor, mlp_max: torch.Tensor, alpha: float) -> Layer:
    """``layer`` with its pre-attention and pre-MLP norms divided by the scales and ``wqkv``'s and ``wgu``'s
    input columns multiplied by them: the same function in exact arithmetic."""
    s1 = smooth_scales(attn_max, layer.wqkv, alpha)
    s2 = smooth_scales(mlp_max, layer.wgu, alpha)
    return dataclasses.replace(
        layer, ln1=(layer.ln1.float() / s1).to(layer.ln1.dtype), wqkv=(layer.wqkv.float() * s1).to(layer.wqkv.dtype),
        ln2=(layer.ln2.float() / s2).to(layer.ln2.dtype), wgu=(layer.wgu.float() * s2).to(layer.wgu.dtype))
