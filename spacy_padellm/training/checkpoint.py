"""The training checkpoint in ``OUTPUT/checkpoint``, so that ``[training] resume = true`` continues a
stopped training: the trainable weights (``trainable.safetensors``), their moving average when training
keeps one (``average.safetensors``), the optimiser, scheduler, step and
Python RNG (``state.pt``), the best dev result so far (``best.json``) and the history (``history.json``)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Tuple

__all__ = ["save_checkpoint", "load_checkpoint", "has_checkpoint"]

AVERAGE_FILE = "average.safetensors"


def has_checkpoint(ckpt_dir: Path) -> bool:
    return (ckpt_dir / "state.pt").exists()


def save_checkpoint(ckpt_dir: Path, model, optimizer, scheduler, step: int, rng: random.Random,
                    best: Dict[str, Any], history: List[Dict[str, Any]], average=None) -> None:
    """Write the checkpoint; ``model`` is the unwrapped model (its trainable parameters are saved), ``average``
    a ``WeightAverage`` or None."""
    import torch
    from safetensors.torch import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    named = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(named, str(ckpt_dir / "trainable.safetensors"))
    if average is not None:
        save_file(average.state_dict(), str(ckpt_dir / AVERAGE_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": _rng_to_list(rng.getstate()), "average_updates": average.updates if average else 0},
               ckpt_dir / "state.pt")
    (ckpt_dir / "best.json").write_text(json.dumps(best))
    (ckpt_dir / "history.json").write_text(json.dumps(history))


def load_checkpoint(ckpt_dir: Path, model, optimizer, scheduler, rng: random.Random,
                    average=None) -> Tuple[int, Dict[str, Any], List[Dict[str, Any]]]:
    """Restore the weights, optimiser, scheduler, ``rng`` and ``average`` (a ``WeightAverage``; from the resumed
    weights when the checkpoint holds none) in place; returns (step, best, history)."""
    import torch
    from safetensors.torch import load_file

    state = torch.load(ckpt_dir / "state.pt", weights_only=True)
    weights = load_file(str(ckpt_dir / "trainable.safetensors"))
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, tensor in weights.items():
        named[name].data.copy_(tensor.to(named[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if average is not None:
        path = ckpt_dir / AVERAGE_FILE
        if path.exists():
            average.load_state_dict(load_file(str(path)), state.get("average_updates", 0))
        else:  # the checkpoint of a training without an average: it starts from the resumed weights
            average.load_state_dict({n: p.detach() for n, p in named.items()}, 0)
    step = int(state["step"])
    rng.setstate(_rng_from_list(state["rng"]))
    best = json.loads((ckpt_dir / "best.json").read_text())
    history = json.loads((ckpt_dir / "history.json").read_text())
    return step, best, history


def _rng_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_list(data):
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
