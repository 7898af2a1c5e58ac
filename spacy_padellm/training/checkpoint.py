"""The training checkpoint in ``OUTPUT/checkpoint``, so that ``[training] resume = true`` continues a
stopped training: the trainable weights (``trainable.safetensors``), the optimiser, scheduler, step and
Python RNG (``state.pt``), the best dev result so far (``best.json``) and the history (``history.json``)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Tuple

__all__ = ["save_checkpoint", "load_checkpoint", "has_checkpoint"]


def has_checkpoint(ckpt_dir: Path) -> bool:
    return (ckpt_dir / "state.pt").exists()


def save_checkpoint(ckpt_dir: Path, model, optimizer, scheduler, step: int, rng: random.Random,
                    best: Dict[str, Any], history: List[Dict[str, Any]]) -> None:
    """Write the checkpoint; ``model`` is the unwrapped model (its trainable parameters are saved)."""
    import torch
    from safetensors.torch import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    named = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(named, str(ckpt_dir / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": _rng_to_list(rng.getstate())}, ckpt_dir / "state.pt")
    (ckpt_dir / "best.json").write_text(json.dumps(best))
    (ckpt_dir / "history.json").write_text(json.dumps(history))


def load_checkpoint(ckpt_dir: Path, model, optimizer, scheduler,
                    rng: random.Random) -> Tuple[int, Dict[str, Any], List[Dict[str, Any]]]:
    """Restore the weights, optimiser, scheduler and ``rng`` in place; returns (step, best, history)."""
    import torch
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
    return step, best, history


def _rng_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_list(data):
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
