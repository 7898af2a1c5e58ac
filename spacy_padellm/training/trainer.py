"""Reformulated instruction tuning for PaDeLLM (LoRA or full), driven by a config file.

``python -m spacy_padellm train CONFIG [--section.key value ...]`` reads a confection/spaCy-style
config (see ``configs/``), checks every path and key before any long work starts, then:

* builds the (label, k) examples of the text protocol (``protocol.py``) and tokenises them with the
  same ``PromptEncoder`` the decoder uses; the loss covers the target only (count, tag, mention, EOS);
  with ``[data] protocol = "autoreg_struct"`` or ``"autoreg_aug"`` it trains the paper's autoregressive
  baselines instead (``autoreg.py``): one example per sentence, grouped from the same converted files;
* trains LoRA adapters (peft) or the full model with AdamW, warm-up and cosine decay, gradient
  accumulation, length-bucketed batches, bf16 autocast on CUDA and fp32 on CPU;
* every ``eval_every`` steps decodes the dev docs with the real decoder of the protocol (the two-step
  engine, or one autoregressive output per doc) and keeps the best model folder by span F1; a
  checkpoint (weights, optimiser, scheduler, RNG) allows resuming;
* writes a model folder that ``padellm_ner`` loads directly, and on request a spaCy pipeline folder.

Several GPUs: launch the same command with ``accelerate launch -m spacy_padellm train ...`` (or
``torchrun``); the loop runs through ``accelerate.Accelerator`` when it is installed, so data
parallelism, gradient accumulation and mixed precision come from accelerate, not from this file.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..text.protocol import PromptEncoder, TrainingExample, get_template

if TYPE_CHECKING:
    from ..baselines import AutoRegEncoder, Sentence

# What [data] protocol may name (autoreg.py implements the last two; it is imported when they are used,
# since it needs torch).
PROTOCOLS = ("padellm", "autoreg_struct", "autoreg_aug")

__all__ = ["TrainSettings", "load_settings", "train", "tokenize_examples", "tokenize_sentences",
           "length_bucketed_batches", "read_examples", "read_sentences", "save_model_folder", "TrainConfigError"]


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
    spans_key: Optional[str] = None  # nested data: dev decoding writes doc.spans[key], selection on spans_<key>_f
    # [training]
    method: str = "lora"  # lora | full
    full_targets: str = "all"  # method full: "all" parameters, or "linear" (decoder linear layers only,
    # embeddings and norms frozen, so that `compress` can carry every change in a LoRA adapter)
    seed: int = 0
    epochs: float = 3.0
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None  # stop (evaluate, save) once training has run this long
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    eval_every: int = 500
    log_every: int = 20
    device: Optional[str] = None
    dtype: str = "auto"  # autocast dtype on CUDA: auto = bf16
    resume: bool = False
    eval_batch_size: int = 64
    # [lora]
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: Any = "all-linear"
    adapter_dtype: str = "bfloat16"

    SECTIONS = {
        "paths": ("base_model", "train", "dev", "output", "pipeline", "base_ref"),
        "data": ("protocol", "labels", "lang", "template", "text_format", "max_length", "max_train_examples",
                 "max_dev_docs", "spans_key"),
        "training": ("method", "full_targets", "seed", "epochs", "max_steps", "max_minutes", "batch_size", "grad_accum", "lr", "weight_decay",
                     "warmup_ratio", "max_grad_norm", "eval_every", "log_every", "device", "dtype", "resume",
                     "eval_batch_size"),
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


def read_examples(path: str) -> List[TrainingExample]:
    """Training examples from a ``.padellm.jsonl`` file written by the converter."""
    examples = []
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                examples.append(TrainingExample(data["text"], data["label"], int(data["count"]), int(data["k"]),
                                                data["mention"]))
            except (ValueError, KeyError, TypeError) as err:
                raise TrainConfigError(f"{path}:{line_no}: not a PaDeLLM training example ({err})") from None
    if not examples:
        raise TrainConfigError(f"{path} holds no training examples")
    return examples


def read_sentences(path: str) -> List["Sentence"]:
    """Training sentences for the autoregressive protocols from a ``.padellm.jsonl`` file: its per-(label, k)
    records grouped by text, in file order (see :func:`~spacy_padellm.baselines.autoreg.group_records`)."""
    from ..baselines import group_records

    return group_records(read_examples(path))


def tokenize_sentences(encoder: "AutoRegEncoder", sentences: Sequence["Sentence"], labels: Sequence[str],
                       max_length: int = 512) -> Tuple[List[Tuple[List[int], List[int]]], int]:
    """(input ids, labels) pairs of the autoregressive protocols, labels -100 on the prompt; over-long
    sentences are dropped. Also returns how many mentions could not be written into an AutoRegAug
    target (not found in the text, or crossing another mention)."""
    out = []
    unwritable = 0
    for sentence in sentences:
        target, lost = encoder.target(sentence, labels)
        unwritable += lost
        prompt = encoder.prompt(sentence.text)
        if len(prompt) + len(target) > max_length:
            continue
        out.append((prompt + target, [-100] * len(prompt) + target))
    return out, unwritable


def tokenize_examples(encoder: PromptEncoder, examples: Sequence[TrainingExample],
                      max_length: int = 512) -> List[Tuple[List[int], List[int]]]:
    """(input ids, labels) pairs; labels are -100 on the prompt. Over-long examples are dropped."""
    out = []
    for ex in examples:
        prompt, target = encoder.example(ex)
        if len(prompt) + len(target) > max_length:
            continue
        out.append((prompt + target, [-100] * len(prompt) + target))
    return out


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                            bucket_factor: int = 50) -> List[List[int]]:
    """Shuffled batches of indices of similar length (sorted within shuffled mega-batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: List[List[int]] = []
    mega = batch_size * bucket_factor
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(items: Sequence[Tuple[List[int], List[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(items):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return input_ids, mask, labels


def _set_seed(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def _base_ref(settings: TrainSettings, source) -> Dict[str, str]:
    if settings.base_ref:
        return dict(settings.base_ref)
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


def _check_inputs(settings: TrainSettings) -> None:
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


def _load_train_examples(settings: TrainSettings, nlp) -> Tuple[List[TrainingExample], List[str]]:
    path = settings.train
    if path.endswith(".spacy"):
        from spacy.tokens import DocBin

        from .convert import docs_to_examples

        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        labels = settings.labels or sorted({e.label_ for d in docs for e in d.ents})
        examples = docs_to_examples(docs, labels)
    else:
        examples = read_examples(path)
        labels = settings.labels or sorted({e.label for e in examples})
    unknown = sorted({e.label for e in examples} - set(labels))
    if unknown:
        raise TrainConfigError(f"Training examples use labels {unknown} that are not in [data] labels {labels}")
    return examples, list(labels)


def _load_train_sentences(settings: TrainSettings, nlp) -> Tuple[List["Sentence"], List[str]]:
    """Sentences for the autoregressive protocols: from a DocBin with exact spans, else grouped from the
    ``.padellm.jsonl`` records."""
    from ..baselines import Sentence

    path = settings.train
    if path.endswith(".spacy"):
        from spacy.tokens import DocBin

        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        sentences = [Sentence(d.text, [(e.label_, e.text) for e in d.ents],
                              [(e.start_char, e.end_char, e.label_) for e in d.ents]) for d in docs]
    else:
        sentences = read_sentences(path)
    found = sorted({label for s in sentences for label, _ in s.mentions})
    labels = settings.labels or found
    unknown = sorted(set(found) - set(labels))
    if unknown:
        raise TrainConfigError(f"Training examples use labels {unknown} that are not in [data] labels {labels}")
    return sentences, list(labels)


def evaluate_pipeline(nlp, docs, batch_size: int = 64, spans_key: Optional[str] = None) -> Dict[str, Any]:
    """Span scores (spaCy) and the string-level metric of ``nlp`` on gold ``docs``."""
    from spacy.training import Example

    from ..pipeline.scoring import score_padellm, string_level_scores

    preds = list(nlp.pipe((nlp.make_doc(d.text) for d in docs), batch_size=batch_size))
    examples = [Example(p, g) for p, g in zip(preds, docs)]
    scores = score_padellm(examples, spans_key=spans_key)
    scores.update(string_level_scores(examples, spans_key))
    return scores


def train(settings: TrainSettings, progress: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run training; returns a summary with the best dev scores and the output paths."""
    _check_inputs(settings)
    from ..loading import ModelFolderError, load_base_model, load_tokenizer, resolve_model, torch_dtype as _torch_dtype

    try:
        source = resolve_model(settings.base_model)
    except ModelFolderError as err:
        raise TrainConfigError(f"[paths] base_model: {err}") from None
    import spacy
    import torch
    from tqdm.auto import tqdm

    nlp = spacy.blank(settings.lang)
    autoreg = settings.autoreg
    examples: List[Any]
    if autoreg:
        examples, labels = _load_train_sentences(settings, nlp)
    else:
        examples, labels = _load_train_examples(settings, nlp)
    dev_docs = None
    if settings.dev:
        from spacy.tokens import DocBin

        dev_docs = list(DocBin().from_disk(settings.dev).get_docs(nlp.vocab))
        dev_labels = {e.label_ for d in dev_docs for e in d.ents}
        if settings.spans_key:
            missing = sum(settings.spans_key not in d.spans for d in dev_docs)
            if dev_docs and missing == len(dev_docs):
                raise TrainConfigError(f"[data] spans_key = {settings.spans_key!r}, but no dev doc has that span group "
                                       f"(convert the dev set with --spans-key {settings.spans_key})")
            dev_labels |= {s.label_ for d in dev_docs if settings.spans_key in d.spans for s in d.spans[settings.spans_key]}
        extra = sorted(dev_labels - set(labels))
        if extra:
            raise TrainConfigError(f"The dev set has labels {extra} that the training data lacks ({labels})")
        if settings.max_dev_docs:
            dev_docs = dev_docs[: settings.max_dev_docs]
    _set_seed(settings.seed)
    rng = random.Random(settings.seed)
    if settings.max_train_examples and len(examples) > settings.max_train_examples:
        examples = rng.sample(examples, settings.max_train_examples)

    try:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=settings.device == "cpu")
    except ImportError:  # accelerate is optional on one device
        accelerator = None
    if settings.device:
        device = torch.device(settings.device)
    elif accelerator is not None and accelerator.num_processes > 1:
        device = accelerator.device
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    is_cuda = device.type == "cuda"
    if is_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = _torch_dtype(settings.dtype, device) if is_cuda else None

    tokenizer = load_tokenizer(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if autoreg:
        from ..baselines import AutoRegEncoder, get_autoreg_template

        template = None
        ar_template = get_autoreg_template(settings.template_spec)
        ar_encoder = AutoRegEncoder(tokenizer, settings.protocol, ar_template)
        bos_ids = ar_encoder.bos_ids
        data, unwritable = tokenize_sentences(ar_encoder, examples, labels, settings.max_length)
        if unwritable:
            log(f"{unwritable} mention(s) could not be written into {settings.protocol} targets "
                "(not found in the text, or crossing another mention)")
    else:
        template = get_template(settings.template_spec)
        ar_template = None
        encoder = PromptEncoder(tokenizer, template)
        bos_ids = encoder.bos_ids
        data = tokenize_examples(encoder, examples, settings.max_length)
    if not data:
        raise TrainConfigError(f"No training example fits max_length={settings.max_length}")
    unit = "sentences" if autoreg else "examples"
    log(f"{len(examples)} {unit} ({len(data)} within max_length), labels {labels}, protocol {settings.protocol}, "
        f"method {settings.method}")

    model = load_base_model(source, torch.float32)
    if source.adapter_dir is not None:  # continue from a LoRA model folder: merge its adapter first
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source.adapter_dir)).merge_and_unload()
    lora = settings.method == "lora"
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                 lora_dropout=settings.lora_dropout,
                                                 target_modules=settings.lora_targets, task_type="CAUSAL_LM"))
    elif settings.full_targets == "linear":
        linear = {f"{name}.weight" for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"}
        for name, param in model.named_parameters():
            param.requires_grad_(name in linear)
    elif settings.full_targets != "all":
        raise TrainConfigError(f"[training] full_targets must be 'all' or 'linear', got {settings.full_targets!r}")
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    log(f"trainable parameters: {n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}; "
        f"device {next(model.parameters()).device}, autocast {amp_dtype}")
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    lengths = [len(ids) for ids, _ in data]
    # With several processes (accelerate launch / torchrun) each takes every world-th batch of the same
    # shuffled list (same seed), and only the main process evaluates and writes.
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    is_main = rank == 0
    batches_per_epoch = math.ceil(len(data) / settings.batch_size / world)
    total_steps = settings.max_steps or max(1, math.ceil(batches_per_epoch * settings.epochs / settings.grad_accum))
    warmup = int(total_steps * settings.warmup_ratio)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress_ = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    ckpt_dir = output / "checkpoint"
    step = 0
    best: Dict[str, Any] = {"score": -1.0, "step": None, "scores": None}
    history: List[Dict[str, Any]] = []
    if settings.resume and (ckpt_dir / "state.pt").exists():
        from safetensors.torch import load_file

        state = torch.load(ckpt_dir / "state.pt", weights_only=True)
        weights = load_file(str(ckpt_dir / "trainable.safetensors"))
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for name, tensor in weights.items():
            named[name].data.copy_(tensor.to(named[name].device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        rng.setstate(_rng_from_list(state["rng"]))
        best = json.loads((ckpt_dir / "best.json").read_text())
        history = json.loads((ckpt_dir / "history.json").read_text())
        log(f"resumed from {ckpt_dir} at step {step}")
    distributed = accelerator is not None and accelerator.num_processes > 1
    if distributed:
        model, optimizer = accelerator.prepare(model, optimizer)

    meta = {"labels": labels, "template": template.to_dict() if template is not None else None,
            "lang": settings.lang, "protocol": settings.protocol, "text_format": settings.effective_text_format,
            "bos": bool(bos_ids),  # whether the prompts started with BOS: decoding does the same
            "training": {"method": settings.method, "base_model": settings.base_model, "seed": settings.seed}}
    base_ref = _base_ref(settings, source)
    meta["training"]["base_ref"] = base_ref

    if ar_template is not None:
        meta["autoreg_template"] = ar_template.to_dict()

    def evaluate() -> Dict[str, Any]:
        from ..loading import ModelSource

        model.eval()
        ner_nlp = spacy.blank(settings.lang)
        config = {"labels": labels, "text_format": settings.effective_text_format,
                  "batch_size": settings.eval_batch_size, "decoding": settings.protocol}
        if template is not None:
            config["template"] = template.to_dict()
        if settings.spans_key:
            config["spans_key"] = settings.spans_key
        ner = ner_nlp.add_pipe("padellm_ner", config=config)
        # The dev decoding is the protocol's own: the in-memory source records it like a model folder would.
        in_memory = ModelSource(location="<in memory>", meta={k: meta[k] for k in ("labels", "protocol", "bos")
                                                              if k in meta})
        if ar_template is not None:
            in_memory.meta["autoreg_template"] = ar_template.to_dict()
        ner.set_model(_unwrap(model, accelerator), tokenizer, in_memory)
        scores = evaluate_pipeline(ner_nlp, dev_docs, settings.eval_batch_size, spans_key=settings.spans_key)
        model.train()
        return scores

    def save_checkpoint() -> None:
        from safetensors.torch import save_file

        ckpt_dir.mkdir(parents=True, exist_ok=True)
        named = {n: p.detach().cpu().contiguous() for n, p in _unwrap(model, accelerator).named_parameters()
                 if p.requires_grad}
        save_file(named, str(ckpt_dir / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                    "rng": _rng_to_list(rng.getstate())}, ckpt_dir / "state.pt")
        (ckpt_dir / "best.json").write_text(json.dumps(best))
        (ckpt_dir / "history.json").write_text(json.dumps(history))

    def save_best(scores: Optional[Dict[str, Any]]) -> None:
        save_model_folder(_unwrap(model, accelerator), tokenizer, output / "best",
                          {**meta, "dev_scores": _small(scores), "step": step},
                          lora=lora, base_ref=base_ref, adapter_dtype=settings.adapter_dtype)

    model.train()
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    t0 = time.time()
    tokens_seen = 0
    running = None
    window_loss, window_steps = 0.0, 0  # mean loss over the steps since the last history entry
    epoch = 0
    pad_id = tokenizer.pad_token_id
    while step < total_steps:
        batches = length_bucketed_batches(lengths, settings.batch_size, rng)[rank::world]
        epoch += 1
        for b_start in range(0, len(batches), settings.grad_accum):
            if step >= total_steps:
                break
            group = batches[b_start : b_start + settings.grad_accum]
            n_target = sum(sum(1 for x in data[i][1] if x != -100) for b in group for i in b)
            loss_value = 0.0
            for idx in group:
                input_ids, mask, labels_t = (t.to(device) for t in _collate([data[i] for i in idx], pad_id))
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = _target_loss(model, input_ids, mask, labels_t, distributed) / max(1, n_target)
                if distributed:
                    accelerator.backward(loss)
                else:
                    loss.backward()
                loss_value += float(loss.detach())
                tokens_seen += int(mask.sum())
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running = loss_value if running is None else 0.9 * running + 0.1 * loss_value
            elapsed = time.time() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", tok_s=f"{tokens_seen / max(elapsed, 1e-9):.0f}", epoch=epoch)
            window_loss += loss_value
            window_steps += 1
            if step % settings.log_every == 0 or step == total_steps:
                history.append({"step": step, "loss": window_loss / window_steps, "lr": scheduler.get_last_lr()[0],
                                "elapsed_s": round(elapsed, 2), "epoch": epoch})
                window_loss, window_steps = 0.0, 0
            out_of_time = settings.max_minutes is not None and elapsed > 60 * settings.max_minutes
            if out_of_time:
                log(f"stopping at step {step}: max_minutes={settings.max_minutes} reached")
                total_steps = step
            if dev_docs and is_main and (step % settings.eval_every == 0 or step == total_steps):
                scores = evaluate()
                metric = f"spans_{settings.spans_key}_f" if settings.spans_key else "ents_f"
                f = scores.get(metric) or 0.0
                entry = {"step": step, "dev_f": f, "dev_metric": metric, "dev_string_f": scores.get("string_f"),
                         "elapsed_s": round(time.time() - t0, 2)}
                if metric == "ents_f":
                    entry["dev_ents_f"] = f
                history.append(entry)
                log(f"step {step}: dev {metric} {f:.4f} string_f {scores.get('string_f', 0):.4f}")
                if f > best["score"]:
                    best = {"score": f, "step": step, "scores": _small(scores)}
                    save_best(scores)
                save_checkpoint()
            if distributed and dev_docs and (step % settings.eval_every == 0 or step == total_steps):
                accelerator.wait_for_everyone()
    bar.close()
    if not is_main:
        return {"steps": step, "rank": rank}
    if not dev_docs:
        best = {"score": None, "step": step, "scores": None}
        save_best(None)
    (output / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"best": best, "steps": step, "examples": len(data), "train_seconds": round(time.time() - t0, 1),
               "tokens_per_second": round(tokens_seen / max(time.time() - t0, 1e-9), 1),
               "model": str(output / "best"), "trainable_parameters": n_trainable}
    if settings.pipeline:
        nlp_out = spacy.blank(settings.lang)
        out_config = {"model": str(output / "best")}
        if settings.spans_key:  # nested data: the pipeline writes the span group, as the model was selected
            out_config["spans_key"] = settings.spans_key
        nlp_out.add_pipe("padellm_ner", config=out_config)
        nlp_out.to_disk(settings.pipeline)
        summary["pipeline"] = settings.pipeline
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _target_loss(model, input_ids, mask, labels, distributed: bool):
    """Summed cross-entropy over target tokens. On one process the LM head runs on target positions only
    (a few tokens of each sequence) instead of the whole vocabulary at every position."""
    import torch

    targets = labels[:, 1:]
    if distributed:  # go through the wrapper so gradients are synchronised
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state[:, :-1]
    keep = targets != -100
    logits = model.get_output_embeddings()(hidden[keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")


def _unwrap(model, accelerator):
    return accelerator.unwrap_model(model) if accelerator is not None and accelerator.num_processes > 1 else model


def _small(scores: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if scores is None:
        return None
    keep = ("ents_p", "ents_r", "ents_f", "string_p", "string_r", "string_f", "ents_per_type")
    return {k: v for k, v in scores.items() if k in keep or (k.startswith("spans_") and k.endswith(("_p", "_r", "_f", "_per_type")))}


def _rng_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_list(data):
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
