"""``python -m spacy_padellm benchmark PIPELINE DATA.spacy``: speed and accuracy of decoding methods, side by side.

PIPELINE is a spaCy pipeline folder with a ``padellm_ner`` component, a PaDeLLM model folder or
``padellm:NAME`` (see ``evaluate.load_pipeline``); DATA is a DocBin with gold entities (or spans).

Every method in ``METHODS`` runs inside the same pipeline: its decoder (anything with the engine's
``decode(requests)`` and ``stats``) is swapped into the component for the time of its measurements, so
windowing, alignment, de-duplication and span writing are identical and only decoding differs.

Per method: span- and string-level F1, per-sentence latency at batch size 1 (``nlp(text)``, one doc at a
time, the methods interleaved doc by doc so that machine noise hits them alike), sequential forward
passes and tokens per sentence (``DecoderStats`` deltas), ``nlp.pipe`` throughput at several batch sizes
(methods with ``throughput=True``), peak GPU memory on CUDA, and the speedup over ``reference`` (median
latency ratio on the docs both decoded). Writes JSON (``--output``), a markdown table and a PNG next to it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

__all__ = ["Method", "METHODS", "ReferenceDecoder", "benchmark", "render_markdown", "render_plot",
           "add_parser", "run"]

BASELINE = "reference"  # speedups are measured against this method


# --- Methods -------------------------------------------------------------------------------------


class ReferenceDecoder:
    """``plain_decode`` behind the engine's interface: every sequence on its own, no cache."""

    def __init__(self, model, encoder, *, max_count: int = 20, max_count_tokens: int = 4,
                 max_mention_tokens: int = 40):
        from spacy_padellm.decoding.types import DecoderStats

        self.model = model
        self.encoder = encoder
        self.max_count = max_count
        self.max_count_tokens = max_count_tokens
        self.max_mention_tokens = max_mention_tokens
        self.stats = DecoderStats()

    @classmethod
    def like(cls, engine) -> "ReferenceDecoder":
        """A reference decoder with the same model, prompts and limits as ``engine``."""
        return cls(engine.model, engine.encoder, max_count=engine.max_count,
                   max_count_tokens=engine.max_count_tokens, max_mention_tokens=engine.max_mention_tokens)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def decode(self, requests):
        from spacy_padellm.decoding.plain import plain_decode

        return plain_decode(self.model, self.encoder, requests, max_count=self.max_count,
                                max_count_tokens=self.max_count_tokens, max_mention_tokens=self.max_mention_tokens,
                                stats=self.stats)


@dataclass(frozen=True)
class Method:
    """A decoding method to benchmark.

    ``build(engine)`` returns a decoder with ``decode(requests) -> List[DocResult]`` and ``stats``
    (a ``DecoderStats``), given the component's own ``TwoStepDecoder``. ``slow`` methods are timed on
    ``--reference-docs`` docs instead of ``--latency-docs``; ``throughput`` methods also run ``nlp.pipe``
    at every ``--batch-sizes`` entry (on all ``--max-docs`` docs, which is also what their F1 is on).
    """

    build: Callable[[Any], Any]
    description: str
    slow: bool = False
    throughput: bool = False


def _dynamic(engine):
    from spacy_padellm.decoding.dynamic import TwoStepDecoder

    return TwoStepDecoder(engine.model, engine.encoder, max_count=engine.max_count,
                          max_count_tokens=engine.max_count_tokens, max_mention_tokens=engine.max_mention_tokens)


def _tree_variant(engine, method: str, **changes):
    """The component's tree engine (same weights, settings and KV caches) with ``changes`` to its decoding settings."""
    from spacy_padellm.decoding.tree import TreeDecoder

    if not isinstance(engine, TreeDecoder):
        raise ValueError(f"method {method} needs the static tree engine (a Llama-family model, engine auto)")
    return engine.variant(**changes)


def _no_drafts(engine):
    """The component's tree engine with drafting off (one pass per mention token), on the same weights."""
    return _tree_variant(engine, "padellm_nodraft", draft_tokens=0)


def _no_span_drafts(engine):
    """The component's tree engine with count drafts but no span drafts (the session-5 ablation)."""
    return _tree_variant(engine, "padellm_nospan", span_drafts=0)


def _word_span_drafts(engine):
    """The component's tree engine with the span drafts of sessions 5-7: the next 4 tokens of each capitalised word."""
    return _tree_variant(engine, "padellm_words", span_source="words", span_draft_tokens=4)


def _generate_reference(engine):
    from spacy_padellm.decoding.reference import ReferenceDecoder as GenerateReference

    return GenerateReference(engine.model, engine.encoder, max_count=engine.max_count,
                             max_count_tokens=engine.max_count_tokens, max_mention_tokens=engine.max_mention_tokens)


METHODS: Dict[str, Method] = {
    "padellm": Method(lambda engine: engine,
                      "the component's engine: tree decoding on a static KV cache with CUDA graphs (Llama-family "
                      "models), else the dynamic-cache engine", throughput=True),
    "padellm_nodraft": Method(_no_drafts, "the same tree engine without drafts copied from the text: one pass "
                                          "per mention token", throughput=True),
    "padellm_nospan": Method(_no_span_drafts, "the same tree engine with count drafts but without span drafts "
                                              "(mentions start one pass after their tags)", throughput=False),
    "padellm_words": Method(_word_span_drafts, "the same tree engine with span drafts from the next 4 tokens of each "
                                               "capitalised word (sessions 5-7) instead of runs of capitalised "
                                               "words", throughput=False),
    "padellm_dynamic": Method(_dynamic, "plain eager two-step decoder: transformers forward, dynamic KV cache, "
                                        "prefix shared by copying, one pass per token", throughput=True),
    "reference": Method(_generate_reference,
                        "reference-style decoding (PaDeLLM repository): model.generate per count and per mention, "
                        "prompt re-encoded for every sequence", slow=True),
    "reference_nocache": Method(ReferenceDecoder.like,
                                "each sequence alone, no KV cache at all, whole prompt re-encoded every step",
                                slow=True),
}
DEFAULT_METHODS = ("padellm", "padellm_dynamic", "reference")
PLAIN = "padellm_dynamic"  # greedy outputs of the other PaDeLLM methods are compared with this one


class _Counting:
    """Wraps a decoder and counts the requests and decoded sequences (count rows + mention rows)."""

    def __init__(self, inner):
        self.inner = inner
        self.windows = 0
        self.sequences = 0

    @property
    def stats(self):
        return self.inner.stats

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, requests):
        results = self.inner.decode(requests)
        self.windows += len(requests)
        self.sequences += sum(len(r.labels) for r in requests)
        self.sequences += sum(len(res.predictions) + res.truncated_mentions for res in results)
        return results


def _snapshot(counting: _Counting) -> Dict[str, int]:
    s = counting.stats
    return {"forward_passes": int(getattr(s, "forward_passes", 0)),
            "prompt_tokens": int(getattr(s, "prompt_tokens", 0)),
            "generated_tokens": int(getattr(s, "generated_tokens", 0)), "sequences": counting.sequences,
            "windows": counting.windows, "draft_tokens": int(getattr(s, "draft_tokens", 0)),
            "accepted_draft_tokens": int(getattr(s, "accepted_draft_tokens", 0)),
            "graph_captures": _captures()}


def _captures() -> int:
    """CUDA graphs captured so far by the process's static engines (0 without the static engine loaded)."""
    static_lm = sys.modules.get("spacy_padellm.decoding.static_lm")
    return int(static_lm.StaticLM.all_captures) if static_lm is not None else 0


def _delta(after: Dict[str, int], before: Dict[str, int]) -> Dict[str, int]:
    return {k: after[k] - before[k] for k in after}


@contextmanager
def _using(ner, decoder) -> Iterator[None]:
    """Run the component with ``decoder`` in place of its engine (model and tokenizer unchanged)."""
    model, tokenizer, _ = ner._ensure_loaded()
    saved = ner._runtime
    ner._runtime = (model, tokenizer, decoder)
    try:
        yield
    finally:
        ner._runtime = saved


# --- Helpers -------------------------------------------------------------------------------------


def _find_component(nlp):
    from spacy_padellm.pipeline.component import PaDeLLMNER

    for name, proc in nlp.pipeline:
        if isinstance(proc, PaDeLLMNER):
            return name, proc
    raise ValueError(f"the pipeline has no padellm_ner component (components: {nlp.pipe_names})")


def _normalise_device(device: Optional[str], gpu_id: int) -> Optional[str]:
    import torch

    if device is None and gpu_id < 0:
        return None
    if device is None:
        device = "cuda"
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"--device must be cpu, cuda or cuda:K, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available (torch {torch.__version__})")
        if device == "cuda":
            device = f"cuda:{max(gpu_id, 0) if gpu_id >= 0 else torch.cuda.current_device()}"
    return device


class _Clock:
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


def _percentile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _latency_summary(ms: Sequence[float]) -> Dict[str, Any]:
    if not ms:
        return {"docs": 0, "median": None, "p90": None, "mean": None, "min": None, "max": None, "values": []}
    return {"docs": len(ms), "median": round(statistics.median(ms), 3), "p90": round(_percentile(ms, 90), 3),
            "mean": round(statistics.fmean(ms), 3), "min": round(min(ms), 3), "max": round(max(ms), 3),
            "values": [round(x, 3) for x in ms]}


def _per(a: float, b: float, digits: int = 2) -> Optional[float]:
    return round(a / b, digits) if b else None


def _floor(model, device) -> Optional[Dict[str, Any]]:
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


def _decoding_summary(d: Dict[str, int], docs: int) -> Dict[str, Any]:
    return {"docs": docs,
            "forward_passes_per_sentence": _per(d["forward_passes"], docs),
            "sequences_per_sentence": _per(d["sequences"], docs),
            "generated_tokens_per_sequence": _per(d["generated_tokens"], d["sequences"]),
            "generated_tokens_per_sentence": _per(d["generated_tokens"], docs),
            "prompt_tokens_per_sentence": _per(d["prompt_tokens"], docs, 1),
            "draft_acceptance": _per(d.get("accepted_draft_tokens", 0), d.get("draft_tokens", 0)),
            "graph_captures": d.get("graph_captures", 0),
            "totals": d}


def _scores(preds, gold, spans_key: Optional[str]) -> Dict[str, Any]:
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm, string_level_scores

    examples = [Example(p, g) for p, g in zip(preds, gold)]
    span = score_padellm(examples, spans_key=spans_key)
    prefix = f"spans_{spans_key}" if spans_key else "ents"
    string = string_level_scores(examples, spans_key)
    out = {"docs": len(examples), "span_metric": f"{prefix}_f"}
    for k in ("p", "r", "f"):
        out[f"span_{k}"] = span.get(f"{prefix}_{k}")
        out[f"string_{k}"] = string.get(f"string_{k}")
    return out


def _spans(doc, spans_key: Optional[str]):
    spans = doc.spans.get(spans_key, []) if spans_key else doc.ents
    return sorted((s.start_char, s.end_char, s.label_) for s in spans)


def _device_name(device) -> str:
    import torch

    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    proc = platform.processor() or platform.machine() or "unknown"
    return f"cpu: {proc} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _command(args) -> str:
    argv = ["python", "-m", "spacy_padellm", "benchmark", str(args.pipeline), str(args.data)]
    for flag, dest in (("--max-docs", "max_docs"), ("--latency-docs", "latency_docs"),
                       ("--reference-docs", "reference_docs"), ("--batch-sizes", "batch_sizes"),
                       ("--warmup", "warmup"), ("--methods", "methods"), ("--device", "device"),
                       ("--gpu-id", "gpu_id"), ("--spans-key", "spans_key"), ("--lang", "lang"),
                       ("--output", "output")):
        value = getattr(args, dest, None)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value is not None and not (dest == "gpu_id" and value < 0):
            argv += [flag, str(value)]
    for item in getattr(args, "compare", None) or []:
        argv += ["--compare", item]
    if getattr(args, "no_progress", False):
        argv.append("--no-progress")
    return shlex.join(argv)


# --- The benchmark -------------------------------------------------------------------------------


def benchmark(pipeline: str, data: str, *, max_docs: Optional[int] = None, latency_docs: int = 200,
              reference_docs: int = 50, batch_sizes: Sequence[int] = (1, 8, 32, 128), warmup: int = 3,
              methods: Optional[Sequence[str]] = None, device: Optional[str] = None, gpu_id: int = -1,
              spans_key: Optional[str] = None, lang: Optional[str] = None, progress: bool = True,
              command: Optional[str] = None, compare: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Measure every method of ``methods`` (default: ``DEFAULT_METHODS``) on the docs of ``data``.

    ``compare`` adds methods that are other pipelines (name -> pipeline folder or model), such as the
    autoregressive baselines: each runs its own component with its own model and decoding mode.
    """
    import spacy
    import torch
    import transformers
    from spacy.tokens import DocBin
    from tqdm.auto import tqdm

    from spacy_padellm.cli.evaluate import load_pipeline

    compare = dict(compare or {})
    methods = list(methods or DEFAULT_METHODS)
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
    device = _normalise_device(device, gpu_id)
    if gpu_id >= 0 and device != "cpu":
        try:  # like spacy evaluate; the component itself only needs torch, so cupy is optional here
            spacy.require_gpu(gpu_id)
        except (ValueError, ImportError) as err:
            warnings.warn(f"spacy.require_gpu({gpu_id}) failed ({err}); the padellm_ner component runs on {device}")

    def open_pipeline(path):
        nlp = load_pipeline(path, lang, spans_key, {"device": device} if device else None)
        _, ner = _find_component(nlp)
        if device is not None and ner._runtime is not None:  # a saved pipeline loaded its model already
            loaded = next(ner._runtime[0].parameters()).device
            if loaded != torch.device(device):
                ner._runtime = None
        if device is not None:
            ner.cfg["device"] = device
        return nlp, ner, ner.decoder  # loads the model

    nlp, ner, engine = open_pipeline(pipeline)
    key = spans_key or ner.spans_key
    model = ner._runtime[0]
    torch_device = next(model.parameters()).device
    clock = _Clock(torch_device)

    gold = list(DocBin().from_disk(data).get_docs(nlp.vocab))
    if max_docs:
        gold = gold[:max_docs]
    if not gold:
        raise ValueError(f"{data} holds no docs")
    texts = [d.text for d in gold]
    n_words = sum(1 for d in gold for t in d if not t.is_space)

    setups: Dict[str, Any] = {name: (nlp, ner, _Counting(METHODS[name].build(engine))) for name in methods}
    descriptions = {name: METHODS[name].description for name in methods}
    slow = {name: METHODS[name].slow for name in methods}
    fast = {name: METHODS[name].throughput for name in methods}
    for name, path in compare.items():
        c_nlp, c_ner, c_engine = open_pipeline(path)
        setups[name] = (c_nlp, c_ner, _Counting(c_engine))
        descriptions[name] = f"pipeline {path} (decoding {c_ner.cfg.get('decoding') or 'from its model'})"
        slow[name], fast[name] = False, True
    names = list(setups)
    n_latency = {name: min(len(gold), reference_docs if slow[name] else latency_docs) for name in names}

    # Warm-up: a few docs per method (kernels, CUDA graphs, allocator, tokenizer caches), not measured. They
    # are taken from the end of the data, so that the timed docs (its first ones) are not among them when the
    # data holds enough docs: a timed doc may still meet a CUDA-graph shape for the first time, as in use.
    # (The nlp.pipe warm-up of throughput methods covers all docs; at a batch size of 1 it decodes the timed
    # docs exactly as the timing does, which the report's settings say.)
    n_warm = min(warmup, len(gold))
    n_timed = max(n_latency.values(), default=0)
    warm_disjoint = bool(n_warm) and len(texts) >= n_timed + n_warm
    warm_texts = texts[-n_warm:] if warm_disjoint else texts[:n_warm]
    pipe_rounds: Dict[str, int] = {}
    if n_warm:
        for name in tqdm(names, desc="warm-up", disable=not progress):
            m_nlp, m_ner, counting = setups[name]
            with _using(m_ner, counting):
                if fast[name]:
                    # Every batch size over all docs, in rounds until a round captures no CUDA graph (at most 3):
                    # the timed runs then find their graphs captured, as in a long-running process. One round
                    # is not enough when a later batch size grows a KV cache, which forgets every graph
                    # captured on it before (a round of 256, 1024, 2048 docs per call left 1,072 and 955
                    # sentences/s at 256 and 1024 against 2,065 at 2048 on an H100, session 8).
                    for pipe_round in range(1, 4):
                        captured = _captures()
                        for bs in batch_sizes:
                            list(m_nlp.pipe(texts, batch_size=bs))
                        pipe_rounds[name] = pipe_round
                        if _captures() == captured:
                            break
                # then one doc at a time (drafting calls, on a KV cache of their own)
                for text in warm_texts:
                    m_nlp(text)

    # Latency at batch size 1, methods interleaved doc by doc.
    latencies: Dict[str, List[float]] = {name: [] for name in names}
    latency_preds: Dict[str, List[Any]] = {name: [] for name in names}
    totals = {name: {"forward_passes": 0, "prompt_tokens": 0, "generated_tokens": 0, "sequences": 0, "windows": 0,
                     "draft_tokens": 0, "accepted_draft_tokens": 0, "graph_captures": 0} for name in names}
    peaks: Dict[str, Optional[float]] = {name: None for name in names}
    bar = tqdm(total=sum(n_latency.values()), desc="latency (batch size 1)", disable=not progress)
    for i, text in enumerate(texts[: max(n_latency.values(), default=0)]):
        for name in names:
            if i >= n_latency[name]:
                continue
            m_nlp, m_ner, counting = setups[name]
            with _using(m_ner, counting):
                before = _snapshot(counting)
                clock.reset_peak()
                start = clock.now()
                doc = m_nlp(text)
                seconds = clock.now() - start
                after = _snapshot(counting)
            peak = clock.peak_mb()
            if peak is not None:
                peaks[name] = max(peaks[name] or 0.0, peak)
            latencies[name].append(seconds * 1000.0)
            latency_preds[name].append(doc)
            for k, v in _delta(after, before).items():
                totals[name][k] += v
            bar.update(1)
            bar.set_postfix_str(name)
    bar.close()

    # Throughput with nlp.pipe at each batch size, on all docs.
    throughput: Dict[str, Optional[Dict[str, Any]]] = {name: None for name in names}
    pipe_preds: Dict[str, List[Any]] = {}
    for name in names:
        if not fast[name]:
            continue
        m_nlp, m_ner, counting = setups[name]
        rows: Dict[str, Dict[str, Any]] = {}
        for bs in batch_sizes:
            with _using(m_ner, counting):
                before = _snapshot(counting)
                clock.reset_peak()
                start = clock.now()
                docs = list(tqdm(m_nlp.pipe(texts, batch_size=bs), total=len(texts),
                                 desc=f"{name} nlp.pipe batch size {bs}", disable=not progress))
                seconds = clock.now() - start
                after = _snapshot(counting)
            peak = clock.peak_mb()
            if peak is not None:
                peaks[name] = max(peaks[name] or 0.0, peak)
            d = _delta(after, before)
            pipe_preds.setdefault(name, docs)
            rows[str(bs)] = {"docs": len(texts), "seconds": round(seconds, 4),
                             "sentences_per_second": round(len(texts) / seconds, 2),
                             "words_per_second": round(n_words / seconds, 1),
                             "forward_passes_per_sentence": _per(d["forward_passes"], len(texts)),
                             "graph_captures": d["graph_captures"], "peak_gpu_memory_mb": peak}
        best_bs = max(rows, key=lambda b: rows[b]["sentences_per_second"]) if rows else None
        throughput[name] = {"batch_sizes": rows, "best": None if best_bs is None else {
            "batch_size": int(best_bs), "sentences_per_second": rows[best_bs]["sentences_per_second"],
            "words_per_second": rows[best_bs]["words_per_second"]}}

    # The physical floor: weight bytes read per sequential pass over measured memory bandwidth.
    floor = _floor(model, torch_device)

    # Accuracy, speedups and agreement.
    results: Dict[str, Any] = {}
    for name in names:
        preds = pipe_preds.get(name) or latency_preds[name]
        decoding = _decoding_summary(totals[name], len(latencies[name]))
        lat = _latency_summary(latencies[name])
        floor_ms = None
        if floor and decoding.get("forward_passes_per_sentence"):
            floor_ms = round(decoding["forward_passes_per_sentence"] * floor["ms_per_pass"], 3)
        results[name] = {
            "description": descriptions[name],
            "f1": _scores(preds, gold[: len(preds)], key),
            "latency_ms": lat,
            "decoding": decoding,
            "throughput": throughput[name],
            "peak_gpu_memory_mb": peaks[name],
            "floor_ms": floor_ms,
            "mean_latency_over_floor": round(lat["mean"] / floor_ms, 1) if floor_ms and lat.get("mean") else None,
            "speedup_vs_reference": None,
            "agreement_with_reference": None,
            "agreement_with_plain": None,
            "padellm_speedup": None,
        }
    for base, field in ((BASELINE, "agreement_with_reference"), (PLAIN, "agreement_with_plain")):
        if base not in results:
            continue
        for name in names:
            if name in compare:
                continue  # another model: agreement is not expected
            n = min(len(latency_preds[base]), len(latency_preds[name]))
            if n:
                pairs = zip(latency_preds[name][:n], latency_preds[base][:n])
                results[name][field] = round(sum(_spans(a, key) == _spans(b, key) for a, b in pairs) / n, 4)
    if BASELINE in results:
        base_ms = latencies[BASELINE]
        for name in names:
            n = min(len(base_ms), len(latencies[name]))
            if not n:
                continue
            mine = latencies[name][:n]
            results[name]["speedup_vs_reference"] = {
                "docs": n,
                "median_latency_ratio": round(statistics.median(base_ms[:n]) / statistics.median(mine), 2),
                "per_doc_ratio_median": round(statistics.median(b / m for b, m in zip(base_ms[:n], mine)), 2),
            }
    if "padellm" in results:
        mine = latencies["padellm"]
        for name in names:
            n = min(len(mine), len(latencies[name]))
            if n:
                results[name]["padellm_speedup"] = round(
                    statistics.median(latencies[name][:n]) / statistics.median(mine[:n]), 2)
    speedup = (results.get("padellm", {}).get("speedup_vs_reference") or {}).get("median_latency_ratio")
    methods = names

    return {
        "command": command,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pipeline": str(pipeline),
        "data": str(data),
        "environment": {
            "device": str(torch_device),
            "device_name": _device_name(torch_device),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "spacy": spacy.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "docs": len(gold), "words": n_words, "max_docs": max_docs, "latency_docs": latency_docs,
            "reference_docs": reference_docs, "batch_sizes": list(batch_sizes), "warmup_docs": n_warm,
            "warmup_docs_are_timed_docs": (bool(n_warm) and not warm_disjoint)
            or (1 in list(batch_sizes) and any(fast.values())),
            "pipe_warmup": "untimed nlp.pipe over all docs at each batch size, per throughput method, in rounds "
                           "until a round captures no CUDA graph (at most 3)",
            "pipe_warmup_rounds": pipe_rounds,
            "methods": methods, "labels": list(ner.labels), "spans_key": key, "text_format": ner.text_format,
            "component_batch_size": ner.cfg["batch_size"], "max_batch_rows": ner.cfg["max_batch_rows"],
        },
        "notes": {
            "f1": "on all docs for throughput methods (first nlp.pipe run), else on their latency docs",
            "latency": "nlp(text), one doc at a time, methods interleaved doc by doc; milliseconds",
            "decoding": "per sentence over the latency docs; forward_passes at batch size 1 are sequential steps; "
                        "generated tokens as each decoder's DecoderStats counts them (the engine counts tokens fed "
                        "back to the model, so a final EOS is not counted; the reference counts every step)",
            "speedup": "reference median latency / method median latency, on the docs both timed",
        },
        "methods": results,
        "speedup": speedup,
        "peak_gpu_memory_mb": max((p for p in peaks.values() if p is not None), default=None),
        "floor": floor,
        "compare": compare,
    }


# --- Reports -------------------------------------------------------------------------------------


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def render_markdown(report: Dict[str, Any]) -> str:
    env, settings = report["environment"], report["settings"]
    lines = [
        "## PaDeLLM-NER benchmark",
        "",
        f"- device: {env['device_name']} ({env['device']}, {env['dtype']}); torch {env['torch']}, "
        f"transformers {env['transformers']}, spaCy {env['spacy']}",
        f"- data: `{report['data']}` ({settings['docs']} docs, {settings['words']} words); "
        f"pipeline: `{report['pipeline']}`",
        f"- command: `{report['command']}`",
        f"- {report['timestamp']}",
        "",
        "| method | F1 docs | span F1 | string F1 | latency docs | median ms | p90 ms | mean ms | steps/sent "
        "| gen tok/seq | gen tok/sent | prompt tok/sent | floor ms | × floor | speedup vs reference "
        "| padellm faster by | same as reference | same as plain | best sent/s (bs) | words/s | peak GPU MB |",
        "|" + "---|" * 21,
    ]
    floor = report.get("floor")
    if floor:
        lines.insert(-3, f"- floor: {floor['weight_bytes'] / 1e6:,.0f} MB of weights per sequential pass at "
                         f"{floor['bandwidth_gb_per_s']:,.0f} GB/s measured = {floor['ms_per_pass']} ms per pass")
    for name, m in report["methods"].items():
        lat, dec, f1 = m["latency_ms"], m["decoding"], m["f1"]
        best = (m["throughput"] or {}).get("best") or {}
        sp = (m["speedup_vs_reference"] or {}).get("median_latency_ratio")
        agree = m["agreement_with_reference"]
        plain = m.get("agreement_with_plain")
        lines.append(
            f"| {name} | {f1['docs']} | {_fmt(f1['span_f'], 4)} | {_fmt(f1['string_f'], 4)} | {lat['docs']} "
            f"| {_fmt(lat['median'])} | {_fmt(lat['p90'])} | {_fmt(lat['mean'])} "
            f"| {_fmt(dec['forward_passes_per_sentence'])} | {_fmt(dec['generated_tokens_per_sequence'])} "
            f"| {_fmt(dec['generated_tokens_per_sentence'])} | {_fmt(dec['prompt_tokens_per_sentence'], 1)} "
            f"| {_fmt(m.get('floor_ms'))} | {_fmt(m.get('mean_latency_over_floor'), 1)} "
            f"| {_fmt(sp, 2, '×')} | {_fmt(m.get('padellm_speedup'), 2, '×')} "
            f"| {_fmt(None if agree is None else 100 * agree, 1, '%')} "
            f"| {_fmt(None if plain is None else 100 * plain, 1, '%')} "
            f"| {_fmt(best.get('sentences_per_second'))}"
            f"{'' if not best else ' (' + str(best['batch_size']) + ')'} "
            f"| {_fmt(best.get('words_per_second'), 0)} | {_fmt(m['peak_gpu_memory_mb'], 0)} |"
        )
    for name, m in report["methods"].items():
        if not m["throughput"]:
            continue
        lines += ["", f"`nlp.pipe` throughput, {name}:", "",
                  "| batch size | sent/s | words/s | forward passes/sent | CUDA graphs captured | peak GPU MB |",
                  "|---|---|---|---|---|---|"]
        for bs, row in m["throughput"]["batch_sizes"].items():
            lines.append(f"| {bs} | {_fmt(row['sentences_per_second'])} | {_fmt(row['words_per_second'], 0)} "
                         f"| {_fmt(row['forward_passes_per_sentence'])} | {row.get('graph_captures', '–')} "
                         f"| {_fmt(row['peak_gpu_memory_mb'], 0)} |")
    return "\n".join(lines) + "\n"


def render_plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(report["methods"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    data = [report["methods"][n]["latency_ms"]["values"] or [float("nan")] for n in names]
    box = left.boxplot(data, showfliers=True, patch_artist=True)
    left.set_xticks(range(1, len(names) + 1), names)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for patch, colour in zip(box["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.5)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    left.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    left.set_ylabel("latency per sentence, ms (log scale)")
    left.set_title("Latency at batch size 1")
    left.grid(axis="y", which="both", alpha=0.3)

    x = list(range(len(names)))
    width = 0.38
    speed = [(report["methods"][n]["speedup_vs_reference"] or {}).get("median_latency_ratio") for n in names]
    bars = right.bar([i - width / 2 for i in x], [s or 0 for s in speed], width, color=colours[0],
                     label="speedup vs reference (median latency)")
    for rect, s in zip(bars, speed):
        if s is not None:
            right.annotate(f"{s:.1f}×", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                           ha="center", va="bottom", fontsize=9)
    right.set_ylabel("speedup (×)")
    right.set_xticks(x, names)
    twin = right.twinx()
    tput = [((report["methods"][n]["throughput"] or {}).get("best") or {}) for n in names]
    bars2 = twin.bar([i + width / 2 for i in x], [t.get("sentences_per_second") or 0 for t in tput], width,
                     color=colours[1], label="best nlp.pipe throughput")
    for rect, t in zip(bars2, tput):
        if t:
            twin.annotate(f"{t['sentences_per_second']:.0f}/s\n(bs {t['batch_size']})",
                          (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center", va="bottom",
                          fontsize=8)
    twin.set_ylabel("sentences / s")
    right.set_title("Speedup and throughput")
    handles = [bars, bars2]
    right.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.08),
                 ncol=2, fontsize=8, frameon=False)
    right.margins(y=0.15)
    twin.margins(y=0.2)
    env = report["environment"]
    fig.suptitle(f"PaDeLLM-NER benchmark: {env['device_name']}, {report['settings']['docs']} docs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- Command line --------------------------------------------------------------------------------


def _batch_sizes(text: str) -> List[int]:
    import argparse

    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"positive batch sizes expected, got {text!r}")
    return sizes


def _compare(items: Sequence[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SystemExit(f"--compare expects NAME=PIPELINE, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="latency, throughput and F1: the parallel engine against reference decoding")
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help=".spacy DocBin with gold entities")
    p.add_argument("--max-docs", type=int, default=None, help="use the first N docs (F1 and throughput)")
    p.add_argument("--latency-docs", type=int, default=200, help="docs timed one at a time (default 200)")
    p.add_argument("--reference-docs", type=int, default=50,
                   help="docs timed with the slow reference decoder (default 50)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 32, 128],
                   help="nlp.pipe batch sizes for throughput (default 1,8,32,128)")
    p.add_argument("--warmup", type=int, default=3,
                   help="docs run one at a time per method before timing, from the end of the data (default 3)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(METHODS)} (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=PIPELINE",
                   help="also benchmark another pipeline or model as method NAME (e.g. autoreg_struct=PATH); "
                        "repeatable")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: follow spaCy/thinc)")
    p.add_argument("--gpu-id", type=int, default=-1, help="like spacy evaluate: use this GPU")
    p.add_argument("--spans-key", default=None)
    p.add_argument("--lang", default=None)
    p.add_argument("--output", default=None, help="metrics JSON; a .md table and a .png plot go next to it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = benchmark(args.pipeline, args.data, max_docs=args.max_docs, latency_docs=args.latency_docs,
                       reference_docs=args.reference_docs, batch_sizes=args.batch_sizes, warmup=args.warmup,
                       methods=methods, device=args.device, gpu_id=args.gpu_id, spans_key=args.spans_key,
                       lang=args.lang, progress=not args.no_progress, command=_command(args),
                       compare=_compare(args.compare))
    table = render_markdown(report)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(table)
        render_plot(report, out.with_suffix(".png"))
        print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}", file=sys.stderr)
    return 0
