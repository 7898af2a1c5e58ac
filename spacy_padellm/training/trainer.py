"""Reformulated instruction tuning for PaDeLLM (LoRA or full), driven by a config file.

``python -m spacy_padellm train CONFIG [--section.key value ...]`` reads a confection/spaCy-style
config (see ``configs/`` and ``settings.py``), checks every path and key before any long work starts, then:

* builds the (label, k) examples of the text protocol (``text/protocol.py``) and tokenises them with the
  same ``PromptEncoder`` the decoder uses; the loss covers the target only (count, tag, mention, EOS);
  with ``[data] protocol = "autoreg_struct"`` or ``"autoreg_aug"`` it trains the paper's autoregressive
  baselines instead (``baselines/autoreg.py``): one example per sentence, grouped from the same converted
  files (``data.py``);
* trains LoRA adapters (peft) or the full model with AdamW, warm-up and cosine decay, gradient
  accumulation, length-bucketed batches, bf16 autocast on CUDA and fp32 on CPU;
* every ``eval_every`` steps decodes the dev docs with the real decoder of the protocol (the two-step
  engine, or one autoregressive output per doc) and keeps the best model folder by span F1; a
  checkpoint (weights, optimiser, scheduler, RNG) allows resuming (``checkpoint.py``);
* writes a model folder that ``padellm_ner`` loads directly, and on request a spaCy pipeline folder
  (``model_folder.py``).

Several GPUs: launch the same command with ``accelerate launch --multi_gpu -m spacy_padellm train ...``
(several CPU processes: ``torchrun --nproc_per_node N -m spacy_padellm train ...``); the loop runs through
``accelerate.Accelerator`` when it is installed, so data parallelism and gradient synchronisation come from
accelerate, not from this file.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .averaging import WeightAverage
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .data import (EncodedData, collate, encode_train_data, item_examples, item_length, item_targets,
                   length_bucketed_batches, read_dev_docs, read_train_data)
from .evaluation import evaluate_pipeline, small_scores
from .model_folder import base_model_ref, model_meta, save_model_folder, write_pipeline_folder
from .packing import model_mask
from .settings import TrainConfigError, TrainSettings, check_inputs
from .tokenizer_check import split_whole_words

__all__ = ["train", "lr_factor"]


@dataclass
class _Devices:
    """Where training runs: one device, or several processes under ``accelerate``."""

    accelerator: Any  # accelerate.Accelerator, or None when accelerate is not installed
    device: Any  # torch.device
    amp_dtype: Any  # autocast dtype; None: no autocast

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def distributed(self) -> bool:
        return self.accelerator is not None and self.accelerator.num_processes > 1

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model) if self.distributed else model

    def end(self) -> None:
        """Several processes: wait until the main one has written the outputs, then leave the process group together
        (a process that exits while another still holds the group's connections can make that one abort)."""
        if self.distributed:
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()


@dataclass
class _TrainState:
    """What the steps of one training share: set up before the loop, advanced by it."""

    settings: TrainSettings
    log: Callable[[str], None]
    devices: _Devices
    data: EncodedData
    dev_docs: Optional[List[Any]]
    tokenizer: Any
    rng: random.Random
    output: Path
    model: Any = None
    trainable: List[Any] = field(default_factory=list)
    n_trainable: int = 0
    average: Optional[WeightAverage] = None  # [training] ema_decay > 0
    optimizer: Any = None
    scheduler: Any = None
    total_steps: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)
    base_ref: Dict[str, str] = field(default_factory=dict)
    # progress, saved in and restored from the checkpoint
    step: int = 0
    best: Dict[str, Any] = field(default_factory=lambda: {"score": -1.0, "step": None, "scores": None})
    history: List[Dict[str, Any]] = field(default_factory=list)
    # progress of this process only
    epoch: int = 0
    t0: float = 0.0
    tokens_seen: int = 0
    examples_seen: int = 0
    eval_seconds: float = 0.0  # of the dev evaluations, left out of the rates
    running: Optional[float] = None  # smoothed loss shown on the progress bar
    window_loss: float = 0.0  # loss summed over the steps since the last history entry
    window_steps: int = 0

    @property
    def ckpt_dir(self) -> Path:
        return self.output / "checkpoint"

    @property
    def lora(self) -> bool:
        return self.settings.method == "lora"


def train(settings: TrainSettings, progress: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run training; returns a summary with the best dev scores and the output paths."""
    check_inputs(settings)
    source = _resolve_base(settings)
    base_ref = base_model_ref(settings, source)  # a base_ref naming another base fails here, before any work
    import spacy

    nlp = spacy.blank(settings.lang)
    examples, labels = read_train_data(settings, nlp)
    dev_docs = read_dev_docs(settings, nlp, labels)
    _set_seed(settings.seed)
    rng = random.Random(settings.seed)
    if settings.max_train_examples and len(examples) > settings.max_train_examples:
        examples = rng.sample(examples, settings.max_train_examples)
    devices = _set_up_devices(settings)
    tokenizer = _load_tokenizer(source, log)
    data = encode_train_data(settings, tokenizer, examples, labels, log)
    unit = "sentences" if settings.autoreg else "examples"
    packed = ""
    if settings.shared_prompts:
        packed = (f" in {len(data.items)} sequences of shared prompts, {sum(len(i.ids) for i in data.items):,} tokens "
                  f"instead of {sum(i.unpacked_tokens for i in data.items):,}")
    log(f"{len(examples)} {unit} ({data.examples} within max_length{packed}), labels {labels}, "
        f"protocol {settings.protocol}, method {settings.method}")

    state = _TrainState(settings, log, devices, data, dev_docs, tokenizer, rng, Path(settings.output))
    _build_model(state, source)
    _build_optimizer(state)
    _start_or_resume(state)
    if devices.distributed:
        state.model, state.optimizer = devices.accelerator.prepare(state.model, state.optimizer)
    state.base_ref = base_ref
    state.meta = model_meta(settings, data, state.base_ref)
    _train_loop(state, progress)
    summary = _finish(state)
    devices.end()
    return summary


# --------------------------------------------------------------------------------------------------
# Set-up


def _resolve_base(settings: TrainSettings):
    from ..loading import ModelFolderError, resolve_model

    try:
        return resolve_model(settings.base_model)
    except ModelFolderError as err:
        raise TrainConfigError(f"[paths] base_model: {err}") from None


def _set_seed(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def _set_up_devices(settings: TrainSettings) -> _Devices:
    """The accelerator (when accelerate is installed), the device, TF32 on CUDA and the autocast dtype."""
    import torch

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
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return _Devices(accelerator, device, autocast_dtype(settings.dtype, device))


def autocast_dtype(dtype: str, device):
    """The autocast dtype of training on ``device`` (None: no autocast). On CUDA ``dtype``, "auto" being bfloat16.
    On the CPU float32 ("auto") unless ``dtype`` is bfloat16 (the dev evaluation then decodes in bfloat16 too), which
    a CPU with bfloat16 matrix instructions (AMX, AVX512-BF16) runs faster (docs/results-training-speed.md); on one
    without, it warns."""
    import torch

    from ..decoding.quantize import cpu_has_bf16
    from ..loading import torch_dtype

    chosen = torch_dtype(dtype, device)
    if device.type == "cuda":
        return None if chosen == torch.float32 else chosen
    if dtype in (None, "auto") or chosen == torch.float32:
        return None
    if chosen != torch.bfloat16:
        raise TrainConfigError(f"[training] dtype {dtype!r} on the CPU: use auto (float32) or bfloat16")
    if not cpu_has_bf16():
        warnings.warn("[training] dtype bfloat16: this CPU has no bfloat16 matrix instructions (AMX or AVX512-BF16), "
                      "so training runs slower than in float32; set dtype to auto")
    return torch.bfloat16


def _load_tokenizer(source, log: Callable[[str], None]):
    from ..loading import load_tokenizer

    tokenizer = load_tokenizer(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    split = split_whole_words(tokenizer)
    if len(split) >= 2:
        log(f"warning: the tokenizer splits words its vocabulary holds whole ({', '.join(split)}), unlike the "
            "tokenizer the base was pre-trained with; transformers' reading of a GGUF file's tokenizer differs "
            "between versions. Give the base as a folder holding the GGUF file and the model's own tokenizer.json")
    return tokenizer


def _build_model(state: _TrainState, source) -> None:
    """The base model, LoRA adapters (a LoRA model folder's own, trained further, or new ones) or the parameters
    ``full_targets`` names made trainable (a LoRA model folder's adapter merged first), on the device."""
    import torch

    from ..loading import load_base_model

    settings = state.settings
    model = load_base_model(source, torch.float32)
    if source.adapter_dir is not None and not state.lora:  # full fine-tuning from a LoRA model folder
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source.adapter_dir)).merge_and_unload()
        model.requires_grad_(True)  # peft froze the base it loaded the adapter into
    if state.lora and source.adapter_dir is not None:
        model = _continued_adapter(state, model, source.adapter_dir)
    elif state.lora:
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
    model.to(state.devices.device)
    state.model = model
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    state.trainable = [p for _, p in trainable]
    if settings.ema_decay:
        state.average = WeightAverage(trainable, settings.ema_decay)
    state.n_trainable = sum(p.numel() for p in state.trainable)
    state.log(f"trainable parameters: {state.n_trainable:,} of {sum(p.numel() for p in model.parameters()):,}; "
            f"device {next(model.parameters()).device}, autocast {state.devices.amp_dtype}")


def _continued_adapter(state: _TrainState, model, adapter_dir: Path):
    """LoRA training from a LoRA model folder (e.g. ``padellm:conll03-gemma3-270m``) trains that folder's adapter
    further: its rank, alpha and targets are the folder's, the [lora] ones give way (the log says so); the
    dropout is [lora]'s."""
    from peft import LoraConfig, PeftModel

    config = LoraConfig.from_pretrained(str(adapter_dir))
    config.lora_dropout, config.inference_mode = state.settings.lora_dropout, False
    model = PeftModel.from_pretrained(model, str(adapter_dir), config=config, is_trainable=True)
    state.log(f"continues the LoRA adapter in {adapter_dir} (r {config.r}, alpha {config.lora_alpha}); "
              "[lora] lora_r, lora_alpha and lora_targets are that adapter's")
    return model


def _build_optimizer(state: _TrainState) -> None:
    """AdamW, and a schedule of linear warm-up then cosine decay to zero when training stops: at
    ``total_steps``, or at ``max_minutes`` if that comes first (warm-up and decay follow whichever is further on)."""
    import torch

    settings = state.settings
    state.optimizer = torch.optim.AdamW(state.trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    # With several processes (accelerate launch / torchrun) each takes every world-th batch of the same
    # shuffled list (same seed), and only the main process evaluates and writes.
    batches_per_epoch = math.ceil(state.data.examples / settings.batch_size / state.devices.world)
    total_steps = settings.max_steps or max(1, math.ceil(batches_per_epoch * settings.epochs / settings.grad_accum))
    warmup = int(total_steps * settings.warmup_ratio)

    def lr_lambda(step: int) -> float:
        return lr_factor(step, warmup, total_steps, _time_fraction(state))

    state.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, lr_lambda)
    state.total_steps = total_steps


def lr_factor(step: int, warmup: int, total_steps: int, time_fraction: float = 0.0) -> float:
    """The learning rate's factor at ``step``: linear warm-up over ``warmup`` steps, then cosine decay to zero at
    ``total_steps``. Under a time limit ``time_fraction`` (the share of it spent) counts as that share of
    ``total_steps`` when it is further on, so warm-up and decay both fit the time a run gets, whatever its epochs."""
    at = max(float(step), time_fraction * total_steps)
    if at < warmup:
        return (at + 1) / max(1, warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (at - warmup) / max(1, total_steps - warmup))))


def _time_fraction(state: _TrainState) -> float:
    """The share of the ``max_minutes`` limit spent so far (0 without a limit or before the loop starts)."""
    minutes = state.settings.max_minutes
    if not minutes or not state.t0:
        return 0.0
    return (time.time() - state.t0) / (60 * minutes)


def _start_or_resume(state: _TrainState) -> None:
    """Make the output folder; with ``resume`` and a checkpoint there, continue from it."""
    state.output.mkdir(parents=True, exist_ok=True)
    if state.settings.resume and has_checkpoint(state.ckpt_dir):
        state.step, state.best, state.history = load_checkpoint(state.ckpt_dir, state.model, state.optimizer,
                                                                state.scheduler, state.rng, state.average)
        state.log(f"resumed from {state.ckpt_dir} at step {state.step}")


# --------------------------------------------------------------------------------------------------
# The loop


def _train_loop(state: _TrainState, progress: bool) -> None:
    """Optimizer steps over length-bucketed batches, reshuffled every epoch, until ``total_steps`` (which a
    ``max_minutes`` limit may lower)."""
    from tqdm.auto import tqdm

    settings, devices = state.settings, state.devices
    lengths = [item_length(item) for item in state.data.items]
    sizes = [item_examples(item) for item in state.data.items]
    state.model.train()
    bar = tqdm(total=state.total_steps, initial=state.step, disable=not progress, desc="train", dynamic_ncols=True)
    state.t0 = time.time()
    while state.step < state.total_steps:
        batches = length_bucketed_batches(lengths, settings.batch_size, state.rng,
                                          sizes=sizes)[devices.rank::devices.world]
        state.epoch += 1
        for b_start in range(0, len(batches), settings.grad_accum):
            if state.step >= state.total_steps:
                break
            loss_value = _optimizer_step(state, batches[b_start : b_start + settings.grad_accum])
            _after_step(state, bar, loss_value)
    bar.close()


def _optimizer_step(state: _TrainState, group: List[List[int]]) -> float:
    """One optimizer step over a group of ``grad_accum`` batches; the loss is the mean over the group's
    target tokens. Returns its value."""
    import torch

    devices, items = state.devices, state.data.items
    n_target = sum(item_targets(items[i]) for b in group for i in b)
    loss_value = 0.0
    for idx in group:
        batch = collate([items[i] for i in idx], state.tokenizer.pad_token_id).to(devices.device)
        with torch.autocast(device_type=devices.device.type, dtype=devices.amp_dtype,
                            enabled=devices.amp_dtype is not None):
            loss = _target_loss(state.model, batch, devices.distributed) / max(1, n_target)
        if devices.distributed:
            devices.accelerator.backward(loss)
        else:
            loss.backward()
        loss_value += float(loss.detach())
        state.tokens_seen += batch.tokens
        state.examples_seen += sum(item_examples(items[i]) for i in idx)
    torch.nn.utils.clip_grad_norm_(state.trainable, state.settings.max_grad_norm)
    state.optimizer.step()
    if state.average is not None:
        state.average.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    return loss_value


def _after_step(state: _TrainState, bar, loss_value: float) -> None:
    """Progress bar, history, the ``max_minutes`` limit, and the dev evaluation when one is due."""
    settings, step = state.settings, state.step
    state.running = loss_value if state.running is None else 0.9 * state.running + 0.1 * loss_value
    elapsed = time.time() - state.t0
    bar.update(1)
    bar.set_postfix(loss=f"{state.running:.4f}", tok_s=f"{state.tokens_seen / max(elapsed, 1e-9):.0f}",
                    epoch=state.epoch)
    state.window_loss += loss_value
    state.window_steps += 1
    if step % settings.log_every == 0 or step == state.total_steps:
        state.history.append({"step": step, "loss": state.window_loss / state.window_steps,
                              "lr": state.scheduler.get_last_lr()[0], "elapsed_s": round(elapsed, 2),
                              "epoch": state.epoch})
        state.window_loss, state.window_steps = 0.0, 0
    if settings.max_minutes is not None and elapsed > 60 * settings.max_minutes:
        state.log(f"stopping at step {step}: max_minutes={settings.max_minutes} reached")
        state.total_steps = step
    eval_due = bool(state.dev_docs) and (step % settings.eval_every == 0 or step == state.total_steps)
    if eval_due and state.devices.rank == 0:
        start = time.time()
        _evaluate_and_keep_best(state)
        state.eval_seconds += time.time() - start
    if eval_due and state.devices.distributed:
        state.devices.accelerator.wait_for_everyone()


def _target_loss(model, batch, distributed: bool):
    """Summed cross-entropy over a batch's target tokens. On one process the LM head runs on target positions
    only (a few tokens of each sequence) instead of the whole vocabulary at every position."""
    import torch

    inputs = {"input_ids": batch.input_ids, "attention_mask": model_mask(model, batch)}
    if batch.positions is not None:
        inputs["position_ids"] = batch.positions
    targets = batch.targets
    if distributed:  # go through the wrapper so gradients are synchronised
        logits = model(**inputs).logits
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
    hidden = model.get_decoder()(**inputs).last_hidden_state
    keep = targets != -100
    logits = model.get_output_embeddings()(hidden[keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")


# --------------------------------------------------------------------------------------------------
# Evaluation, checkpoint and the best model


def _evaluate_and_keep_best(state: _TrainState) -> None:
    """Decode the dev docs, record the score, save the model folder if it is the best so far, and write
    the checkpoint."""
    from ..pipeline.scoring import score_prefix

    settings, step = state.settings, state.step
    metric = f"{score_prefix(settings.spans_key)}_f"
    with _averaged(state):
        scores = _dev_scores(state)
        f = scores.get(metric) or 0.0
        if f > state.best["score"]:
            state.best = {"score": f, "step": step, "scores": small_scores(scores)}
            _save_best(state, scores)
    entry = {"step": step, "dev_f": f, "dev_metric": metric, "dev_string_f": scores.get("string_f"),
             "elapsed_s": round(time.time() - state.t0, 2)}
    if metric == "ents_f":
        entry["dev_ents_f"] = f
    state.history.append(entry)
    state.log(f"step {step}: dev {metric} {f:.4f} string_f {scores.get('string_f', 0):.4f}")
    save_checkpoint(state.ckpt_dir, state.devices.unwrap(state.model), state.optimizer, state.scheduler, state.step,
                    state.rng, state.best, state.history, state.average)


def _averaged(state: _TrainState):
    """A block in which the model holds the moving average of its weights (``ema_decay``), else its own."""
    return state.average.applied() if state.average is not None else contextlib.nullcontext()


def _dev_scores(state: _TrainState) -> Dict[str, Any]:
    """Scores of the model as it is now on the dev docs, decoded by ``padellm_ner`` with the protocol's
    own decoder."""
    import spacy

    from ..loading import ModelSource

    settings, data, meta = state.settings, state.data, state.meta
    state.model.eval()
    ner_nlp = spacy.blank(settings.lang)
    config = {"model": None, "labels": data.labels, "text_format": settings.effective_text_format,
              "batch_size": settings.eval_batch_size, "decoding": settings.protocol}
    if data.template is not None:
        config["template"] = data.template.to_dict()
    if settings.spans_key:
        config["spans_key"] = settings.spans_key
    if _decodes_in_bf16(state):
        config["quantize"] = "bf16"
    ner = ner_nlp.add_pipe("padellm_ner", config=config)
    # The dev decoding is the protocol's own: the in-memory source records it like a model folder would.
    in_memory = ModelSource(location="<in memory>", meta={k: meta[k] for k in ("labels", "protocol", "bos")
                                                          if k in meta})
    if data.ar_template is not None:
        in_memory.meta["autoreg_template"] = data.ar_template.to_dict()
    ner.set_model(state.devices.unwrap(state.model), state.tokenizer, in_memory)
    scores = evaluate_pipeline(ner_nlp, state.dev_docs, settings.eval_batch_size, spans_key=settings.spans_key)
    state.model.train()
    return scores


def _decodes_in_bf16(state: _TrainState) -> bool:
    """Whether the dev evaluation decodes in bfloat16 (``quantize = "bf16"``): when training autocasts to bfloat16
    on the CPU and the static engine can run the model."""
    from ..decoding.static_lm import static_lm_supported

    devices = state.devices
    return (devices.device.type == "cpu" and devices.amp_dtype is not None and state.settings.protocol == "padellm"
            and static_lm_supported(devices.unwrap(state.model))[0])


def _save_best(state: _TrainState, scores: Optional[Dict[str, Any]]) -> None:
    save_model_folder(state.devices.unwrap(state.model), state.tokenizer, state.output / "best",
                      {**state.meta, "dev_scores": small_scores(scores), "step": state.step},
                      lora=state.lora, base_ref=state.base_ref, adapter_dtype=state.settings.adapter_dtype)


def _dtype_name(dtype) -> Optional[str]:
    return None if dtype is None else str(dtype).replace("torch.", "")


def _sum_over_processes(devices: _Devices, *values: int) -> List[int]:
    """``values`` summed over the processes of a distributed run in one exchange (every process must call it),
    else themselves."""
    if not devices.distributed:
        return list(values)
    import torch

    totals = devices.accelerator.reduce(torch.tensor(values, device=devices.device), reduction="sum")
    return [int(t) for t in totals.tolist()]


def _finish(state: _TrainState) -> Dict[str, Any]:
    """Without dev docs save the final model as the best; write history.json, summary.json and the
    pipeline folder on request. Other processes than the main one only report their step. The tokens per
    second (and examples per second) are those of all processes together, over the training time less the
    dev evaluations."""
    tokens, examples = _sum_over_processes(state.devices, state.tokens_seen, state.examples_seen)
    seconds = max(time.time() - state.t0 - state.eval_seconds, 1e-9)  # the main process's, evaluations left out
    if state.devices.rank != 0:
        return {"steps": state.step, "rank": state.devices.rank}
    if not state.dev_docs:
        state.best = {"score": None, "step": state.step, "scores": None}
        with _averaged(state):
            _save_best(state, None)
    (state.output / "history.json").write_text(json.dumps(state.history, indent=1))
    summary = {"best": state.best, "steps": state.step, "examples": state.data.examples,
               "train_seconds": round(time.time() - state.t0, 1),
               "eval_seconds": round(state.eval_seconds, 1), "tokens_per_second": round(tokens / seconds, 1),
               "examples_per_second": round(examples / seconds, 2),
               "processes": state.devices.world, "autocast": _dtype_name(state.devices.amp_dtype),
               "model": str(state.output / "best"),
               "trainable_parameters": state.n_trainable}
    if state.settings.pipeline:
        write_pipeline_folder(state.settings, state.output / "best")
        summary["pipeline"] = state.settings.pipeline
    (state.output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
