"""The ``padellm_ner`` config: the component's own keys (which model, which labels, where spans go) and
every ``DecodeSettings`` key, each declared once; the factory's signature and the README's table are
made from them."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..decoding.settings import DecodeSettings, settings_parameters, settings_table
from ..loading import DEFAULT_MODEL

__all__ = ["COMPONENT_KEYS", "DEFAULT_CONFIG", "config_table", "with_config_signature"]

# key, type, default, meaning
COMPONENT_KEYS: Tuple[Tuple[str, Any, Any, str], ...] = (
    ("model", Optional[str], DEFAULT_MODEL,
     "model folder, `.gguf` file, hub id, or `padellm:NAME` (shipped)"),
    ("labels", List[str], [],
     "entity types; empty = the ones the model folder records (or `initialize` from examples)"),
    ("template", Any, None,
     '`"en"`, `"zh"` or a dict of the four pieces `prefix` `{text}`, `label` `{label}`, `count` `{n}` + '
     "terminator, `mention` `{k}`; default: the model's"),
    ("spans_key", Optional[str], None,
     "nested mode: every span (overlaps kept) goes to `doc.spans[spans_key]`; null: the key the model folder "
     'records (a model trained on nested data: `padellm:genia-gemma3-270m` writes `doc.spans["sc"]`), else flat '
     '(`doc.ents`, overlaps resolved); `""`: flat whatever the model records'),
    ("alignment_mode", str, "strict",
     'a mention that does not start and end on spaCy token boundaries (`"Japan"` inside the one token '
     '`"東京でJapanとSyriaが"`): `"strict"` drops it and counts it in `doc._.padellm["misaligned"]`; '
     '`"contract"` keeps the tokens wholly inside it, `"expand"` widens it to the tokens it touches (as spaCy\'s '
     '`Doc.char_span` modes)'),
    ("text_format", Optional[str], None,
     '`"raw"` (doc text) or `"tokens"` (tokens joined by single spaces, as CoNLL-style training data); '
     "default: the model's"),
    ("device", Optional[str], None,
     '`"cpu"`, `"cuda"`, `"cuda:1"`; null follows `spacy.require_gpu()`/`prefer_gpu()`'),
    ("dtype", str, "auto", "bf16 on CUDA, fp32 on CPU; or `float32`, `bfloat16`, `float16`"),
    ("trust_remote_code", bool, False,
     "never runs code from a model folder unless set; weights load from safetensors/GGUF only"),
)

DEFAULT_CONFIG: Dict[str, Any] = {
    **{key: default for key, _, default, _ in COMPONENT_KEYS},
    **DecodeSettings().to_config(),
    "scorer": {"@scorers": "spacy_padellm.scorer.v1"},
}


def with_config_signature(factory):
    """Give ``factory(nlp, name, **config)`` the signature spaCy validates a config against: one keyword
    per config key, typed, so a misspelt key or a value of the wrong type is refused by ``nlp.add_pipe`` like
    any other component's (``DecodeSettings`` then checks ranges, with a message naming what it accepts)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("nlp", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
    params += [inspect.Parameter(key, kw, default=default, annotation=kind) for key, kind, default, _ in COMPONENT_KEYS]
    params += settings_parameters()
    params.append(inspect.Parameter("scorer", kw, default=None, annotation=Optional[Callable]))
    factory.__signature__ = inspect.Signature(params)
    factory.__annotations__ = {p.name: p.annotation for p in params[1:]}
    return factory


def config_table() -> str:
    """The markdown table of every config key (README: Configuration)."""
    return settings_table(extra=[(key, default, doc) for key, _, default, doc in COMPONENT_KEYS])
