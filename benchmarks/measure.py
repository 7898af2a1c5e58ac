"""The speed benchmark's measurements: the pipelines and one ``Run`` per method, warm-up, latency at batch
size 1 (methods interleaved doc by doc) and ``nlp.pipe`` throughput."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from instrument import COUNTERS, Counting, captures, delta, snapshot, using
from methods import METHODS
from timing import Clock, per

__all__ = ["Run", "check_request", "select_device", "open_pipeline", "load_gold", "build_runs", "warm_texts",
           "warm_up", "time_latency", "time_throughput", "forward_passes"]


@dataclass
class Run:
    """One method of the benchmark: its pipeline, component and counted decoder, and what was measured."""

    name: str
    nlp: Any
    ner: Any
    counting: Counting
    description: str
    slow: bool
    measures_throughput: bool
    latency_docs: int = 0
    latencies: List[float] = field(default_factory=list)  # milliseconds per doc at batch size 1
    latency_preds: List[Any] = field(default_factory=list)
    totals: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))  # over the latency docs
    peak_mb: Optional[float] = None
    pipe_rounds: Optional[int] = None  # nlp.pipe warm-up rounds
    throughput: Optional[Dict[str, Any]] = None
    pipe_preds: Optional[List[Any]] = None  # of the first nlp.pipe run

    def timed(self, clock: Clock, call: Callable[[], Any]) -> Tuple[Any, float, Dict[str, int], Optional[float]]:
        """``call()`` with this run's decoder in the component: its result, seconds, counter deltas and peak GPU MB."""
        with using(self.ner, self.counting):
            before = snapshot(self.counting)
            clock.reset_peak()
            start = clock.now()
            out = call()
            seconds = clock.now() - start
            after = snapshot(self.counting)
        peak = clock.peak_mb()
        if peak is not None:
            self.peak_mb = max(self.peak_mb or 0.0, peak)
        return out, seconds, delta(after, before), peak


def check_request(methods: Sequence[str], compare: Dict[str, str], data: str, batch_sizes: Sequence[int]) -> None:
    """A ``ValueError`` (or ``FileNotFoundError``) that says what to fix, before anything is loaded."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    clash = [m for m in compare if m in methods]
    if clash:
        raise ValueError(f"compared pipeline name(s) {clash} clash with method names")
    if not Path(data).exists():
        raise FileNotFoundError(f"no such DocBin: {data}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive, got {list(batch_sizes)}")


def select_device(device: Optional[str], gpu_id: int) -> Optional[str]:
    """The device to put the component on (None: its own setting), and ``spacy.require_gpu(gpu_id)`` as
    ``spacy evaluate`` does."""
    import spacy

    from spacy_padellm.devices import resolve_device

    if device is None and gpu_id < 0:
        return None
    if device == "cuda" and gpu_id >= 0:
        device = f"cuda:{gpu_id}"
    device = str(resolve_device(device, gpu_id=gpu_id))
    if gpu_id >= 0 and device != "cpu":
        try:  # the component itself only needs torch, so cupy is optional here
            spacy.require_gpu(gpu_id)
        except (ValueError, ImportError) as err:
            warnings.warn(f"spacy.require_gpu({gpu_id}) failed ({err}); the padellm_ner component runs on {device}")
    return device


def forward_passes(decoder, default: Optional[int] = None) -> Optional[int]:
    """The forward passes ``decoder`` has run so far (its ``DecoderStats``), or ``default`` for a decoder without
    them."""
    return getattr(getattr(decoder, "stats", None), "forward_passes", default)


def _find_component(nlp):
    from spacy_padellm.pipeline.component import PaDeLLMNER

    for name, proc in nlp.pipeline:
        if isinstance(proc, PaDeLLMNER):
            return name, proc
    raise ValueError(f"the pipeline has no padellm_ner component (components: {nlp.pipe_names})")


def open_pipeline(path: str, lang: Optional[str], spans_key: Optional[str], device: Optional[str],
                  settings: Optional[Dict[str, Any]] = None):
    """``(nlp, padellm_ner component, its engine)``, the model loaded on ``device`` (None: as configured),
    with the decoding ``settings`` given (some ``DecodeSettings`` keys)."""
    import torch

    from spacy_padellm.pipeline.load import load_pipeline

    config = {**(settings or {}), **({"device": device} if device else {})}
    nlp = load_pipeline(path, lang=lang, spans_key=spans_key, config=config)
    _, ner = _find_component(nlp)
    if device is not None and ner._runtime is not None:  # a saved pipeline loaded its model already
        loaded = next(ner._runtime[0].parameters()).device
        if loaded != torch.device(device):
            ner._runtime = None
    if device is not None:
        ner.cfg["device"] = device
    return nlp, ner, ner.decoder  # loads the model


def load_gold(data: str, vocab, max_docs: Optional[int]) -> List[Any]:
    from spacy.tokens import DocBin

    gold = list(DocBin().from_disk(data).get_docs(vocab))
    if max_docs:
        gold = gold[:max_docs]
    if not gold:
        raise ValueError(f"{data} holds no docs")
    return gold


def build_runs(methods: Sequence[str], engine, nlp, ner, compare: Dict[str, str],
               open_other: Callable[[str], Tuple[Any, Any, Any]]) -> List[Run]:
    """A run per method on the component's engine, then one per compared pipeline (its own engine)."""
    runs = [Run(name, nlp, ner, Counting(METHODS[name].build(engine)), METHODS[name].description,
                slow=METHODS[name].slow, measures_throughput=METHODS[name].throughput) for name in methods]
    for name, path in compare.items():
        c_nlp, c_ner, c_engine = open_other(path)
        runs.append(Run(name, c_nlp, c_ner, Counting(c_engine),
                        f"pipeline {path} (decoding {c_ner.cfg.get('decoding') or 'from its model'})",
                        slow=False, measures_throughput=True))
    return runs


def warm_texts(texts: Sequence[str], warmup: int, n_timed: int) -> Tuple[List[str], int, bool]:
    """The docs run one at a time before timing, their number, and whether they are apart from the timed docs.

    They are taken from the end of the data, so that the timed docs (its first ones) are not among them when
    the data holds enough docs: a timed doc may still meet a CUDA-graph shape for the first time, as in use.
    """
    n_warm = min(warmup, len(texts))
    disjoint = bool(n_warm) and len(texts) >= n_timed + n_warm
    return list(texts[-n_warm:] if disjoint else texts[:n_warm]), n_warm, disjoint


def _warm_pipe(nlp, texts: Sequence[str], batch_sizes: Sequence[int]) -> int:
    """``nlp.pipe`` over all docs at every batch size, in rounds until a round captures no CUDA graph (at
    most 3), so that the timed runs find their graphs captured as in a long-running process. One round is
    not enough when a later batch size grows a KV cache, which forgets every graph captured on it before."""
    for pipe_round in range(1, 4):
        captured = captures()
        for bs in batch_sizes:
            list(nlp.pipe(texts, batch_size=bs))
        if captures() == captured:
            break
    return pipe_round


def warm_up(runs: Sequence[Run], texts: Sequence[str], warm: Sequence[str], batch_sizes: Sequence[int],
            progress: bool) -> None:
    """Untimed: kernels, CUDA graphs, allocator and tokenizer caches. Throughput methods first run
    ``nlp.pipe`` over all docs (at a batch size of 1 that decodes the timed docs as the timing does), then
    every method runs the ``warm`` docs one at a time (drafting calls, on a KV cache of their own)."""
    from tqdm.auto import tqdm

    for run in tqdm(runs, desc="warm-up", disable=not progress):
        with using(run.ner, run.counting):
            if run.measures_throughput:
                run.pipe_rounds = _warm_pipe(run.nlp, texts, batch_sizes)
            for text in warm:
                run.nlp(text)


def time_latency(runs: Sequence[Run], texts: Sequence[str], clock: Clock, progress: bool) -> None:
    """``nlp(text)`` one doc at a time, the methods interleaved doc by doc so that machine noise hits them alike."""
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(r.latency_docs for r in runs), desc="latency (batch size 1)", disable=not progress)
    for i, text in enumerate(texts[: max((r.latency_docs for r in runs), default=0)]):
        for run in runs:
            if i >= run.latency_docs:
                continue
            doc, seconds, counted, _ = run.timed(clock, lambda: run.nlp(text))
            run.latencies.append(seconds * 1000.0)
            run.latency_preds.append(doc)
            for k, v in counted.items():
                run.totals[k] += v
            bar.update(1)
            bar.set_postfix_str(run.name)
    bar.close()


def time_throughput(run: Run, texts: Sequence[str], n_words: int, batch_sizes: Sequence[int], clock: Clock,
                    progress: bool) -> None:
    """``nlp.pipe`` over all docs at each batch size: a row per batch size and the best of them."""
    from tqdm.auto import tqdm

    rows: Dict[str, Dict[str, Any]] = {}
    for bs in batch_sizes:
        docs, seconds, counted, peak = run.timed(clock, lambda: list(tqdm(
            run.nlp.pipe(texts, batch_size=bs), total=len(texts), desc=f"{run.name} nlp.pipe batch size {bs}",
            disable=not progress)))
        if run.pipe_preds is None:
            run.pipe_preds = docs
        rows[str(bs)] = {"docs": len(texts), "seconds": round(seconds, 4),
                         "sentences_per_second": round(len(texts) / seconds, 2),
                         "words_per_second": round(n_words / seconds, 1),
                         "forward_passes_per_sentence": per(counted["forward_passes"], len(texts)),
                         "graph_captures": counted["graph_captures"], "peak_gpu_memory_mb": peak}
    best = max(rows, key=lambda b: rows[b]["sentences_per_second"]) if rows else None
    run.throughput = {"batch_sizes": rows, "best": None if best is None else {
        "batch_size": int(best), "sentences_per_second": rows[best]["sentences_per_second"],
        "words_per_second": rows[best]["words_per_second"]}}
