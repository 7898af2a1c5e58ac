"""The progress bar of an annotation run, and its timing with and without the startup."""

from __future__ import annotations

import sys
import time
from typing import Optional, Tuple

__all__ = ["Progress"]


class Progress:
    """A tqdm bar in docs (it shows docs/s) that also times the run with and without the startup (loading
    the pipeline, starting Ray workers: everything before the first batch came back)."""

    def __init__(self, total: int, disable: bool = False):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="doc", desc="annotate", disable=disable, file=sys.stderr, smoothing=0.1)
        self.start = time.perf_counter()
        self.first: Optional[Tuple[float, int]] = None  # (time, docs) when the first batch came back
        self.docs = 0

    def update(self, n: int) -> None:
        self.docs += n
        if self.first is None:
            self.first = (time.perf_counter(), n)
        self.bar.update(n)

    def close(self) -> None:
        self.end = time.perf_counter()
        self.bar.close()

    def summary(self) -> str:
        seconds = self.end - self.start
        text = f"{seconds:.1f} s ({self.docs / seconds if seconds > 0 else 0.0:.1f} docs/s"
        if self.first is not None and self.docs > self.first[1] and self.end > self.first[0]:
            steady = (self.docs - self.first[1]) / (self.end - self.first[0])
            text += f"; {steady:.1f} docs/s after the first batch, {self.first[0] - self.start:.1f} s of startup"
        return text + ")"
