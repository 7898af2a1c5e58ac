"""``python benchmarks/cpu_speed.py``: ``nlp.pipe`` on the CPU, the static engine's variants side by side.

One ``padellm_ner`` pipeline (the shipped model unless ``--model``), one set of weights; each variant is a decoder
built from it and swapped into the component for the time of its runs, so tokenisation, windows, alignment and
span writing are the same and only decoding differs. Variants (``VARIANTS``):

* ``bucketed``: the layout CUDA graphs need (shape buckets, rows x places padded to the widest row), run eagerly:
  how the CPU decoded before the segmented layout;
* ``fp32``: the CPU's layout (``decoding/segments.py``), float32 weights: the default;
* ``int8``: the same with ``quantize`` "int8" (smoothed by the activation ranges the model folder ships, if any);
* ``int8-unsmoothed``: ``quantize`` "int8" without the ranges (the int8 of before);
* ``int8-head``: ``quantize`` "int8-head": as ``int8``, and the output layer (LM head) in int8 too;
* ``bf16``: ``quantize`` "bf16": every matrix and the KV cache in bfloat16, the residual stream and norms in float32
  (fast where the CPU has AMX).
* ``head-text``, ``bf16-head-text``: ``head_vocab`` "text" (the LM head over the tokens a batch's outputs can be made
  of), in float32 and with ``quantize`` "bf16".

The first ``--docs`` sentences of the CoNLL03 test set (PaDeLLM JSONL) are cut into chunks of ``--chunk`` sentences;
each chunk is one ``nlp.pipe`` call per variant, the variants' order rotating from chunk to chunk, so that machine
noise hits them alike. Sentences/s is a variant's sentences over its summed seconds; span F1 is spaCy's (exact span
and label, micro) over all its sentences. ``--peer`` adds a spaCy pipeline (its ``ner``) timed the same way;
``--peer-untrained`` times spaCy's efficiency ``ner`` config with untrained weights instead (speed only: a
transition-based ``ner`` takes the same steps whatever its weights); ``--peer-encoder`` times the encoder anchor
(``encoder_anchor.py``: RoBERTa-base's token classifier, random weights, speed only) in float32 and, on a CPU with
bfloat16 matrix instructions, in bfloat16, tokenising with the pipeline's tokenizer. Writes JSON (``--output``) and a
PNG next to it. ``--also-model`` adds another model's variants (named ``MODEL/VARIANT``), timed in the same
rotation, for a side-by-side comparison of two models.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "padellm" / "conll03" / "conll03_test.jsonl"  # data_dir of project.yml
EFFICIENCY_CFG = ROOT / "benchmarks" / "spacy_peer" / "efficiency.cfg"

# every variant but the "head-text" ones with the whole LM head (as the CPU's default was before it took "text" for a
# large vocabulary)
WHOLE = {"head_vocab": "all"}
# name -> (description, DecodeSettings changes, StaticLM attributes)
VARIANTS: Dict[str, Tuple[str, Dict[str, Any], Dict[str, Any]]] = {
    "bucketed": ("fp32, the GPU's bucketed layout run eagerly (the CPU before)", WHOLE, {"segmented": False}),
    "fp32": ("fp32, segmented layout, the whole LM head", WHOLE, {}),
    "int8": ("int8 weights (`quantize` \"int8\"), segmented layout", {"quantize": "int8", **WHOLE}, {}),
    "int8-unsmoothed": ("int8 weights, no smoothing (the activation ranges ignored)", {"quantize": "int8", **WHOLE},
                        {}),
    "int8-head": ("int8 weights and LM head (`quantize` \"int8-head\")", {"quantize": "int8-head", **WHOLE}, {}),
    "bf16": ("bf16 matrices and KV cache (`quantize` \"bf16\")", {"quantize": "bf16", **WHOLE}, {}),
    "head-text": ("fp32, the LM head over the batch's own tokens (`head_vocab` \"text\"; the default for Gemma 3)",
                  {"head_vocab": "text"}, {}),
    "bf16-head-text": ("bf16, and `head_vocab` \"text\"", {"quantize": "bf16", "head_vocab": "text"}, {}),
}
UNSMOOTHED = ("int8-unsmoothed",)  # built without the model's activation ranges


# -- data and scores --


def load_conll03(path: Path, n: int) -> List[Tuple[str, List[Tuple[int, int, str]]]]:
    """(text, [(start_char, end_char, label)]) of the first ``n`` sentences of a PaDeLLM CoNLL03 JSONL file (token
    offsets, end inclusive; the text is its tokens joined by single spaces)."""
    out = []
    with path.open(encoding="utf8") as f:
        for line in f:
            rec = json.loads(line)
            tokens = rec[0].split(" ")
            starts = [0]
            for tok in tokens:
                starts.append(starts[-1] + len(tok) + 1)
            out.append((rec[0], [(starts[s], starts[e + 1] - 1, label) for s, e, _, label in rec[1:]]))
            if len(out) >= n:
                break
    return out


def span_f1(preds: Sequence[Any], gold: Sequence[Tuple[str, List[Tuple[int, int, str]]]]) -> Dict[str, float]:
    """Micro precision, recall and F1 of predicted ``doc.ents`` against gold character spans (exact span and label:
    spaCy's ``ents_f`` when every gold span falls on token boundaries, as in CoNLL03)."""
    tp = n_pred = n_gold = 0
    for doc, (_, spans) in zip(preds, gold):
        want = set(spans)
        got = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
        tp += len(want & got)
        n_pred += len(got)
        n_gold += len(want)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"p": round(p, 4), "r": round(r, 4), "f": round(2 * p * r / (p + r), 4) if p + r else 0.0}


# -- what is timed --


class Contender:
    """One thing timed: a name, a description, and a call that annotates texts (``nlp.pipe``), with its seconds,
    sentences and predictions so far; ``scored``: whether its predictions get an F1 (not for untrained peers)."""

    def __init__(self, name: str, description: str, annotate: Callable[[List[str]], List[Any]], scored: bool = True):
        self.name, self.description, self.annotate, self.scored = name, description, annotate, scored
        self.seconds, self.docs, self.preds = 0.0, 0, []

    def run(self, texts: List[str]) -> None:
        start = time.perf_counter()
        docs = self.annotate(texts)
        self.seconds += time.perf_counter() - start
        self.docs += len(docs)
        self.preds.extend(docs)


def padellm_contenders(model: str, names: Sequence[str], prefix: str = "") -> Tuple[List[Contender], Dict[str, Any], Any]:
    """A contender per variant, all on one pipeline and one set of weights (each named ``prefix`` + variant); what
    was loaded; and its tokenizer."""
    import spacy

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from instrument import using

    from spacy_padellm.decoding.factory import build_decoder

    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": model, "device": "cpu"})
    weights, tokenizer, engine = ner._ensure_loaded()
    out = []
    info = {"model": model, "engine": type(engine).__name__, "dtype": str(next(weights.parameters()).dtype),
            "settings": ner.decode_settings.to_config()}
    for name in names:
        description, changes, attributes = VARIANTS[name]
        ranges = getattr(weights, "padellm_int8_ranges", None)
        if name in UNSMOOTHED:
            weights.padellm_int8_ranges = None
        decoder = build_decoder(weights, engine.encoder, ner.decode_settings.replace(**changes), "padellm")
        weights.padellm_int8_ranges = ranges
        for key, value in attributes.items():
            setattr(decoder.lm, key, value)

        def annotate(texts, decoder=decoder):
            with using(ner, decoder):
                docs = list(nlp.pipe(texts))
            for lm in decoder._lms:  # its KV caches go (GBs in fp32 at 256 rows), so that variants fit in memory
                lm.cache.release()
            return docs

        out.append(Contender(prefix + name, f"{model}, {description}" if prefix else description, annotate))
    return out, info, tokenizer


def model_prefix(model: str) -> str:
    """The name an ``--also-model`` model's variants carry: its shipped name or folder name, and a slash."""
    return f"{model.split(':', 1)[-1].rstrip('/').rsplit('/', 1)[-1]}/"


def peer_contender(path: Optional[str], untrained: bool) -> Optional[Contender]:
    """spaCy's own ``ner``: a trained pipeline at ``path``, or the efficiency config untrained (speed only)."""
    import spacy

    if path:
        nlp = spacy.load(path)
        return Contender("spacy_ner", f"spaCy ner ({path})", lambda texts: list(nlp.pipe(texts)))
    if not untrained:
        return None
    config = spacy.util.load_config(EFFICIENCY_CFG)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    for label in ("PER", "LOC", "ORG", "MISC"):
        nlp.get_pipe("ner").add_label(label)
    nlp.initialize()
    return Contender("spacy_ner_untrained", "spaCy ner, efficiency config, untrained weights (speed only)",
                     lambda texts: list(nlp.pipe(texts)), scored=False)


def encoder_contenders(tokenizer, batch_size: int) -> List[Contender]:
    """The encoder anchor in float32, and in bfloat16 where the CPU has bfloat16 matrix instructions."""
    from encoder_anchor import EncoderAnchor

    from spacy_padellm.decoding.quantize import cpu_has_bf16

    out = []
    for dtype, short in (("float32", "fp32"), ("bfloat16", "bf16"))[: 2 if cpu_has_bf16() else 1]:
        anchor = EncoderAnchor(tokenizer, "cpu", dtype)
        out.append(Contender(f"roberta_base_{short}", f"{anchor.description}, {dtype}, batch {batch_size} "
                             "(speed only)", lambda texts, a=anchor: a.tag(texts, batch_size), scored=False))
    return out


def rotate(contenders: List[Contender], chunks: List[List[str]], progress: bool) -> None:
    """Each chunk through every contender, the order rotating by one per chunk."""
    n = len(contenders)
    for i, chunk in enumerate(chunks):
        for c in contenders[i % n:] + contenders[: i % n]:
            c.run(chunk)
            if progress:
                print(f"chunk {i + 1}/{len(chunks)} {c.name}: {c.docs / c.seconds:.2f} sentences/s so far",
                      file=sys.stderr, flush=True)


# -- the report --


def environment() -> Dict[str, Any]:
    import spacy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                 if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "spacy": spacy.__version__, "python": platform.python_version()}


def results(contenders: List[Contender], gold, baseline: str) -> Dict[str, Any]:
    base = next((c for c in contenders if c.name == baseline), None)
    base_rate = base.docs / base.seconds if base else None
    out = {}
    for c in contenders:
        rate = c.docs / c.seconds
        row = {"description": c.description, "sentences": c.docs, "seconds": round(c.seconds, 2),
               "sentences_per_s": round(rate, 3), "speedup": round(rate / base_rate, 2) if base_rate else None}
        if c.scored:
            row["span"] = span_f1(c.preds, gold)
        out[c.name] = row
    return out


def render_markdown(report: Dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"nlp.pipe on the CPU ({env['cpu']}, {env['torch_threads']} torch threads), first "
             f"{report['docs']} CoNLL03 test sentences, chunks of {report['chunk']}", "",
             f"| variant | sentences/s | × {report['baseline']} | span F1 | P | R |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in report["results"].items():
        span = r.get("span") or {}
        f1 = f"{span['f']:.4f}" if span else "–"
        p, rr = (f"{span['p']:.4f}", f"{span['r']:.4f}") if span else ("–", "–")
        speedup = f"{r['speedup']:.2f}×" if r["speedup"] is not None else "–"
        lines.append(f"| {name}: {r['description']} | {r['sentences_per_s']:.2f} | {speedup} | {f1} | {p} | {rr} |")
    return "\n".join(lines) + "\n"


def render_plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    rates = [report["results"][n]["sentences_per_s"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.4))
    bars = ax.barh(names, rates, color="#4c72b0")
    ax.set_xscale("log")
    for bar, name in zip(bars, names):
        span = report["results"][name].get("span")
        label = f" {bar.get_width():.1f}/s" + (f", F1 {span['f']:.4f}" if span else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("sentences/s (nlp.pipe, log scale)")
    ax.set_title(f"CPU, {report['environment']['torch_threads']} threads, {report['docs']} CoNLL03 test sentences",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line --


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/cpu_speed.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help=f"CoNLL03 test set, PaDeLLM JSONL (default {DATA})")
    p.add_argument("--docs", type=int, default=500, help="the first N sentences (default 500)")
    p.add_argument("--chunk", type=int, default=125, help="sentences per nlp.pipe call (default 125)")
    p.add_argument("--model", default="padellm:conll03-smollm2-135m")
    p.add_argument("--also-model", action="append", default=[], metavar="MODEL",
                   help="another model whose variants are timed in the same rotation (repeatable)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, the cores)")
    p.add_argument("--peer", default=None, help="a trained spaCy pipeline with ner to time alongside")
    p.add_argument("--peer-untrained", action="store_true",
                   help="time spaCy's efficiency ner config with untrained weights (speed only)")
    p.add_argument("--peer-encoder", action="store_true",
                   help="time the encoder anchor: RoBERTa-base's token classifier, random weights (speed only)")
    p.add_argument("--encoder-batch-size", type=int, default=16, help="the anchor's batch size (default 16)")
    p.add_argument("--output", type=Path, default=None, help="metrics JSON; a .png plot goes next to it")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args) -> Dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    gold = load_conll03(args.data, args.docs)
    texts = [text for text, _ in gold]
    contenders, info, tokenizer = padellm_contenders(args.model, names)
    also = {}
    for model in args.also_model:
        more, also[model], _ = padellm_contenders(model, names, model_prefix(model))
        contenders += more
    peer = peer_contender(args.peer, args.peer_untrained)
    contenders += [peer] if peer else []
    contenders += encoder_contenders(tokenizer, args.encoder_batch_size) if args.peer_encoder else []
    for c in contenders:  # warm-up, not timed
        c.annotate(texts[-8:])
    chunks = [texts[i: i + args.chunk] for i in range(0, len(texts), args.chunk)]
    rotate(contenders, chunks, not args.no_progress)
    baseline = "bucketed" if "bucketed" in names else names[0]
    return {"command": shlex.join(["python", "benchmarks/cpu_speed.py"] + sys.argv[1:]),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "docs": len(texts), "chunk": args.chunk,
            "baseline": baseline, "environment": environment(), "pipeline": info, "also": also,
            "results": results(contenders, gold, baseline)}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    table = render_markdown(report)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
        render_plot(report, args.output.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
