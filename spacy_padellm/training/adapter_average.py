"""Checkpoint averaging: LoRA model folders of one base and one task averaged into one model folder.

``python -m spacy_padellm average A B --weights 1,3 --output OUT`` writes a model folder whose adapter is the
weighted average of A's and B's (weights normalised to sum 1), e.g. a model and the same model trained further.
Two ways to average:

* ``"exact"`` (the default): the weighted average of the adapters' weight updates, held exactly by one adapter whose
  rank is the sum of theirs. With ``s_i`` each adapter's scale (``lora_alpha / r``), the new adapter stacks the
  ``A_i`` and puts ``w_i s_i B_i`` side by side, at scale 1, so ``B A = sum_i w_i s_i B_i A_i``: the model is the
  average of the merged models' weights, at no cost in speed once merged (the engines merge it at load); the file
  is the sum of the inputs' sizes.
* ``"factors"``: ``A = sum_i w_i A_i`` and ``B = sum_i w_i B_i``, the rank and size of one input. Not the average of
  the updates (that of a product is not the product of averages); it only makes sense between adapters that share
  their start, such as one adapter and its continuation.

The output keeps the first folder's description (labels, template, base, tokenizer) with the inputs and weights
recorded under ``"averaged"``; its dev scores and ``int8_ranges.safetensors`` (int8 on the CPU) are not carried:
evaluate it, and run ``calibrate`` on it before using ``quantize`` "int8".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

__all__ = ["average_adapters", "average_models", "normalised"]

MODES = ("exact", "factors")
SAME = ("labels", "template", "lang", "protocol", "text_format", "base")  # what the averaged models must share
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def normalised(weights: Sequence[float], n: int) -> List[float]:
    """``weights`` (one per model, none negative, not all 0) scaled to sum 1; equal weights when empty."""
    if not weights:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} models")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 and not all 0, got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


def _scale(config: Dict[str, Any], where: str) -> float:
    """The factor PEFT multiplies ``B A`` by; a ValueError for adapters this module cannot average."""
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise ValueError(f"{where}: only plain LoRA adapters can be averaged (peft_type LORA, no DoRA)")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{where}: adapters with per-module ranks (rank_pattern, alpha_pattern) cannot be averaged")
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / (r ** 0.5) if config.get("use_rslora") else alpha / r


def average_adapters(states: Sequence[Dict[str, Any]], configs: Sequence[Dict[str, Any]], weights: Sequence[float],
                     mode: str = "exact") -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(state dict, adapter config) of the average of the adapters ``states``/``configs`` (PEFT's), ``weights``
    summing to 1. The tensors keep the first adapter's dtype; the sums are made in float32."""
    import torch

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    keys = set(states[0])
    for i, state in enumerate(states[1:], 2):
        if set(state) != keys:
            missing = sorted(keys ^ set(state))[:3]
            raise ValueError(f"adapter {i} does not adapt the same layers as adapter 1 (e.g. {missing})")
    scales = [_scale(c, f"adapter {i}") for i, c in enumerate(configs, 1)]
    if mode == "factors" and len({(c["r"], s) for c, s in zip(configs, scales)}) > 1:
        raise ValueError("mode 'factors' needs adapters of one rank and scale; use 'exact'")
    dtype = next(iter(states[0].values())).dtype
    out = {}
    for key in sorted(keys):
        parts = [s[key].float() for s in states]
        if mode == "factors":
            out[key] = sum(w * p for w, p in zip(weights, parts)).to(dtype)
        elif "lora_B" in key:
            out[key] = torch.cat([w * s * p for w, s, p in zip(weights, scales, parts)], dim=1).to(dtype)
        else:
            out[key] = torch.cat(parts, dim=0).to(dtype)
    config = dict(configs[0])
    if mode == "exact":
        rank = sum(c["r"] for c in configs)
        config.update(r=rank, lora_alpha=rank, use_rslora=False)
    return out, config


def _read(location: str):
    """(ModelSource, adapter state dict, adapter config) of the LoRA model folder ``location`` names."""
    from safetensors.torch import load_file

    from ..loading import resolve_model

    source = resolve_model(location)
    if source.folder is None or source.adapter_dir is None:
        raise ValueError(f"{location} is not a LoRA model folder (a folder train wrote with method lora)")
    config = json.loads((source.adapter_dir / CONFIG_FILE).read_text(encoding="utf8"))
    return source, load_file(str(source.adapter_dir / ADAPTER_FILE)), config


def _check_same(sources) -> None:
    first = sources[0].meta
    for source in sources[1:]:
        for key in SAME:
            if source.meta.get(key) != first.get(key):
                raise ValueError(f"{source.location} and {sources[0].location} differ in {key!r}: "
                                 f"{source.meta.get(key)!r} against {first.get(key)!r}")


def _relocated(source, out: Path) -> Dict[str, Any]:
    """``source``'s padellm.json with its relative paths (a shared tokenizer, a base file) pointing from ``out`` to
    the same place."""
    meta = dict(source.meta)
    if meta.get("tokenizer"):
        meta["tokenizer"] = os.path.relpath(source.tokenizer_dir, out)
    base = meta.get("base")
    if isinstance(base, dict):
        for key in ("gguf", "path"):
            if key in base:
                base = {**base, key: os.path.relpath((source.folder / base[key]).resolve(), out)}
        meta["base"] = base
    return meta


def average_models(models: Sequence[str], output: str, weights: Sequence[float] = (),
                   mode: str = "exact") -> Path:
    """Write the model folder ``output`` holding the average of the LoRA model folders ``models`` (or
    ``padellm:NAME``); its path."""
    from safetensors.torch import save_file

    from ..loading import META_FILE, copy_tokenizer_files

    if len(models) < 2:
        raise ValueError("give at least two model folders to average")
    weights = normalised(weights, len(models))
    out = Path(output).resolve()
    if out.exists():
        raise ValueError(f"{out} exists; give a new folder")
    read = [_read(m) for m in models]
    sources = [r[0] for r in read]
    _check_same(sources)
    state, config = average_adapters([r[1] for r in read], [r[2] for r in read], weights, mode)
    first = sources[0]
    (out / "adapter").mkdir(parents=True)
    save_file(state, str(out / "adapter" / ADAPTER_FILE), metadata={"format": "pt"})
    (out / "adapter" / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf8")
    if first.tokenizer_dir == first.folder:  # the tokenizer beside the model: copied
        copy_tokenizer_files(first.folder, out)
    meta = _relocated(first, out)
    for stale in ("dev_scores", "step"):
        meta.pop(stale, None)
    meta.update(adapter="adapter", averaged={
        "mode": mode, "models": [{"model": str(m), "weight": w, "step": s.meta.get("step"),
                                  "dev_scores": (s.meta.get("dev_scores") or {}).get("ents_f")}
                                 for m, w, s in zip(models, weights, sources)]})
    (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("average", help="average LoRA model folders of one base (checkpoint averaging)")
    p.add_argument("models", nargs="+", help="LoRA model folders (from train) or padellm:NAME, two or more")
    p.add_argument("--output", required=True, help="the model folder to write (must not exist)")
    p.add_argument("--weights", default="", help="one weight per model, comma-separated, normalised to sum 1 "
                                                   "(default: equal)")
    p.add_argument("--mode", default="exact", choices=MODES,
                   help="exact: the average of the weight updates, rank the sum of the inputs' (default); "
                        "factors: the average of the LoRA factors, one input's rank")
    p.set_defaults(func=run)


def run(args) -> int:
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    out = average_models(args.models, args.output, weights, args.mode)
    print(f"averaged model written to {out}")
    return 0
