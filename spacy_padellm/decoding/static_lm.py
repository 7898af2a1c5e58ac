"""A lean forward pass of a Llama-family causal LM over a static KV cache, with CUDA graphs.

This is the compute kernel of the tree decoder (``tree/``); it knows nothing of PaDeLLM or
spaCy. One call appends tokens to rows of a preallocated KV cache and returns the greedy next token
(and its log-probability) at chosen positions::

    tokens, positions, slots : (B, T)   token ids, RoPE positions, cache columns they are written to
    mask                     : (B, T, S) which cache columns (of the first S) each token attends to (``launch``
                               and ``run`` also take a ``row_mask.RowMask``: the rows of the real tokens); it goes
                               to the device bit-packed either way
    outputs                  : (M,)     which places b * T + t to read the next token at (``run``;
                                        ``step`` takes them as (B, O) positions per row)

Every token carries its own position, cache column and attention row, so a row of the cache can hold
a *tree* of sequences: the document text once, and every label and mention branch after it, each
branch attending only to its ancestors (the prefix sharing of PaDeLLM without copying a KV cache).

On CUDA each shape bucket is captured once as a CUDA graph and replayed (``graph_max_tokens`` sends
wider passes to the eager path, packed on exactly their real tokens), which removes the per-kernel launch
overhead that dominates a 135M-parameter model. A pass whose bucket of real tokens is smaller than its
(rows x places) layout runs *packed*: projections and MLPs on the real tokens only. On the CPU the same
function runs eagerly, with no shape buckets, always on the real tokens only, and attention in segments of
rows of like width (``segments.py``).
What a pass goes through besides the model lives beside it: the cache in ``kv_cache.py``, the shape buckets and the
packed layout in ``pass_layout.py``, the copies up and back and the CUDA graphs in ``staging.py``, the LM head over
some tokens' rows in ``restricted_head.py``.
Supported architectures: Llama, Mistral, Qwen2 (SmolLM2 is a Llama) and Gemma 3 text models; what each
family adds is read in ``architectures.py``. Other models use the dynamic-cache engine in ``dynamic.py``.

Sliding-window layers (Gemma 3's local ones) need no position cache: a token attends to its ancestors only,
one cache column per position before it, laid down in order, so the columns it attends to after a column
count how many positions back that column is; the window keeps the last ``window`` of them.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.torch_version import TorchVersion
import torch.nn.functional as F

from . import architectures as arch
from .architectures import ACTIVATIONS, Layer as _Layer
from .counts import final_logits
from .fused import Kernels, gated, greedy, rotate
from .kv_cache import KVCache
from .pass_layout import dense_inputs, out_bucket, packed_inputs, pad_step, padded_shape, round_up, step_bucket
from .quantize import WEIGHT_ONLY, cpu_has_bf16, linear, quantize_head, quantize_layers
from .restricted_head import RestrictedHead
from .row_mask import RowMask, unpack, upload
from .segments import Segments
from .staging import CapturedPass, HostBuffers, Inputs, Pending, stacked
from . import head_kernel, tree_attention, triton_launch

__all__ = ["Pending", "StaticLM", "static_lm_supported"]


def static_lm_supported(model) -> Tuple[bool, str]:
    """(True, "") if ``model`` can run on StaticLM, else (False, what of it the static engine does not implement)."""
    why = arch.unsupported(model)
    return not why, why


# whether ``scaled_dot_product_attention`` takes ``enable_gqa`` (torch 2.5 or later; a 2.5 pre-release counts as older)
GROUPED_SDPA = TorchVersion(torch.__version__) >= "2.5"


def grouped_sdpa_for(device: torch.device) -> bool:
    """Whether a pass on ``device`` runs attention through grouped-query heads by default (``StaticLM.grouped_sdpa``):
    where a fused kernel takes them with a mask, cuDNN's on a Hopper or later GPU (torch 2.8 or later). Elsewhere
    PyTorch would run them through its plain kernel, which repeats the keys and values for every query head."""
    if device.type != "cuda" or TorchVersion(torch.__version__) < "2.8":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9 and torch.backends.cuda.cudnn_sdp_enabled()


LOGIT_ROWS = 128  # on the CPU, a pass's logits are computed this many predictions at a time
PAIR_ROWS = 1 << 16  # (output, token) pairs whose logits a steered pass computes at a time (``pair_logits``)
# Under "bf16" on the CPU, a pass's projections and MLPs run on this many tokens at a time: their activations then
# stay in the CPU's caches and the allocator's heap (a pass of 3,500 tokens ran its MLPs 1.8x faster this way).
BF16_ROWS = 1024

class _Packing(NamedTuple):
    """How a packed pass's L tokens lie in its (B, T) layout: ``scatter`` (L,) each token's place (padding: the spare
    place B * T), ``gather`` (L,) the place its attention output is read from (padding: 0), and for the Triton
    attention ``places`` (B, T) int32: each place's token (-1: none)."""

    scatter: torch.Tensor
    gather: torch.Tensor
    places: Optional[torch.Tensor]

    @classmethod
    def of(cls, scatter: torch.Tensor, gather: torch.Tensor, n_places: int, with_places: bool) -> "_Packing":
        places = None
        if with_places:
            L = scatter.shape[0]
            places = torch.full((n_places + 1,), -1, dtype=torch.int32, device=scatter.device)
            places.index_copy_(0, scatter, torch.arange(L, dtype=torch.int32, device=scatter.device))
            places = places[:n_places]
        return cls(scatter, gather, places)


class StaticLM:
    """Weights of a decoder-only LM laid out for one fused pass per step, plus its static KV cache."""

    all_captures = 0  # CUDA graphs captured by every StaticLM of the process (the benchmark reports them per run)

    def __init__(self, cfg: dict, embed: torch.Tensor, layers: List[_Layer], norm: torch.Tensor,
                 lm_head: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, cuda_graphs: bool = True,
                 local_rope: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        self.cfg = cfg
        self.embed = embed
        self.layers = layers
        self.norm = norm
        self.lm_head = lm_head
        self.cos, self.sin = cos, sin  # (max_pos, head_dim)
        self.local_rope = local_rope  # (cos, sin) of the sliding-window layers, where they have their own
        self.windows = sorted({l.window for l in layers if l.window})
        self.act = ACTIVATIONS[cfg.get("act", "silu")]
        self.gemma_norm = bool(cfg.get("gemma_norm"))  # norms in float32 times (1 + weight), as Gemma's
        scale = cfg.get("embed_scale")
        self.embed_scale = None if scale is None else torch.tensor(scale).to(device=embed.device, dtype=embed.dtype)
        self.final_softcap = cfg.get("final_softcap")
        self.device = embed.device
        # the tokens the greedy choice is made among (``restrict_head``)
        self.restricted = RestrictedHead(self.device)
        self.n_heads = cfg["n_heads"]
        self.n_kv = cfg["n_kv_heads"]
        self.head_dim = cfg["head_dim"]
        self.group = self.n_heads // self.n_kv
        self.eps = cfg["eps"]
        self.scale = cfg.get("scale", 1.0 / math.sqrt(self.head_dim))
        self.max_positions = int(cos.shape[0])
        self.use_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self._graphs: Dict[Tuple[int, ...], CapturedPass] = {}  # by (packed, L, B, T, S, M, head buffer rows)
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        # the KV cache, in the dtype of attention too (``dtype``); graphs captured over it are forgotten when it changes
        # (through a weak reference: the cache does not keep its StaticLM, and so its graphs, alive)
        self.cache = KVCache(len(layers), self.n_kv, self.head_dim, embed.dtype, self.device, _forgetter(self))
        self.passes = 0  # forward passes run; of them packed ones; CUDA graphs captured
        self.packed_passes = 0
        # tokens fed by the passes (their real tokens) and run through their projections and MLPs (real and padding)
        self.real_tokens = 0
        self.computed_tokens = 0
        self.captures = 0
        self.eager_passes = 0
        # Run a pass packed (projections on its real tokens only) when their bucket is smaller than its layout.
        self.packing = True
        # Attention of the dense and packed layouts through ``scaled_dot_product_attention``'s grouped-query heads
        # (``_attend``): no copy of the queries or outputs, a g-times smaller mask; by default where a fused kernel
        # takes them (``grouped_sdpa_for``). Set before the first pass: CUDA graphs keep the layout they captured.
        self.grouped_sdpa = grouped_sdpa_for(self.device)
        # Attention of the dense and packed layouts through the Triton kernels of ``tree_attention`` (``use_tree_
        # attention``): the query/key norm, RoPE and the cache writes in one kernel, and attention reading the pass's
        # boolean mask in another, instead of ``scaled_dot_product_attention`` over an additive one.
        self.tree_attention = False
        # The LM head's greedy step through the Triton kernels of ``head_kernel`` (``use_head_kernel``), without
        # writing each output's logits, instead of the head's matrix product and ``fused.greedy``.
        self.head_kernel = False
        # Eager passes on the CPU: no shape buckets, projections on the real tokens only, and attention in segments
        # of rows of like width (``segments.py``). Not with CUDA graphs, which need fixed shapes.
        self.segmented = self.device.type == "cpu"
        # Tokens a pass's projections and MLPs run on at a time (None: all at once). Not for int8, whose activation
        # ranges are taken per call: its entities would change with the blocks.
        self.row_block: Optional[int] = None
        # CUDA graphs for passes of at most this many real tokens (None: all); a wider pass runs eagerly, packed on
        # exactly its real tokens (no shape bucket). Eager passes pay their hundreds of kernel launches from the host:
        # with bucketed shapes, running wide passes eager made nlp.pipe slower.
        self.graph_max_tokens: Optional[int] = None
        # Shape buckets per doubling for a pass's packed tokens and its outputs (``pass_layout.step_bucket``; 1:
        # powers of two): more of them, less padding through the projections, MLPs and LM head, more graphs captured.
        self.bucket_steps = 1
        # the element-wise steps fused (``fuse``; None: the eager pass, kernel by kernel)
        self.kernels: Optional[Kernels] = None
        # host memory for a pass's inputs (one transfer per pass) and its outputs (one read back)
        self.host = HostBuffers(self.device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the KV cache and of attention (the model's own; "bf16" makes it bfloat16 on a float32 one)."""
        return self.cache.dtype

    # -- construction --

    @classmethod
    def from_hf(cls, model, *, cuda_graphs: bool = True) -> "StaticLM":
        ok, why = static_lm_supported(model)
        if not ok:
            raise ValueError(f"StaticLM cannot run this model: {why}")
        embed = model.get_decoder().embed_tokens.weight
        rope = arch.rope_tables(model, embed.dtype)
        return cls(arch.static_settings(model), embed, arch.static_layers(model), arch.final_norm(model),
                   model.get_output_embeddings().weight, *rope[False], cuda_graphs=cuda_graphs,
                   local_rope=rope.get(True))

    @classmethod
    def random(cls, *, hidden: int, layers: int, n_heads: int, n_kv_heads: int, intermediate: int, vocab: int,
               max_positions: int = 4096, rope_theta: float = 10000.0, device="cuda", dtype=torch.bfloat16,
               seed: int = 0, cuda_graphs: bool = True) -> "StaticLM":
        """A randomly initialised model of a given shape (for latency measurements at scale)."""
        gen = torch.Generator(device=device).manual_seed(seed)
        head_dim = hidden // n_heads

        def w(*shape):
            t = torch.empty(shape, device=device, dtype=dtype)
            return t.normal_(0.0, 0.02, generator=gen)

        ones = torch.ones(hidden, device=device, dtype=dtype)
        blocks = [_Layer(ln1=ones, wqkv=w((n_heads + 2 * n_kv_heads) * head_dim, hidden), bqkv=None,
                         wo=w(hidden, n_heads * head_dim), bo=None, ln2=ones, wgu=w(2 * intermediate, hidden),
                         wd=w(hidden, intermediate)) for _ in range(layers)]
        inv = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
        freqs = torch.arange(max_positions, device=device).float()[:, None] * inv[None]
        emb = torch.cat([freqs, freqs], dim=-1)
        info = dict(n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, eps=1e-5, vocab=vocab,
                    hidden=hidden, layers=layers)
        embed = w(vocab, hidden)
        return cls(info, embed, blocks, ones, w(vocab, hidden), emb.cos().to(dtype), emb.sin().to(dtype),
                   cuda_graphs=cuda_graphs)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights read by one forward step (embedding rows excluded, LM head included)."""
        total = _nbytes(self.lm_head) + _nbytes(self.norm)
        for l in self.layers:
            for t in (l.ln1, l.wqkv, l.bqkv, l.wo, l.bo, l.ln2, l.wgu, l.wd, l.qk_norm, l.ln_post_attn, l.ln_post_ff):
                if t is not None:
                    total += _nbytes(t)
        return total

    def quantize(self, method: str, ranges=None) -> None:
        """Run the decoder layers' matrices (and under "int8-head", "bf16" and "int8-weight-only" the LM head) as
        ``method`` (``quantize.QUANTIZATIONS``; "int8-weight-only" on any device, the others on the CPU); int8 smoothed
        by activation ``ranges`` if given (``quantize.quantize_layers``); under "bf16" the KV cache and attention in
        bfloat16 too. Twins made after this share the quantized weights."""
        if self.device.type != "cpu" and method != WEIGHT_ONLY:
            raise ValueError(f"quantize {method!r} runs on the CPU only (this model is on {self.device.type}); "
                             f"set quantize to null or {WEIGHT_ONLY!r}")
        if method == "bf16" and not cpu_has_bf16():
            warnings.warn("quantize 'bf16': this CPU has no bfloat16 matrix instructions (AMX or AVX512-BF16), so "
                          "its bfloat16 products run slower than float32 ones; set quantize to null or 'int8'")
        self.layers = quantize_layers(self.layers, method, ranges)
        self.lm_head = quantize_head(self.lm_head, method)
        if method == "bf16":
            self.cache.release()
            self.cache.dtype, self.row_block = torch.bfloat16, BF16_ROWS

    def fuse(self, compiled: bool = True) -> None:
        """Run the passes that follow with the element-wise steps fused (``fused.Kernels``: compiled into one kernel
        each, or as plain torch), on the GPU's path (not the CPU's segmented one). Twins made after this share them."""
        self._forget_graphs()
        self.kernels = Kernels(self.act, compiled)

    def use_tree_attention(self, on: bool = True) -> None:
        """Run the dense and packed passes that follow with attention through ``tree_attention``'s Triton kernels
        (``on``), or through ``scaled_dot_product_attention``. Needs Triton and a power-of-two head size of at
        least 16; on the CPU, Triton's interpreter (``TRITON_INTERPRET=1``)."""
        if on:
            self._check_triton("attention_kernel")
            tree_attention.check_heads(self.n_heads, self.n_kv, self.head_dim)
        self._forget_graphs()
        self.tree_attention = on

    def use_head_kernel(self, on: bool = True) -> None:
        """Run the LM head's greedy step of the passes that follow through ``head_kernel``'s Triton kernels (``on``;
        a float head only: a quantized one stays torch's), or through its matrix product and ``fused.greedy``. Needs
        Triton; on the CPU, Triton's interpreter (``TRITON_INTERPRET=1``)."""
        if on:
            self._check_triton("head_kernel")
        self._forget_graphs()
        self.head_kernel = on

    def _check_triton(self, setting: str) -> None:
        """A ValueError unless ``setting`` "triton" can run here: on the dense and packed passes (not the CPU's
        segmented ones), with Triton importable."""
        if self.segmented:
            raise ValueError(f"{setting} 'triton' runs the GPU's dense and packed passes, not the CPU's segmented ones")
        if not triton_launch.available():
            raise ValueError(f"{setting} 'triton' needs Triton (it comes with torch's CUDA wheels)")

    # -- the KV cache (``cache``), and the graphs captured over it --

    def _forget_graphs(self) -> None:
        # A memory pool whose graphs are all gone cannot take new captures: start a fresh one.
        self._graphs.clear()
        if self.use_graphs and self.device.type == "cuda":
            self._pool = torch.cuda.graph_pool_handle()

    @property
    def runs_segmented(self) -> bool:
        """Whether passes run eagerly in segments (``segmented``, and no CUDA graphs, which need fixed shapes)."""
        return self.segmented and not self.use_graphs

    @property
    def compacts(self) -> bool:
        """Whether a batch moves its active cache rows to the front as rows finish (``TreeBatch``): not when segmented,
        where a row that feeds nothing costs a pass nothing, and moving the cache's rows would cost a copy of it."""
        return not self.runs_segmented

    # -- the forward pass --

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.gemma_norm:
            return self._rms_float(x, w)
        if self.device.type == "cuda":  # one fused kernel (fp32 math inside)
            return F.rms_norm(x, (x.shape[-1],), w, self.eps)
        dtype = x.dtype  # transformers' own arithmetic, for bit-identical CPU results
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * x.to(dtype)

    def _rms_float(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Gemma's RMSNorm: normalised in float32, times the float32 ``w`` (1 + weight; it may hold one row per
        head), then cast back."""
        xf = x.float()
        if self.device.type == "cuda":
            return (F.rms_norm(xf, (x.shape[-1],), None, self.eps) * w).to(x.dtype)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * w).to(x.dtype)

    @staticmethod
    def _additive(mask: torch.Tensor, g: int, dtype: torch.dtype) -> torch.Tensor:
        """The (B, T, S) mask as an additive one for g query heads per KV head stacked as g * T rows: (B, 1, g * T, S)
        (g = 1: one row per token, every head under it, as grouped-query attention takes it)."""
        B, T, S = mask.shape
        return torch.zeros((B, 1, g * T, S), dtype=dtype, device=mask.device).masked_fill_(
            ~mask[:, None, None].expand(B, 1, g, T, S).reshape(B, 1, g * T, S), float("-inf"))

    @staticmethod
    def _windowed(mask: torch.Tensor, window: int) -> torch.Tensor:
        """The mask of a sliding-window layer: of the columns a token attends to (its ancestors, one per
        position, in order), those fewer than ``window`` positions back, i.e. with fewer than ``window``
        attended columns after them."""
        m = mask.to(torch.int32)
        after = m.sum(-1, keepdim=True) - m.cumsum(-1, dtype=torch.int32)
        return mask & (after < window)

    def _pass(self, tokens, positions, slots, rows, scatter, gather, bits, out, chains, shape):
        """``_forward`` of a pass as it is uploaded: its mask as the bit-packed rows and chains of its tokens
        (``row_mask``), laid out as (B, T, S) here, on the device (in the CUDA graph)."""
        mask = unpack(bits, chains, slots, scatter, *shape)
        return self._forward(tokens, positions, slots, rows, scatter, gather, mask, out)

    def _forward(self, tokens, positions, slots, rows, scatter, gather, mask, out, segments=None):
        """One pass over L tokens (1-D inputs) laid out for attention as B rows x T places.

        Dense (``scatter`` is None): token i is place i of the (B, T) layout. Packed: only the real tokens
        are given; the projections and MLPs run on those alone, and each token's query is scattered to
        its place (``scatter``; padding tokens go to a spare place B*T) for attention and its output
        gathered back (``gather``). Segmented (``segments``, a prepared ``segments.Segments``; ``mask`` is
        None): the real tokens only, attending in the segments' layout. ``out``: which of the L tokens to
        read the next token at.
        """
        B, T, S = mask.shape if mask is not None else (0, 0, 0)
        g = self.group
        packing = None if scatter is None else _Packing.of(scatter, gather, B * T, self.tree_attention)
        x = F.embedding(tokens, self.embed)  # (L, width)
        if self.embed_scale is not None:
            x = x * self.embed_scale
        # (cos, sin) of the global layers (key False) and of the sliding-window ones (True), each (L, 1, D)
        rope = {False: (self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1))}
        if self.local_rope is not None:
            rope[True] = (self.local_rope[0][positions].unsqueeze(1), self.local_rope[1][positions].unsqueeze(1))
        # Grouped-query attention without repeating K/V (``_attend``): through the grouped-query heads of
        # ``scaled_dot_product_attention``, one mask row per token; or the g query heads of one KV head stacked as
        # g*T query rows, each with the mask of its token. The mask is made additive once per pass (and once per
        # sliding window).
        mg = 1 if self.grouped_sdpa else g  # query rows per token in the additive mask
        # the tree kernel reads the boolean masks as they are
        made = (lambda m: m) if self.tree_attention else (lambda m: self._additive(m, mg, self.dtype))
        amasks = {None: None} if mask is None else {None: made(mask)}
        for w in self.windows if mask is not None else ():
            # a token attends to at most S columns: a window of S or more keeps them all (the same mask)
            amasks[w] = amasks[None] if S <= w else made(self._windowed(mask, w))
        if self.kernels is not None and segments is None:
            x = self._fused_layers(x, rope, amasks, rows, slots, packing, B, T, S)
        else:
            x = self._layers(x, rope, amasks, rows, slots, packing, B, T, S, segments)
        hidden = self._rms(x.index_select(0, out), self.norm)
        step = self.kernels.greedy if self.kernels is not None and segments is None else greedy
        if self.device.type == "cuda" or hidden.shape[0] <= LOGIT_ROWS:
            tok, logp, lse = self._greedy(hidden, step)
        else:
            # On the CPU in blocks of rows: a pass that wants many predictions (every mention tag of a batch) would
            # otherwise hold a vocabulary-wide row of logits, and its exponentials, for each of them at once.
            parts = [self._greedy(hidden[i: i + LOGIT_ROWS], step) for i in range(0, hidden.shape[0], LOGIT_ROWS)]
            tok, logp, lse = (torch.cat(p) for p in zip(*parts))
        # what a steered pass reads its choices from again (``Steering``): the final hidden states and each
        # output's log softmax denominator
        self.last_hidden, self.last_lse = hidden, lse
        return tok, logp

    def _layers(self, x, rope, amasks, rows, slots, packing, B: int, T: int, S: int, segments):
        """The decoder layers of ``_forward``, kernel by kernel: the residual stream after the last layer."""
        L = x.shape[0]
        for i, layer in enumerate(self.layers):
            kc, vc = self.cache.k[i], self.cache.v[i]
            cos, sin = rope[layer.window is not None]
            q = self._by_rows(L, lambda a, b: self._qkv(x[a:b], layer, cos[a:b], sin[a:b], kc, vc, rows[a:b],
                                                         slots[a:b]))
            if segments is not None:
                o = segments.attend(q, kc, vc, layer.window, self.scale)
            else:
                o = self._attend(q, kc, vc, packing, amasks[layer.window], B, T, S)
            x = self._by_rows(L, lambda a, b: self._mlp(self._add_attention(x[a:b], o[a:b], layer), layer))
        return x

    def _fused_layers(self, x, rope, amasks, rows, slots, packing, B: int, T: int, S: int) -> torch.Tensor:
        """The decoder layers of ``_forward`` with their element-wise steps fused (``self.kernels``): the residual
        stream after the last layer."""
        k, eps, gemma = self.kernels, self.eps, self.gemma_norm
        layers = self.layers
        h = k.norm(x, layers[0].ln1, eps, gemma)
        for i, layer in enumerate(layers):
            kc, vc = self.cache.k[i], self.cache.v[i]
            cos, sin = rope[layer.window is not None]
            qkv = linear(h, layer.wqkv, layer.bqkv).view(-1, self.n_heads + 2 * self.n_kv, self.head_dim)
            if self.tree_attention:
                q = tree_attention.write_cache(qkv, self.n_heads, layer.qk_norm, eps, cos, sin, kc, vc, rows, slots)
            else:
                H = self.n_heads + self.n_kv
                qk = qkv[:, :H] if layer.qk_norm is None else k.norm(qkv[:, :H], layer.qk_norm, eps, True)
                q, key, value = k.rope(qk, qkv[:, H:], cos, sin, self.n_heads, kc.dtype)
                kc[rows, :, slots] = key
                vc[rows, :, slots] = value
            o = self._attend(q, kc, vc, packing, amasks[layer.window], B, T, S)
            x, h = k.residual(x, linear(o, layer.wo, layer.bo), layer.ln_post_attn, layer.ln2, eps, gemma)
            y = linear(k.gated(linear(h, layer.wgu)), layer.wd)
            x, h = k.residual(x, y, layer.ln_post_ff, layers[i + 1].ln1 if i + 1 < len(layers) else None, eps, gemma)
        return x

    def _by_rows(self, L: int, part) -> torch.Tensor:
        """``part(0, L)``, or in blocks of ``row_block`` tokens concatenated."""
        n = self.row_block
        if n is None or L <= n:
            return part(0, L)
        return torch.cat([part(a, min(a + n, L)) for a in range(0, L, n)])

    def _qkv(self, x, layer: _Layer, cos, sin, kc, vc, rows, slots) -> torch.Tensor:
        """The queries (N, H, D) of the N tokens ``x`` (N, width) at a layer, whose keys and values go to its cache
        ``kc``, ``vc`` at (``rows``, ``slots``); ``cos``, ``sin``: their RoPE tables (N, 1, D)."""
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        qkv = linear(self._rms(x, layer.ln1), layer.wqkv, layer.bqkv).view(-1, H + 2 * Hkv, D)
        if self.tree_attention:
            return tree_attention.write_cache(qkv, H, layer.qk_norm, self.eps, cos, sin, kc, vc, rows, slots)
        qk, v = qkv[:, : H + Hkv], qkv[:, H + Hkv:]
        if layer.qk_norm is not None:
            qk = self._rms_float(qk, layer.qk_norm)
        qk = rotate(qk, cos, sin)
        kc[rows, :, slots] = qk[:, H:].to(kc.dtype)  # (no copy unless "bf16" keeps float32 and bfloat16 apart)
        vc[rows, :, slots] = v.to(vc.dtype)
        return qk[:, :H].to(kc.dtype)

    def _add_attention(self, x: torch.Tensor, o: torch.Tensor, layer: _Layer) -> torch.Tensor:
        """x plus the layer's output projection of its attention outputs ``o``."""
        if layer.ln_post_attn is not None:  # Gemma: the attention output is normed before the residual
            return x + self._rms(linear(o, layer.wo, layer.bo), layer.ln_post_attn)
        return _add_linear(x, o, layer.wo, layer.bo)

    def _mlp(self, x: torch.Tensor, layer: _Layer) -> torch.Tensor:
        """x plus the layer's MLP of x (normed first)."""
        a = gated(linear(self._rms(x, layer.ln2), layer.wgu), self.act)
        if layer.ln_post_ff is not None:  # Gemma: and so is the MLP's output
            return x + self._rms(linear(a, layer.wd), layer.ln_post_ff)
        return _add_linear(x, a, layer.wd, None)

    def _greedy(self, hidden: torch.Tensor, step=greedy) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The argmax token after each final hidden state, its log-probability and the log of the softmax's
        denominator (under ``restrict_head``: among its tokens, and normalised over them); ``step``: ``fused.greedy``,
        or the fused kernels' compiled one."""
        r = self.restricted
        head = self.lm_head if r.rows is None else r.rows
        if self.head_kernel and isinstance(head, torch.Tensor):
            tok, logp, lse = head_kernel.greedy(hidden, head, self.final_softcap, r.pad)
        else:
            tok, logp, lse = step(linear(hidden, head), self.final_softcap, r.pad)
        if r.ids is not None:
            tok = r.ids[tok]
        return tok, logp, lse

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.shape[0])

    @property
    def head_restricted(self) -> bool:
        """Whether the greedy choice is made among some tokens alone (``restrict_head``)."""
        return self.restricted.rows is not None

    @property
    def gives_pairs(self) -> bool:
        """Whether ``pair_logits`` can give the logits of (output, token) pairs: a float head (not an int8 or a
        bfloat16-packed one; restricted or not: the pairs read the whole head's rows)."""
        return isinstance(self.lm_head, torch.Tensor)

    def pair_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The float32 logit of token ``ids[i]`` after the final hidden state ``hidden[i]``, as ``logits`` gives it
        (rounded to the head's output dtype, soft-capped), from the head's rows of those tokens alone."""
        w = self.lm_head
        out = torch.empty(len(ids), dtype=torch.float32, device=hidden.device)
        for a in range(0, len(ids), PAIR_ROWS):  # in blocks: a float32 copy of one head row per pair
            b = min(a + PAIR_ROWS, len(ids))
            dots = (hidden[a:b].float() * w.index_select(0, ids[a:b]).float()).sum(-1)
            out[a:b] = dots.to(torch.result_type(hidden, w)).float()
        return final_logits(out, self.final_softcap)

    @torch.inference_mode()
    def restrict_head(self, ids: Optional[Sequence[int]]) -> bool:
        """Make the greedy choice of the passes that follow among ``ids`` alone (token ids), computing the LM head
        over their rows only; None: over the whole vocabulary again. For a float or bfloat16 head (an int8 head is
        left whole; under CUDA graphs, a float head only, in a buffer: ``restricted_head``). Returns whether the head
        is restricted. Steered outputs (the levers) held to allowed tokens choose among them by the restricted head's
        log-probs; biased ones over the whole vocabulary."""
        return self.restricted.restrict(self.lm_head, ids, buffered=self.use_graphs)

    def _attend(self, q, kc, vc, packing: Optional["_Packing"], amask, B: int, T: int, S: int) -> torch.Tensor:
        """Attention outputs (L, H * D) of one layer's queries q (L, H, D) in the (B, T) layout over the first S
        columns of its cache (``_forward``: dense, or ``packing``). With ``grouped_sdpa`` the
        queries go to attention as a (B, H, T, D) view of their (B, T, H, D) layout and its output comes back as one
        (no copy either way), every query head of a KV head under the same (B, 1, T, S) mask; else the g query heads
        of a KV head are stacked as g * T rows of one (a copy in and out). With ``tree_attention``, its Triton kernel
        over the (B, T, S) boolean mask, which reads a packed pass's queries and writes its outputs at their tokens
        (``packing.places``), skipping the blocks of columns a tile's tokens do not see where
        ``tree_attention.skips_blocks``."""
        H, Hkv, D, g = self.n_heads, self.n_kv, self.head_dim, self.group
        skip = tree_attention.skips_blocks(B)
        if packing is not None and packing.places is not None:
            return tree_attention.attend(q, kc, vc, amask, self.scale, skip_empty=skip,
                                         places=packing.places.view(B, T)).view(-1, H * D)
        if packing is not None:
            q = q.new_zeros((B * T + 1, H, D)).index_copy_(0, packing.scatter, q)[: B * T]
        if self.tree_attention:
            o = tree_attention.attend(q.view(B, T, H, D), kc, vc, amask, self.scale, skip_empty=skip).view(B * T, H * D)
        elif self.grouped_sdpa:
            o = F.scaled_dot_product_attention(q.view(B, T, H, D).transpose(1, 2), kc[:B, :, :S], vc[:B, :, :S],
                                               attn_mask=amask, scale=self.scale, enable_gqa=g > 1)
            o = o.transpose(1, 2).reshape(B * T, H * D)
        else:
            q = q.reshape(B, T, H, D).permute(0, 2, 1, 3).reshape(B, Hkv, g * T, D)
            o = F.scaled_dot_product_attention(q, kc[:B, :, :S], vc[:B, :, :S], attn_mask=amask, scale=self.scale)
            o = o.reshape(B, H, T, D).transpose(1, 2).reshape(B * T, H * D)
        return o if packing is None else o.index_select(0, packing.gather)

    def logits(self, hidden: torch.Tensor, head=None) -> torch.Tensor:
        """The float32 logits of final hidden states (the LM head, or ``head``: some of its rows, and Gemma's final
        soft-cap if any)."""
        return final_logits(linear(hidden, self.lm_head if head is None else head).float(), self.final_softcap)

    def padded_shape(self, B: int, T: int, S: int, O: int) -> Tuple[int, int, int, int]:
        """The shape bucket (B, T, S, O) a step of that size runs at (callers may build inputs at it):
        ``pass_layout.padded_shape``, or the step's own shape where passes run segmented (no buckets)."""
        if self.runs_segmented:
            return B, T, min(S, self.cache.cols), O
        return padded_shape(B, T, S, O, self.cache.cols)

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray, mask: np.ndarray,
             out_idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One forward pass over rows 0..B-1 of the cache; returns (tokens, log-probs), each (B, O).

        Inputs are numpy arrays of exact sizes, or already at their ``padded_shape``; they are padded to
        the shape bucket here (padding tokens write to the trash column and attend to column 0, and
        their outputs are dropped).
        """
        B, T = tokens.shape
        S, O = mask.shape[-1], out_idx.shape[1]
        Bb, Tb, Sb, Ob = self.padded_shape(B, T, S, O) if self.cache.k is not None else (B, T, S, O)
        if (Bb, Tb, Sb, Ob) != (B, T, S, O):
            tokens, positions, slots, mask, out_idx = pad_step(tokens, positions, slots, mask, out_idx,
                                                               Bb, Tb, Sb, Ob, self.cache.trash_col)
        outputs = (np.arange(B)[:, None] * Tb + out_idx[:B, :O]).ravel()
        tok, logp = self.run(tokens, positions, slots, mask, outputs)
        return tok.reshape(B, O), logp.reshape(B, O)

    def run(self, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray, mask,
            outputs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One forward pass; returns the (token, log-prob) predicted after each place in ``outputs``
        (``launch(...).result()``)."""
        return self.launch(tokens, positions, slots, mask, outputs).result()

    @torch.inference_mode()
    def launch(self, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray, mask,
               outputs: np.ndarray, steer=None) -> Pending:
        """Start one forward pass; ``.result()`` of what it returns waits for it and gives the (token, log-prob)
        predicted after each place in ``outputs``. On CUDA the pass is only queued (a CUDA graph's replay, or an
        eager pass's kernels), so the host can lay out another StaticLM's pass (``twin``) while this one runs; the
        next ``launch`` on this StaticLM must come after ``result()`` (they share its pinned buffers).

        tokens, positions, slots: (B, T) at a ``padded_shape`` (padding tokens have the trash column as
        slot and attend to column 0); mask: (B, T, S) bools, or a ``row_mask.RowMask`` whose places are those of the
        real tokens (slot not the trash column; it goes to the device bit-packed either way); outputs: flat places
        ``b * T + t``.

        A pass whose bucket of real tokens is smaller than its (B, T) layout runs *packed*: projections and MLPs
        only on the real tokens (padded to their bucket), the layout only for attention. Outputs are read at their places
        only (not at a padded (B, O) grid), so the LM head costs one row per wanted prediction.

        ``steer`` (a ``tree.steering.Steering``, or None) changes the choice at some outputs after the pass, on
        the device: ``steer.apply(lm, hidden, tokens, log-probs)`` (a graph then keeps its final hidden states).
        """
        rows_given = isinstance(mask, RowMask)
        self._check_fits(tokens.shape[0], mask, rows_given)
        if self.runs_segmented:
            return self._launch_segmented(tokens, positions, slots, mask.dense() if rows_given else mask, outputs,
                                          steer)
        flat_slots = slots.reshape(-1)
        real = np.flatnonzero(flat_slots != self.cache.trash_col)
        if not rows_given:
            mask = RowMask.of(mask, real)
        elif not np.array_equal(mask.places, real):
            raise ValueError(f"RowMask: rows at {len(mask.places)} places, not those of the {len(real)} real tokens")
        key, arrays, wide = self._lay_out(tokens, positions, flat_slots, real, mask, outputs)
        self.passes += 1
        self.packed_passes += key[0]
        self.last_shape = key
        if not self.use_graphs or wide:
            return self._run_eager(key, arrays, len(outputs), steer)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = CapturedPass(self, key)
            self.captures += 1
            StaticLM.all_captures += 1
        return self._replay(graph, arrays, len(outputs), steer)

    def _check_fits(self, B: int, mask, rows_given: bool) -> None:
        """A ValueError unless the cache takes a pass of B rows over the mask's S columns, the trash column unseen."""
        c, S = self.cache, mask.shape[-1]
        if c.k is None or B > c.rows or S > c.cols or (
                S == c.cols and (mask.any_last() if rows_given else mask[..., -1].any())):
            raise ValueError(f"cache of {c.rows}x{c.cols} cannot take a step of {B} rows x {S} columns; reserve first")

    def _lay_out(self, tokens, positions, flat_slots, real, mask: RowMask, outputs):
        """A pass's key (packed, L, B, T, S, outputs' bucket, the restricted head's buffer rows), its inputs in
        ``staging.Inputs`` order, and whether it is wider than ``graph_max_tokens`` (then it runs eagerly, packed on
        exactly its real tokens, no shape bucket). Its tokens and outputs are padded to one of ``bucket_steps`` buckets a
        doubling; packed when that bucket of tokens is smaller than its layout (with powers of two, at most half of it: a
        one-row pass's finer T holds all its tokens, whose power of two is no smaller)."""
        B, T = tokens.shape
        N, M = len(real), len(outputs)
        wide = self.graph_max_tokens is not None and N > self.graph_max_tokens
        steps = self.bucket_steps
        Nb, Mb = (round_up(N, 8) if wide else step_bucket(N, steps, 8)), out_bucket(M, B, T, steps)
        packed = self.packing and Nb < B * T
        L = Nb if packed else B * T
        out = np.zeros(Mb, dtype=np.int64)
        if packed:
            arrays, out[:M] = packed_inputs(tokens, positions, flat_slots, real, outputs, L, self.cache.trash_col)
        else:
            arrays, out[:M] = dense_inputs(tokens, positions, flat_slots), outputs
        bits, chains = upload(mask, L, packed)
        self._count_tokens(N, L)
        key = (int(packed), L, B, T, mask.shape[-1], Mb, self.restricted.buffer_rows)
        return key, arrays + [bits, out, chains], wide

    def _count_tokens(self, real: int, computed: int) -> None:
        """A pass's real tokens and those its projections and MLPs run on: the last pass's and the running sums."""
        self.last_real_tokens, self.last_bucket_tokens = real, computed
        self.real_tokens += real
        self.computed_tokens += computed

    def _launch_segmented(self, tokens, positions, slots, mask, outputs, steer) -> Pending:
        """One eager pass on the real tokens alone, attention in segments of rows (``segments.Segments``)."""
        B, T = tokens.shape
        seg = Segments(slots, mask, self.cache.trash_col)
        seg.prepare(self.device, self.dtype, self.group, self.windows, self._windowed)
        where = np.zeros(B * T, dtype=np.int64)
        where[seg.real] = np.arange(len(seg.real))
        arrays = [a.reshape(-1)[seg.real] for a in (tokens, positions, slots)] + [seg.rows, where[outputs]]
        t = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
        self.passes += 1
        self.eager_passes += 1
        N = len(seg.real)
        self.last_shape = (2, N, B, T, mask.shape[-1], len(outputs))
        self._count_tokens(N, N)
        tok, logp = self._forward(t[0], t[1], t[2], t[3], None, None, None, t[4], segments=seg)
        if steer is not None:
            steer.apply(self, self.last_hidden, self.last_lse, tok, logp)
        return Pending(values=(tok.cpu().numpy(), logp.cpu().numpy()))

    def _run_eager(self, key: Tuple[int, ...], arrays, M: int, steer=None) -> Pending:
        """A pass without a CUDA graph, at exactly its shape: its inputs uploaded and its result read back as a graph's
        are (``staging.HostBuffers``), so on CUDA the host does not wait for it either."""
        self.eager_passes += 1
        staged = Inputs(self.device, key, zeroed=False)
        self.host.upload(staged, arrays)
        result = stacked(*self._pass(*staged.views, key[2:5]))
        if steer is not None:
            steer.apply(self, self.last_hidden, self.last_lse, result[0], result[1])
        return self.host.read_back(result, M)

    def _replay(self, graph: CapturedPass, arrays, M: int, steer=None) -> Pending:
        """Upload the inputs, replay, read back (all queued on the stream; the returned Pending waits for them)."""
        self.host.upload(graph.staged, arrays)
        graph.replay(self)
        if steer is not None:
            steer.apply(self, graph.hidden, graph.lse, graph.result[0], graph.result[1])
        return self.host.read_back(graph.result, M)

    def twin(self) -> "StaticLM":
        """A StaticLM over the same weights with a KV cache, CUDA graphs and pinned buffers of its own: a pass
        of one can be laid out on the host while the other's runs on the device (``launch``)."""
        other = StaticLM(self.cfg, self.embed, self.layers, self.norm, self.lm_head, self.cos, self.sin,
                         cuda_graphs=self.use_graphs, local_rope=self.local_rope)
        other.cache.dtype, other.cache.max_cells = self.cache.dtype, self.cache.max_cells
        for name in ("row_block", "use_graphs", "packing", "grouped_sdpa", "tree_attention", "head_kernel",
                     "segmented", "graph_max_tokens", "bucket_steps", "kernels"):
            setattr(other, name, getattr(self, name))
        return other


def _forgetter(lm: StaticLM):
    """A function that makes ``lm`` forget its CUDA graphs while it exists, holding it by a weak reference."""
    ref = weakref.ref(lm)

    def forget() -> None:
        alive = ref()
        if alive is not None:
            alive._forget_graphs()

    return forget


def _nbytes(weight) -> int:
    return weight.nbytes if not isinstance(weight, torch.Tensor) else weight.numel() * weight.element_size()


def _add_linear(x: torch.Tensor, y: torch.Tensor, weight, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x + linear(y, weight, bias): one ``addmm`` for a float weight without bias (transformers' arithmetic)."""
    if bias is None and isinstance(weight, torch.Tensor):
        return torch.addmm(x, y, weight.t())
    return x + linear(y, weight, bias)
