"""What the static engine (``static_lm.StaticLM``) knows of each model family: which models it can run (and,
for one it cannot, exactly what it lacks), and how a transformers model's weights and settings map onto its
fused layout.

Two families: Llama-style (Llama, Mistral, Qwen2; SmolLM2 is a Llama) and Gemma 3 text models. Gemma 3 adds
RMSNorms that scale by (1 + weight) in float32, norms after attention and around the MLP, q/k norms on each
head, embeddings scaled by sqrt(hidden_size), a tanh-approximated GELU, sliding-window layers with their own
RoPE table, and optional soft-capping of the final logits.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["Layer", "LLAMA_TYPES", "GEMMA_TYPES", "unsupported", "static_layers", "static_settings", "rope_tables"]

LLAMA_TYPES = ("llama", "mistral", "qwen2")
GEMMA_TYPES = ("gemma3_text",)
FAMILIES = "Llama, Mistral, Qwen2 (model types llama, mistral, qwen2) and Gemma 3 text models (gemma3_text)"
# RoPE types whose cos/sin depend on the position only, so that one precomputed table serves every pass
# ("dynamic" and "longrope" change with the sequence length).
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
ACTIVATIONS = {"silu": F.silu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class Layer:
    """One decoder layer's weights. Gemma 3 only: ``qk_norm`` ((heads + kv heads, head_dim), the q and k norms
    per head), ``ln_post_attn`` and ``ln_post_ff`` (after attention and after the MLP; ``ln2`` is then the
    pre-MLP norm), all norms stored as float32 (1 + weight); ``window``: the sliding window of a local layer."""

    ln1: torch.Tensor
    wqkv: torch.Tensor
    bqkv: Optional[torch.Tensor]
    wo: torch.Tensor
    bo: Optional[torch.Tensor]
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor
    qk_norm: Optional[torch.Tensor] = None
    ln_post_attn: Optional[torch.Tensor] = None
    ln_post_ff: Optional[torch.Tensor] = None
    window: Optional[int] = None


# -- which models --


def _rope_types(cfg) -> List[str]:
    """The RoPE types a config names: transformers 5 keeps them in ``rope_parameters`` (for Gemma 3 one dict per
    layer type), older versions in ``rope_scaling`` (None: default)."""
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if not isinstance(params, dict):
        return []
    dicts = [v for v in params.values() if isinstance(v, dict)] or [params]
    return [d.get("rope_type", d.get("type", "default")) or "default" for d in dicts]


def _arch_name(model) -> str:
    """The model's class and its config's model type, e.g. "GPT2LMHeadModel (model type 'gpt2')"."""
    return f"{type(model).__name__} (model type {getattr(getattr(model, 'config', None), 'model_type', None)!r})"


def unsupported(model) -> str:
    """What of ``model`` the static engine does not implement, in words; "" if it can run it."""
    cfg = getattr(model, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in LLAMA_TYPES + GEMMA_TYPES:
        return f"architecture {_arch_name(model)}: the static engine implements {FAMILIES}"
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", "silu")
    if act not in (("gelu_pytorch_tanh",) if mtype in GEMMA_TYPES else ("silu",)):
        return f"MLP activation {act!r} in a {mtype} model"
    bad = [t for t in _rope_types(cfg) if t not in STATIC_ROPE_TYPES]
    if bad:
        return f"RoPE scaling type {bad[0]!r}: the static engine implements {', '.join(STATIC_ROPE_TYPES)}"
    if mtype in GEMMA_TYPES:
        if getattr(cfg, "use_bidirectional_attention", False):
            return "bidirectional attention (use_bidirectional_attention)"
        if getattr(cfg, "attn_logit_softcapping", None):
            # transformers' Gemma 3 forward does not apply it: the dynamic engine runs that forward as it is
            return f"attention logit soft-capping (attn_logit_softcapping={cfg.attn_logit_softcapping})"
    else:
        if getattr(cfg, "final_logit_softcapping", None):
            return f"final logit soft-capping in a {mtype} model"
        window = getattr(cfg, "sliding_window", None)
        if window and (getattr(cfg, "use_sliding_window", False) or
                       (mtype == "mistral" and window < getattr(cfg, "max_position_embeddings", 0))):
            return f"sliding-window attention (sliding_window={window}) in a {mtype} model"
    return _peft_problem(model)


def _peft_problem(model) -> str:
    """What of a PEFT model the static engine cannot read ("" for a plain model, or LoRA adapters on the linear
    layers of the decoder layers, which it adds to their weights as it reads them)."""
    if not hasattr(model, "peft_config"):
        return ""
    for name, module in model.named_modules():
        if hasattr(module, "original_module"):  # peft's ModulesToSaveWrapper
            return f"a PEFT model that trains {name} whole (modules_to_save): merge the adapter first"
        if hasattr(module, "lora_A"):
            if not isinstance(module.base_layer, torch.nn.Linear) or ".layers." not in f".{name}.":
                return f"a PEFT model with an adapter on {name}: merge the adapter first"
            if any(getattr(module, "use_dora", {}).get(a) for a in module.active_adapters):
                return "a PEFT model with DoRA adapters: merge the adapter first"
        elif hasattr(module, "base_layer"):
            return f"a PEFT model whose {name} is not a LoRA layer: merge the adapter first"
    return ""


def is_gemma(model) -> bool:
    return getattr(model.config, "model_type", None) in GEMMA_TYPES


# -- weights --


def _plus_one(w: torch.Tensor) -> torch.Tensor:
    """A Gemma RMSNorm weight as it multiplies: float32 (1 + weight)."""
    return 1.0 + w.detach().float()


def _window(layer) -> Optional[int]:
    return getattr(layer.self_attn, "sliding_window", None) or None


def _weight(linear) -> torch.Tensor:
    """The weight a linear layer multiplies by: its own, or a PEFT LoRA layer's base weight plus the deltas of its
    active adapters (unless they are merged into it already or disabled), a new tensor."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight
    w = base.weight
    if linear.merged or linear.disable_adapters:
        return w
    for name in linear.active_adapters:
        if name in linear.lora_A:
            w = w + linear.get_delta_weight(name).to(w.dtype)
    return w


def _bias(linear) -> Optional[torch.Tensor]:
    return getattr(linear, "base_layer", linear).bias


def _fused(params: List[torch.Tensor]) -> torch.Tensor:
    """``params`` concatenated along their first dimension. When all are parameters that need no gradient (a
    model loaded for inference) they become views of the result, so their weights are held once, not twice."""
    fused = torch.cat(list(params), dim=0).contiguous()
    if all(isinstance(p, torch.nn.Parameter) and not p.requires_grad for p in params):
        start = 0
        for p in params:
            p.data = fused[start: start + p.shape[0]]
            start += p.shape[0]
    return fused


def _layer(layer, gemma: bool, n_heads: int, n_kv: int) -> Layer:
    att, mlp = layer.self_attn, layer.mlp
    qkv = [att.q_proj, att.k_proj, att.v_proj]
    wqkv = _fused([_weight(p) for p in qkv])
    bqkv = _fused([_bias(p) for p in qkv]) if _bias(qkv[0]) is not None else None
    if _bias(mlp.gate_proj) is not None:
        raise ValueError("StaticLM cannot run this model: MLP biases")
    wgu = _fused([_weight(mlp.gate_proj), _weight(mlp.up_proj)])
    wo, bo, wd = _weight(att.o_proj), _bias(att.o_proj), _weight(mlp.down_proj)
    if not gemma:
        return Layer(ln1=layer.input_layernorm.weight, wqkv=wqkv, bqkv=bqkv, wo=wo, bo=bo,
                     ln2=layer.post_attention_layernorm.weight, wgu=wgu, wd=wd)
    d = att.q_norm.weight.shape[0]
    qk_norm = torch.cat([_plus_one(att.q_norm.weight).expand(n_heads, d),
                         _plus_one(att.k_norm.weight).expand(n_kv, d)]).contiguous()
    return Layer(ln1=_plus_one(layer.input_layernorm.weight), wqkv=wqkv, bqkv=bqkv, wo=wo, bo=bo,
                 ln2=_plus_one(layer.pre_feedforward_layernorm.weight), wgu=wgu, wd=wd, qk_norm=qk_norm,
                 ln_post_attn=_plus_one(layer.post_attention_layernorm.weight),
                 ln_post_ff=_plus_one(layer.post_feedforward_layernorm.weight), window=_window(layer))


def _heads(cfg) -> Tuple[int, int, int]:
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return n_heads, n_kv, head_dim


def static_layers(model) -> List[Layer]:
    """The decoder layers of a supported ``model`` in the static engine's layout."""
    n_heads, n_kv, _ = _heads(model.config)
    gemma = is_gemma(model)
    with torch.no_grad():
        return [_layer(layer, gemma, n_heads, n_kv) for layer in model.get_decoder().layers]


def final_norm(model) -> torch.Tensor:
    w = model.get_decoder().norm.weight
    return _plus_one(w) if is_gemma(model) else w


def static_settings(model) -> Dict:
    """The StaticLM ``cfg`` of a supported ``model``: heads, norms, attention scale, activation and the Gemma
    extras (``gemma_norm``, ``embed_scale``, ``final_softcap``)."""
    cfg = model.config
    base = model.get_decoder()
    n_heads, n_kv, head_dim = _heads(cfg)
    gemma = is_gemma(model)
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", "silu")
    return dict(n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, eps=cfg.rms_norm_eps,
                vocab=base.embed_tokens.weight.shape[0], hidden=cfg.hidden_size, layers=len(base.layers),
                scale=getattr(base.layers[0].self_attn, "scaling", 1.0 / math.sqrt(head_dim)),
                act=act, gemma_norm=gemma, embed_scale=math.sqrt(cfg.hidden_size) if gemma else None,
                final_softcap=getattr(cfg, "final_logit_softcapping", None) if gemma else None)


def _rope(base, x: torch.Tensor, pos: torch.Tensor, local: bool):
    """cos and sin of the model's own rotary embedding: in transformers 5 Gemma 3's takes the layer type, in
    older versions the local layers have a module of their own (``rotary_emb_local``)."""
    rot = base.rotary_emb
    if "layer_type" in inspect.signature(rot.forward).parameters:
        return rot(x, pos, layer_type="sliding_attention" if local else "full_attention")
    if local and hasattr(base, "rotary_emb_local"):
        return base.rotary_emb_local(x, pos)
    return rot(x, pos)


def rope_tables(model, dtype: torch.dtype) -> Dict[bool, Tuple[torch.Tensor, torch.Tensor]]:
    """(cos, sin), each (max positions, head_dim), for the global layers (key False) and, for a model with
    sliding-window layers, the local ones (key True); only the kinds of layer the model has are computed."""
    cfg = model.config
    base = model.get_decoder()
    embed = base.embed_tokens.weight
    max_pos = int(getattr(cfg, "max_position_embeddings", 4096) or 4096)
    pos = torch.arange(max_pos, device=embed.device)[None]
    kinds = sorted({bool(_window(l)) for l in base.layers}) if is_gemma(model) else [False]
    tables = {}
    with torch.no_grad():
        for local in kinds:
            cos, sin = _rope(base, embed[:1][None].float(), pos, local)
            tables[local] = (cos[0].to(dtype), sin[0].to(dtype))
    # A model of sliding-window layers only (a small Gemma 3) has no global table to build; no layer reads it.
    if False not in tables:
        tables[False] = tables[True]
    return tables
