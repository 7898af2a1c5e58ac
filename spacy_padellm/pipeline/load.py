"""Loading a pipeline for a job (evaluate, annotate, benchmark): a spaCy pipeline folder, or a PaDeLLM model
folder / ``padellm:NAME`` wrapped in a blank pipeline, with one set of decoding settings and a device for
every ``padellm_ner`` component in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from ..decoding.settings import DecodeSettings, SettingsError

__all__ = ["load_pipeline", "parse_settings"]


def parse_settings(items: Iterable[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` strings (a command line's ``--set``) as settings; VALUE is read as JSON where it can
    be (``8``, ``true``, ``null``, ``{"PER": -1}``), else as a string. Keys and values are checked."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    DecodeSettings.from_config(out)
    return out


def load_pipeline(model: str, *, lang: Optional[str] = None, spans_key: Optional[str] = None,
                  config: Optional[Mapping[str, Any]] = None, settings: Optional[DecodeSettings] = None):
    """``model`` as a spaCy pipeline. ``config`` (any ``padellm_ner`` config keys: ``device``, ``dtype``,
    decoding settings...) and ``settings`` (all decoding settings at once) apply to every ``padellm_ner``
    component; keys and values are checked when the component is built. ``spans_key`` (None: the pipeline's, else
    the key the model records, else flat; ``""``: flat) is set the same way. Weights load on first use."""
    import spacy

    from ..loading import resolve_model

    changes: Dict[str, Any] = {**(settings.to_config() if settings is not None else {}), **(config or {})}
    if spans_key is not None:  # "" is flat whatever the model records
        changes["spans_key"] = spans_key
    path = Path(model)
    if (path / "config.cfg").exists():
        pipeline_config = spacy.util.load_config(path / "config.cfg")
        overrides = {f"components.{name}.{key}": value
                     for name, block in pipeline_config.get("components", {}).items()
                     if block.get("factory") == "padellm_ner" for key, value in changes.items()}
        return spacy.load(path, config=overrides)
    meta = resolve_model(model).meta  # also for padellm:NAME, not only folders given by path
    nlp = spacy.blank(lang or meta.get("lang", "en"))
    cfg: Dict[str, Any] = {"model": str(model), **changes}
    nlp.add_pipe("padellm_ner", config=cfg)
    return nlp
