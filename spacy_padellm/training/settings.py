"""The settings of ``train``: a confection/spaCy-style config file (see ``configs/``) with sections
[paths], [data], [training] and [lora], plus ``section.key`` overrides; every key and path is checked
before any long work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..text.protocol import get_template
from .averaging import check_decay

# What [data] protocol may name (autoreg.py implements the last two; it is imported when they are used,
# since it needs torch).
PROTOCOLS = ("padellm", "autoreg_struct", "autoreg_aug")

__all__ = ["PROTOCOLS", "TrainConfigError", "TrainSettings", "load_settings", "check_inputs"]


class TrainConfigError(ValueError):
    """A training config or input that cannot work; raised before any long work starts."""


@dataclass
class TrainSettings:
    # [paths]
    base_model: str = ""
    train: str = ""
    dev: Optional[str] = None
    output: str = "training/model"
    pipeline: Optional[str] = None  # also write a spaCy pipeline folder here
    base_ref: Optional[Dict[str, str]] = None  # how padellm.json names the base (default: its path)
    # [data]
    protocol: str = "padellm"  # padellm | autoreg_struct | autoreg_aug (the paper's autoregressive baselines)
    labels: List[str] = field(default_factory=list)
    lang: str = "en"
    template: Any = None
    text_format: str = "raw"  # what padellm_ner feeds the model: "raw" doc text or "tokens" joined by spaces
    max_length: int = 512
    max_train_examples: Optional[int] = None
    max_dev_docs: Optional[int] = None
    nonzero_repeat: int = 1  # each example whose count is not 0 appears this many times per epoch (fights under-counting)
    shared_prompts: bool = False  # a text's examples as one sequence holding their prompt once (packing.py)
    spans_key: Optional[str] = None  # nested data: dev decoding writes doc.spans[key], selection on spans_<key>_f
    # [training]
    method: str = "lora"  # lora | full
    full_targets: str = "all"  # method full: "all" parameters, or "linear" (decoder linear layers only,
    # embeddings and norms frozen, so that `compress` can carry every change in a LoRA adapter)
    seed: int = 0
    epochs: float = 3.0
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None  # stop (evaluate, save) once training has run this long; the schedule fits it
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    eval_every: int = 500
    log_every: int = 20
    device: Optional[str] = None
    dtype: str = "auto"  # autocast dtype: auto = bfloat16 on CUDA, float32 (none) on the CPU; bfloat16 on either
    resume: bool = False
    eval_batch_size: int = 64
    ema_decay: float = 0.0  # > 0: dev evaluations and the saved model use a moving average of the weights
    # [lora]
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: Any = "all-linear"
    adapter_dtype: str = "bfloat16"

    SECTIONS = {
        "paths": ("base_model", "train", "dev", "output", "pipeline", "base_ref"),
        "data": ("protocol", "labels", "lang", "template", "text_format", "max_length", "max_train_examples",
                 "max_dev_docs", "nonzero_repeat", "shared_prompts", "spans_key"),
        "training": ("method", "full_targets", "seed", "epochs", "max_steps", "max_minutes", "batch_size", "grad_accum", "lr", "weight_decay",
                     "warmup_ratio", "max_grad_norm", "eval_every", "log_every", "device", "dtype", "resume",
                     "eval_batch_size", "ema_decay"),
        "lora": ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "adapter_dtype"),
    }

    @property
    def autoreg(self) -> bool:
        return self.protocol in PROTOCOLS[1:]

    @property
    def template_spec(self) -> Any:
        return self.template or ("zh" if self.lang == "zh" else "en")

    @property
    def effective_text_format(self) -> str:
        if self.text_format not in ("raw", "tokens"):
            raise TrainConfigError(f"[data] text_format must be 'raw' or 'tokens', got {self.text_format!r}")
        return self.text_format


def load_settings(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> TrainSettings:
    """Settings from a config file plus ``section.key`` overrides; unknown keys are an error."""
    from confection import Config

    data: Dict[str, Dict[str, Any]] = {}
    if path is not None:
        if not Path(path).exists():
            raise TrainConfigError(f"Config file {path} does not exist")
        cfg = Config().from_disk(path, interpolate=True, overrides=overrides or {})
        data = {k: dict(v) for k, v in cfg.items()}
    elif overrides:
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            data.setdefault(section, {})[name] = value
    settings = TrainSettings()
    for section, values in data.items():
        if section not in TrainSettings.SECTIONS:
            raise TrainConfigError(f"Unknown config section [{section}]; expected one of {sorted(TrainSettings.SECTIONS)}")
        allowed = TrainSettings.SECTIONS[section]
        for key, value in values.items():
            if key not in allowed:
                import difflib

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise TrainConfigError(f"Unknown key '{key}' in [{section}]{hint}; allowed: {', '.join(allowed)}")
            setattr(settings, key, value)
    return settings


def check_inputs(settings: TrainSettings) -> None:
    """Raise :class:`TrainConfigError` for settings or input files that cannot work."""
    if settings.method not in ("lora", "full"):
        raise TrainConfigError(f"[training] method must be 'lora' or 'full', got {settings.method!r}")
    if not settings.base_model:
        raise TrainConfigError("[paths] base_model is not set: give a model folder, GGUF file or hub id")
    if not settings.train:
        raise TrainConfigError("[paths] train is not set: give a .padellm.jsonl or .spacy file from 'convert'")
    for key in ("train", "dev"):
        value = getattr(settings, key)
        if value and not Path(value).exists():
            raise TrainConfigError(f"[paths] {key} = {value} does not exist; run 'convert' first")
        if value and Path(value).stat().st_size == 0:
            raise TrainConfigError(f"[paths] {key} = {value} is empty")
    if not isinstance(settings.nonzero_repeat, int) or settings.nonzero_repeat < 1:
        raise TrainConfigError(f"[data] nonzero_repeat must be an integer of at least 1, got {settings.nonzero_repeat!r}")
    if settings.nonzero_repeat > 1 and settings.autoreg:
        raise TrainConfigError("[data] nonzero_repeat applies to the padellm protocol's (label, k) examples only")
    if not isinstance(settings.shared_prompts, bool):
        raise TrainConfigError(f"[data] shared_prompts must be true or false, got {settings.shared_prompts!r}")
    if settings.shared_prompts and settings.autoreg:
        raise TrainConfigError("[data] shared_prompts applies to the padellm protocol's (label, k) examples only")
    try:
        check_decay(settings.ema_decay)
    except ValueError as err:
        raise TrainConfigError(f"[training] ema_decay {err}") from None
    if settings.batch_size < 1 or settings.grad_accum < 1:
        raise TrainConfigError("[training] batch_size and grad_accum must be at least 1")
    if settings.protocol not in PROTOCOLS:
        import difflib

        close = difflib.get_close_matches(str(settings.protocol), PROTOCOLS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TrainConfigError(f"[data] protocol must be one of {', '.join(PROTOCOLS)}, "
                               f"got {settings.protocol!r}{hint}")
    if settings.autoreg:
        from ..baselines import get_autoreg_template

        get_autoreg_template(settings.template_spec)
    else:
        get_template(settings.template_spec)
