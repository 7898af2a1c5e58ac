"""What ``train`` writes for ``padellm_ner`` to load: a model folder (adapter or full weights, tokenizer,
``padellm.json``) and, on request, a spaCy pipeline folder that points at it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict

from .data import EncodedData
from .settings import TrainConfigError, TrainSettings

__all__ = ["save_model_folder", "base_model_ref", "model_meta", "write_pipeline_folder"]


def base_model_ref(settings: TrainSettings, source) -> Dict[str, str]:
    """How ``padellm.json`` names the base model: ``[paths] base_ref``, else (training from a model folder) that
    folder's base when it names a package or hub id, else the base's hub id, GGUF file or folder."""
    if settings.base_ref:
        named = settings.base_ref.get("file")
        if named and named != source.gguf_file:
            raise TrainConfigError(
                f"[paths] base_ref names the base file {named!r}, but the model trains from "
                f"{source.gguf_file or source.hub_id or source.base_dir!r}: the model folder would name the wrong "
                "base. Give the matching base_ref, or --paths.base_ref null to name the base by its path")
        return dict(settings.base_ref)
    named = source.meta.get("base")  # a model folder's padellm.json (only those fill ``meta``)
    if isinstance(named, dict) and ("package" in named or "hub" in named):  # a model folder's own portable base
        return dict(named)
    if source.hub_id:
        return {"hub": source.hub_id}
    if source.gguf_file:
        return {"gguf": str(Path(source.base_dir) / source.gguf_file)}
    return {"path": str(source.base_dir)}


def save_model_folder(model, tokenizer, dest: Path, meta: Dict[str, Any], *, lora: bool,
                      base_ref: Dict[str, str], adapter_dtype: str = "bfloat16") -> Path:
    """Write a model folder ``padellm_ner`` loads: adapter (LoRA) or full weights, tokenizer, padellm.json."""
    import torch
    from safetensors.torch import load_file, save_file

    from ..loading import META_FILE

    tmp = Path(str(dest) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = {**meta, "format": "padellm-model", "version": 1}
    if lora:
        model.save_pretrained(tmp / "adapter", safe_serialization=True)
        weights = tmp / "adapter" / "adapter_model.safetensors"
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[adapter_dtype]
        save_file({k: v.to(dtype).contiguous() for k, v in load_file(str(weights)).items()}, str(weights))
        cfg_path = tmp / "adapter" / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_ref.get("hub") or base_ref.get("path") or base_ref.get("gguf") or ""
        cfg_path.write_text(json.dumps(cfg, indent=2))
        meta.update({"base": base_ref, "adapter": "adapter"})
    else:
        model.save_pretrained(tmp, safe_serialization=True)
        meta.update({"base": None, "adapter": None})
    tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def model_meta(settings: TrainSettings, data: EncodedData, ref: Dict[str, str]) -> Dict[str, Any]:
    """The ``padellm.json`` fields of a trained model (``save_model_folder`` adds the format, and the
    trainer the dev scores and step)."""
    template, ar_template = data.template, data.ar_template
    meta = {"labels": data.labels, "template": template.to_dict() if template is not None else None,
            "lang": settings.lang, "protocol": settings.protocol, "text_format": settings.effective_text_format,
            "bos": bool(data.bos_ids),  # whether the prompts started with BOS: decoding does the same
            "training": {"method": settings.method, "base_model": settings.base_model, "seed": settings.seed}}
    meta["training"]["base_ref"] = ref
    if settings.spans_key:  # nested data: the component writes this span group unless told otherwise
        meta["spans_key"] = settings.spans_key
    if settings.ema_decay:
        meta["training"]["ema_decay"] = settings.ema_decay

    if ar_template is not None:
        meta["autoreg_template"] = ar_template.to_dict()
    return meta


def write_pipeline_folder(settings: TrainSettings, model_dir: Path) -> None:
    """A spaCy pipeline folder at ``[paths] pipeline`` whose ``padellm_ner`` loads ``model_dir``."""
    import spacy

    nlp_out = spacy.blank(settings.lang)
    out_config = {"model": str(model_dir)}
    if settings.spans_key:  # nested data: the pipeline writes the span group, as the model was selected
        out_config["spans_key"] = settings.spans_key
    nlp_out.add_pipe("padellm_ner", config=out_config)
    nlp_out.to_disk(settings.pipeline)
