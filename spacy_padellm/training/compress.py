"""Ship a fully fine-tuned model as a small LoRA adapter: truncated SVD of each linear layer's delta.

``python -m spacy_padellm compress FULL_MODEL_DIR OUT_DIR --rank 24`` reads a model folder written by
``train`` with ``method = "full"`` (its padellm.json names the base it was trained from), computes
``W_tuned - W_base = U S V^T`` for every linear layer of the decoder, keeps the top ``rank`` singular
directions as a PEFT LoRA adapter (``lora_B = U_r S_r``, ``lora_A = V_r^T``, scale 1), and writes a
model folder with that adapter on top of the same base. Parameters outside the decoder's linear
layers (embeddings, norms) are not carried: the report says how large their change was, so the F1
cost of the compression can be judged together with an evaluation of the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional


def extract_lora(base_model, tuned_model, rank: int, device=None) -> Dict[str, Any]:
    """(PEFT state dict, target module names, report) of the rank-``rank`` approximation of the deltas."""
    import torch

    base = dict(base_model.named_modules())
    state: Dict[str, torch.Tensor] = {}
    targets = set()
    kept_energy = []
    for name, module in tuned_model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name not in base or ".layers." not in f".{name}":
            continue
        w_base = base[name].weight.detach().to(device or module.weight.device, torch.float32)
        delta = module.weight.detach().to(w_base.device, torch.float32) - w_base
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.shape[0])
        state[f"base_model.model.{name}.lora_B.weight"] = (u[:, :r] * s[:r]).cpu().contiguous()
        state[f"base_model.model.{name}.lora_A.weight"] = vh[:r].cpu().contiguous()
        total = float((s ** 2).sum())
        kept_energy.append(float((s[:r] ** 2).sum()) / total if total > 0 else 1.0)
        targets.add(name.rsplit(".", 1)[-1])
    other = {}
    tuned_params = dict(tuned_model.named_parameters())
    for name, p in base_model.named_parameters():
        if ".layers." in name and name.endswith(".weight") and any(f".{t}." in name for t in targets):
            continue
        if name in tuned_params:
            diff = (tuned_params[name].detach().float().cpu() - p.detach().float().cpu()).norm()
            other[name] = float(diff / (p.detach().float().cpu().norm() + 1e-12))
    report = {
        "rank": rank,
        "layers": len(kept_energy),
        "mean_energy_kept": sum(kept_energy) / max(1, len(kept_energy)),
        "min_energy_kept": min(kept_energy) if kept_energy else None,
        "max_relative_change_not_carried": max(other.values()) if other else 0.0,
        "not_carried": sorted(other, key=other.get, reverse=True)[:5],
    }
    return {"state": state, "targets": sorted(targets), "report": report}


def compress(full_dir: str, out_dir: str, rank: int = 24, adapter_dtype: str = "bfloat16",
             base: Optional[str] = None, device: Optional[str] = None) -> Dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from ..loading import META_FILE, copy_tokenizer_files, load_base_model, resolve_model

    full_dir_p = Path(full_dir)
    meta = json.loads((full_dir_p / META_FILE).read_text())
    base_location = base or meta.get("training", {}).get("base_model")
    if not base_location:
        raise ValueError(f"{full_dir}: padellm.json does not name the base model; pass --base")
    base_source = resolve_model(base_location)
    tuned_source = resolve_model(full_dir)
    base_model = load_base_model(base_source, torch.float32)
    tuned_model = load_base_model(tuned_source, torch.float32)
    result = extract_lora(base_model, tuned_model, rank, device)
    out = Path(out_dir)
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[adapter_dtype]
    save_file({k: v.to(dtype) for k, v in result["state"].items()}, str(out / "adapter" / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
        "target_modules": result["targets"], "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "base_model_name_or_path": base_location, "init_lora_weights": True, "use_rslora": False,
        "modules_to_save": None,
    }
    (out / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    copy_tokenizer_files(full_dir_p, out)
    base_ref = meta.get("base_ref") or meta.get("training", {}).get("base_ref")
    if not base_ref:
        base_ref = {"gguf": str(Path(base_source.base_dir) / base_source.gguf_file)} if base_source.gguf_file else \
            {"path": str(base_source.base_dir)}
    new_meta = {**meta, "base": base_ref, "adapter": "adapter",
                "compression": {"from": "full fine-tuning", **result["report"]}}
    (out / META_FILE).write_text(json.dumps(new_meta, indent=2, ensure_ascii=False) + "\n")
    return result["report"]


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="turn a fully fine-tuned model folder into a small LoRA adapter (SVD)")
    p.add_argument("full_model")
    p.add_argument("output")
    p.add_argument("--rank", type=int, default=24)
    p.add_argument("--base", default=None, help="base model (default: the one padellm.json names)")
    p.add_argument("--adapter-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--device", default=None, help="where to run the SVDs (e.g. cuda)")
    p.set_defaults(func=run)


def run(args) -> int:
    report = compress(args.full_model, args.output, args.rank, args.adapter_dtype, args.base, args.device)
    print(json.dumps(report, indent=2))
    return 0
