"""The speed benchmark's report: per-method accuracy, latency, decoding counts, speedups and agreement,
with the environment and settings they were measured under."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

from measure import Run
from methods import BASELINE, PLAIN
from timing import latency_summary, per

__all__ = ["method_results", "environment", "agreement", "NOTES", "PIPE_WARMUP", "timestamp"]

NOTES = {
    "f1": "on all docs for throughput methods (first nlp.pipe run), else on their latency docs",
    "latency": "nlp(text), one doc at a time, methods interleaved doc by doc; milliseconds",
    "decoding": "per sentence over the latency docs; forward_passes at batch size 1 are sequential steps; "
                "generated tokens as each decoder's DecoderStats counts them (the engine counts tokens fed "
                "back to the model, so a final EOS is not counted; the reference counts every step)",
    "speedup": "reference median latency / method median latency, on the docs both timed",
}
PIPE_WARMUP = ("untimed nlp.pipe over all docs at each batch size, per throughput method, in rounds "
               "until a round captures no CUDA graph (at most 3)")


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _decoding_summary(d: Dict[str, int], docs: int) -> Dict[str, Any]:
    return {"docs": docs,
            "forward_passes_per_sentence": per(d["forward_passes"], docs),
            "sequences_per_sentence": per(d["sequences"], docs),
            "generated_tokens_per_sequence": per(d["generated_tokens"], d["sequences"]),
            "generated_tokens_per_sentence": per(d["generated_tokens"], docs),
            "prompt_tokens_per_sentence": per(d["prompt_tokens"], docs, 1),
            "draft_acceptance": per(d.get("accepted_draft_tokens", 0), d.get("draft_tokens", 0)),
            "graph_captures": d.get("graph_captures", 0),
            "totals": d}


def _scores(preds, gold, spans_key: Optional[str]) -> Dict[str, Any]:
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm, score_prefix, string_level_scores

    examples = [Example(p, g) for p, g in zip(preds, gold)]
    span = score_padellm(examples, spans_key=spans_key)
    prefix = score_prefix(spans_key)
    string = string_level_scores(examples, spans_key)
    out = {"docs": len(examples), "span_metric": f"{prefix}_f"}
    for k in ("p", "r", "f"):
        out[f"span_{k}"] = span.get(f"{prefix}_{k}")
        out[f"string_{k}"] = string.get(f"string_{k}")
    return out


def agreement(spans: Sequence[Any], reference: Sequence[Any]) -> float:
    """The share of docs whose spans (or entities: any comparable per-doc values) equal the reference's."""
    return round(sum(a == b for a, b in zip(spans, reference)) / max(1, len(reference)), 4)


def _spans(doc, spans_key: Optional[str]):
    spans = doc.spans.get(spans_key, []) if spans_key else doc.ents
    return sorted((s.start_char, s.end_char, s.label_) for s in spans)


def _method_result(run: Run, gold: Sequence[Any], key: Optional[str], floor: Optional[Dict[str, Any]]):
    preds = run.pipe_preds or run.latency_preds
    decoding = _decoding_summary(run.totals, len(run.latencies))
    lat = latency_summary(run.latencies)
    floor_ms = None
    if floor and decoding.get("forward_passes_per_sentence"):
        floor_ms = round(decoding["forward_passes_per_sentence"] * floor["ms_per_pass"], 3)
    return {
        "description": run.description,
        "f1": _scores(preds, gold[: len(preds)], key),
        "latency_ms": lat,
        "decoding": decoding,
        "throughput": run.throughput,
        "peak_gpu_memory_mb": run.peak_mb,
        "floor_ms": floor_ms,
        "mean_latency_over_floor": round(lat["mean"] / floor_ms, 1) if floor_ms and lat.get("mean") else None,
        "speedup_vs_reference": None,
        "agreement_with_reference": None,
        "agreement_with_plain": None,
        "padellm_speedup": None,
    }


def _add_agreement(results: Dict[str, Any], runs: Dict[str, Run], compared: Sequence[str],
                   key: Optional[str]) -> None:
    """Share of latency docs with the same spans as the reference and as plain decoding (same model only)."""
    for base, field in ((BASELINE, "agreement_with_reference"), (PLAIN, "agreement_with_plain")):
        if base not in results:
            continue
        for name, run in runs.items():
            if name in compared:
                continue  # another model: agreement is not expected
            theirs = runs[base].latency_preds
            n = min(len(theirs), len(run.latency_preds))
            if n:
                pairs = zip(run.latency_preds[:n], theirs[:n])
                results[name][field] = round(sum(_spans(a, key) == _spans(b, key) for a, b in pairs) / n, 4)


def _add_speedups(results: Dict[str, Any], runs: Dict[str, Run]) -> None:
    """Median latency ratios against the reference and against padellm, on the docs both timed."""
    if BASELINE in results:
        base_ms = runs[BASELINE].latencies
        for name, run in runs.items():
            n = min(len(base_ms), len(run.latencies))
            if not n:
                continue
            mine = run.latencies[:n]
            results[name]["speedup_vs_reference"] = {
                "docs": n,
                "median_latency_ratio": round(statistics.median(base_ms[:n]) / statistics.median(mine), 2),
                "per_doc_ratio_median": round(statistics.median(b / m for b, m in zip(base_ms[:n], mine)), 2),
            }
    if "padellm" in results:
        mine = runs["padellm"].latencies
        for name, run in runs.items():
            n = min(len(mine), len(run.latencies))
            if n:
                results[name]["padellm_speedup"] = round(
                    statistics.median(run.latencies[:n]) / statistics.median(mine[:n]), 2)


def method_results(runs: List[Run], gold: Sequence[Any], key: Optional[str], floor: Optional[Dict[str, Any]],
                   compared: Sequence[str]) -> Dict[str, Any]:
    """The report's ``methods`` block: one entry per run, in the order run."""
    by_name = {run.name: run for run in runs}
    results = {run.name: _method_result(run, gold, key, floor) for run in runs}
    _add_agreement(results, by_name, compared, key)
    _add_speedups(results, by_name)
    return results


def _device_name(device) -> str:
    import torch

    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    proc = platform.processor() or platform.machine() or "unknown"
    return f"cpu: {proc} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def environment(model, device) -> Dict[str, str]:
    import spacy
    import torch
    import transformers

    return {
        "device": str(device),
        "device_name": _device_name(device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "spacy": spacy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
