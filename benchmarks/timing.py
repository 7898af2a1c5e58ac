"""Clocks and latency statistics of the speed benchmark, the physical floor of a sequential pass, and what the kernel
benchmarks (``attention_speed.py``, ``head_speed.py``) share: a call timed in a CUDA graph, their options and the
head of their report."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

__all__ = ["Clock", "percentile", "latency_summary", "per", "memory_floor", "graph_us", "kernel_options",
           "kernel_report"]


class Clock:
    """Wall-clock timer that synchronises CUDA around the measurement, and tracks peak GPU memory."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.cuda = device is not None and device.type == "cuda"
        self.device = device

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> Optional[float]:
        if not self.cuda:
            return None
        return round(self.torch.cuda.max_memory_allocated(self.device) / 2**20, 1)

    def now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        return time.perf_counter()


def percentile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float]) -> Dict[str, Any]:
    if not ms:
        return {"docs": 0, "median": None, "p90": None, "mean": None, "min": None, "max": None, "values": []}
    return {"docs": len(ms), "median": round(statistics.median(ms), 3), "p90": round(percentile(ms, 90), 3),
            "mean": round(statistics.fmean(ms), 3), "min": round(min(ms), 3), "max": round(max(ms), 3),
            "values": [round(x, 3) for x in ms]}


def per(a: float, b: float, digits: int = 2) -> Optional[float]:
    return round(a / b, digits) if b else None


def memory_floor(model, device) -> Optional[Dict[str, Any]]:
    """Weight bytes one sequential pass must read (every parameter once; a tied embedding counts as the
    LM head), measured device memory bandwidth (a 2 GB copy), and their ratio in ms per pass (CUDA only)."""
    import torch

    if device.type != "cuda":
        return None
    seen, weight_bytes = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            weight_bytes += p.numel() * p.element_size()
    x = torch.empty(int(2e9), dtype=torch.uint8, device=device)
    x.clone()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        x.clone()
    torch.cuda.synchronize(device)
    gbps = 2 * 2e9 * 10 / (time.perf_counter() - start) / 1e9
    del x
    return {"weight_bytes": weight_bytes, "bandwidth_gb_per_s": round(gbps, 1),
            "ms_per_pass": round(weight_bytes / (gbps * 1e9) * 1000, 4)}


def graph_us(fn: Callable, args: Sequence, repeat: int, rounds: int) -> float:
    """Median microseconds per call of ``fn(*args)``, ``repeat`` calls captured in one CUDA graph and replayed
    ``rounds`` times."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeat):
            fn(*args)
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / repeat)
    return statistics.median(times)


def kernel_options(p: argparse.ArgumentParser, repeat: int) -> None:
    """A kernel benchmark's options for ``graph_us`` (calls per graph, replays) and its output."""
    p.add_argument("--repeat", type=int, default=repeat, help="calls per CUDA graph")
    p.add_argument("--rounds", type=int, default=20, help="graph replays timed")
    p.add_argument("--output", default=None, help="JSON path (the table and a PNG are written next to it)")


def kernel_report(p: argparse.ArgumentParser, args: argparse.Namespace) -> Dict[str, Any]:
    """The head of a kernel benchmark's report (device, torch, command, ``kernel_options``); a usage error without a
    GPU."""
    import torch

    if not torch.cuda.is_available():
        p.error("this benchmark times CUDA kernels: no GPU here")
    return dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                command="python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                repeat=args.repeat, rounds=args.rounds)
