"""An exponential moving average of the trainable weights (``[training] ema_decay``).

After every optimizer step the average moves towards the weights: ``average += (1 - d) * (weights - average)``,
with ``d = min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates, so that the first steps, far from the end of
training, weigh little for long. The dev evaluations decode with the averaged weights and the best model folder
holds them; the optimizer keeps stepping the raw weights, and the checkpoint keeps both.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

__all__ = ["WeightAverage", "check_decay"]


def check_decay(decay) -> None:
    """A decay of 0 (no average) or in (0, 1)."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(f"must be a number from 0 (no average) up to but not including 1, got {decay!r}")


class WeightAverage:
    """The moving average of ``named`` parameters (name, parameter), kept in float32 on their device."""

    def __init__(self, named: List[Tuple[str, "object"]], decay: float):
        check_decay(decay)
        self.names = [name for name, _ in named]
        self.params = [param for _, param in named]
        self.decay = float(decay)
        self.updates = 0
        self.average = [param.detach().float().clone() for param in self.params]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self) -> None:
        """Move the average towards the weights as they are now (after an optimizer step)."""
        import torch

        weight = 1.0 - self.current_decay()
        with torch.no_grad():
            for avg, param in zip(self.average, self.params):
                avg.lerp_(param.detach().float(), weight)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The parameters hold the averaged weights inside the block, their own weights again after it."""
        import torch

        with torch.no_grad():
            raw = [param.detach().clone() for param in self.params]
            for avg, param in zip(self.average, self.params):
                param.copy_(avg.to(param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for saved, param in zip(raw, self.params):
                    param.copy_(saved)

    def state_dict(self) -> Dict[str, "object"]:
        """The averaged weights by parameter name, on the CPU, for a checkpoint."""
        return {name: avg.detach().cpu().contiguous() for name, avg in zip(self.names, self.average)}

    def load_state_dict(self, tensors: Dict[str, "object"], updates: int) -> None:
        missing = sorted(set(self.names) - set(tensors))
        if missing:
            raise ValueError(f"the checkpoint's weight average lacks {len(missing)} parameters, e.g. {missing[0]}")
        for i, name in enumerate(self.names):
            self.average[i].copy_(tensors[name].to(self.average[i].device))
        self.updates = int(updates)
