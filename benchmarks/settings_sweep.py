"""``python benchmarks/settings_sweep.py MODEL DATA.spacy --variant NAME:KEY=VALUE,...``: accuracy and speed
of one model under several sets of decoding settings.

MODEL is a spaCy pipeline folder with a ``padellm_ner`` component, a PaDeLLM model folder or
``padellm:NAME`` (see ``spacy_padellm.pipeline.load.load_pipeline``); DATA is a DocBin with gold entities
(or spans). Each ``--variant`` is a name and the decoding settings it changes (keys of
``spacy_padellm.decoding.settings.DecodeSettings``; ``python -m spacy_padellm settings`` lists them),
VALUEs read as JSON where they can be, as ``--set`` reads them::

    --variant plain:
    --variant constrained:constrain_mentions=true
    --variant all:constrain_mentions=true,count_bias=-1,dedupe_mentions=true
    --variant per-label:count_bias={"PER":-2,"ORG":-2}

The model is loaded once; each variant gets a decoder of its own settings on the same weights (as the
component's ``set_model`` builds one), so the variants differ only in decoding. Per variant: span P/R/F1
and per-type F1 (``score_padellm``), string F1 (``string_level_scores``), sentences/s of ``nlp.pipe``
over the docs (batches of the variant's ``batch_size``), forward passes per sentence (the decoder's
``stats``, where it keeps them) and the component's counters. Prints a markdown table; with ``--output``
writes the JSON, the table (.md) and a plot of span F1 against sentences/s (.png) next to it.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's spacy_padellm, not an installed one

from measure import forward_passes, load_gold, open_pipeline, select_device  # noqa: E402
from report import write_outputs  # noqa: E402
from results import environment, timestamp  # noqa: E402

__all__ = ["parse_variant", "variant_arg", "variant_arg_except", "sweep", "render_table", "render_plot", "main", "build_parser"]

Variant = Tuple[str, Dict[str, Any]]
# A comma ends a KEY=VALUE item only where the next item starts (a JSON value may hold commas).
_ITEM_BREAK = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)")


# -- variants ---------------------------------------------------------------------------------------------


def parse_variant(text: str) -> Variant:
    """``NAME:KEY=VALUE,KEY=VALUE`` as (name, settings); keys and values are checked here, before any model
    is loaded (``spacy_padellm.pipeline.load.parse_settings``)."""
    from spacy_padellm.pipeline.load import parse_settings

    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"a variant is NAME:KEY=VALUE,KEY=VALUE (NAME: for no changes), got {text!r}")
    items = [item for item in _ITEM_BREAK.split(rest.strip()) if item.strip()]
    try:
        return name, parse_settings(items)
    except ValueError as err:
        raise ValueError(f"variant '{name}': {err}") from None


def variant_arg(text: str) -> Variant:
    """``parse_variant`` as an argparse type: a bad variant is a usage error."""
    try:
        return parse_variant(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def variant_arg_except(*fixed: str):
    """``variant_arg`` for a script whose own variants are named ``fixed``: a ``--variant`` of one of those names is a
    usage error too."""
    def parse(text: str) -> Variant:
        name, changes = variant_arg(text)
        if name in fixed:
            raise argparse.ArgumentTypeError(f"--variant {name!r}: that name is one of the fixed variants "
                                             f"({', '.join(fixed)})")
        return name, changes

    return parse


def check_variants(variants: Sequence[Variant]) -> None:
    names = [name for name, _ in variants]
    if not names:
        raise ValueError("no variants: give at least one --variant NAME:KEY=VALUE,...")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variant names must differ: {', '.join(repeated)} given more than once")


def use_settings(ner, base, changes: Dict[str, Any]) -> None:
    """Decode with ``base`` changed by ``changes`` from now on: the component's settings (windowing,
    de-duplication and batch size are the component's) and a decoder built for them on the loaded weights."""
    model, tokenizer, _ = ner._ensure_loaded()
    ner.settings = base.replace(**changes)
    ner.cfg.update(ner.settings.to_config())
    ner.spec.configured_decoding = ner.settings.decoding
    ner.spec.check_decoding()
    ner.set_model(model, tokenizer, ner.source)


# -- one variant --------------------------------------------------------------------------------------------


def decode_all(nlp, ner, texts: Sequence[str], warmup: int) -> Dict[str, Any]:
    """Annotate ``texts`` once with ``nlp.pipe`` (after ``warmup`` of them, untimed and uncounted): the
    docs, the seconds, and what the decoder and the component counted."""
    batch_size = ner.settings.batch_size
    if warmup:
        list(nlp.pipe(texts[:warmup], batch_size=batch_size))
    decoder = ner.decoder
    passes_before = forward_passes(decoder)
    counters_before = dict(ner.stats)
    start = time.perf_counter()
    preds = list(nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - start
    passes = forward_passes(decoder)
    return {
        "preds": preds, "seconds": seconds, "decoder": type(decoder).__name__,
        "forward_passes": None if passes is None else passes - passes_before,
        "component_stats": {k: v - counters_before.get(k, 0) for k, v in ner.stats.items()},
    }


def score(preds: Sequence[Any], gold: Sequence[Any], spans_key: Optional[str]) -> Dict[str, Any]:
    """Span P/R/F1, per-type scores and string-level P/R/F1 of ``preds`` against ``gold``."""
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm, score_prefix, string_level_scores

    examples = [Example(p, g) for p, g in zip(preds, gold)]
    span = score_padellm(examples, spans_key=spans_key)
    prefix = score_prefix(spans_key)
    strings = string_level_scores(examples, spans_key)
    out = {f"span_{k}": span.get(f"{prefix}_{k}") for k in ("p", "r", "f")}
    out["per_type"] = span.get(f"{prefix}_per_type") or {}
    out.update({f"string_{k}": strings.get(f"string_{k}") for k in ("p", "r", "f")})
    return out


def _spans(doc, spans_key: Optional[str]):
    return doc.spans.get(spans_key, []) if spans_key else doc.ents


def run_variant(nlp, ner, base, changes: Dict[str, Any], gold: Sequence[Any], warmup: int) -> Dict[str, Any]:
    """One variant's row: its settings, scores, speed and counters."""
    use_settings(ner, base, changes)
    texts = [d.text for d in gold]
    run = decode_all(nlp, ner, texts, warmup)
    key = ner.spans_key
    passes = run["forward_passes"]
    return {
        "changes": changes, "decoder": run["decoder"], "levers": ner.levers,
        **score(run["preds"], gold, key),
        "gold": sum(len(_spans(d, key)) for d in gold), "pred": sum(len(_spans(d, key)) for d in run["preds"]),
        "seconds": round(run["seconds"], 2), "sentences_per_second": round(len(gold) / run["seconds"], 2),
        "passes_per_sentence": None if passes is None else round(passes / len(gold), 2),
        "component_stats": run["component_stats"],
    }


# -- the sweep ------------------------------------------------------------------------------------------------


def sweep(model: str, data: str, variants: Sequence[Variant], *, max_docs: Optional[int] = None,
          device: Optional[str] = None, gpu_id: int = -1, warmup: int = 0, lang: Optional[str] = None,
          spans_key: Optional[str] = None, progress: bool = True, command: Optional[str] = None) -> Dict[str, Any]:
    """Every variant on the first ``max_docs`` docs of ``data`` (all: None), the model loaded once."""
    check_variants(variants)
    if not Path(data).exists():
        raise FileNotFoundError(f"no such DocBin: {data}")
    nlp, ner, _ = open_pipeline(model, lang, spans_key, select_device(device, gpu_id))
    base = ner.settings
    gold = load_gold(data, nlp.vocab, max_docs)
    rows: Dict[str, Any] = {}
    for name, changes in variants:
        if progress:
            print(f"[{name}] {len(gold)} docs ...", file=sys.stderr, flush=True)
        rows[name] = run_variant(nlp, ner, base, changes, gold, warmup)
        if progress:
            r = rows[name]
            print(f"[{name}] span F1 {r['span_f']:.4f}, {r['sentences_per_second']} sentences/s",
                  file=sys.stderr, flush=True)
    weights = ner._runtime[0]
    return {
        "command": command, "timestamp": timestamp(), "model": model, "data": data, "docs": len(gold),
        "max_docs": max_docs, "warmup_docs": warmup,
        "environment": environment(weights, next(weights.parameters()).device),
        "base_settings": base.to_config(), "variants": rows,
    }


# -- reports ------------------------------------------------------------------------------------------------


def _num(value: Optional[float], digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _changes_cell(changes: Dict[str, Any]) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in changes.items()) or "(defaults)"


def render_table(report: Dict[str, Any]) -> str:
    """One row per variant: its changes, span P/R/F1, string F1, sentences/s and passes per sentence."""
    labels = sorted({t for r in report["variants"].values() for t in r["per_type"]})
    head = ["variant", "settings", "P", "R", "span F1", "string F1", *[f"{t} F1" for t in labels],
            "sentences/s", "passes/sentence", "decoder"]
    lines = [f"{report['model']} on {report['data']}, {report['docs']} docs "
             f"({report['environment']['device_name']}, {report['environment']['dtype']})", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in report["variants"].items():
        cells = [name, _changes_cell(r["changes"]), _num(r["span_p"]), _num(r["span_r"]), _num(r["span_f"]),
                 _num(r["string_f"]), *[_num(r["per_type"].get(t, {}).get("f")) for t in labels],
                 _num(r["sentences_per_second"], 2), _num(r["passes_per_sentence"], 2), r["decoder"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_plot(report: Dict[str, Any], path: Path) -> None:
    """Span F1 against sentences/s, one labelled point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in report["variants"].items():
        x, y = r["sentences_per_second"], r["span_f"]
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xlabel("sentences/s (nlp.pipe)")
    ax.set_ylabel("span F1")
    ax.set_title(f"{report['model']}: {report['docs']} docs, {report['environment']['device_name']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.2, y=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/settings_sweep.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help=".spacy DocBin with gold entities")
    p.add_argument("--variant", dest="variants", action="append", type=variant_arg, default=[],
                   metavar="NAME:KEY=VALUE,...", help="a set of decoding settings to measure; repeatable, in order")
    p.add_argument("--max-docs", type=int, default=None, help="use the first N docs (default: all)")
    p.add_argument("--warmup", type=int, default=0,
                   help="docs annotated untimed before each variant's timed run (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: follow spaCy/thinc)")
    p.add_argument("--gpu-id", type=int, default=-1, help="like spacy evaluate: use this GPU")
    p.add_argument("--spans-key", default=None)
    p.add_argument("--lang", default=None)
    p.add_argument("--output", default=None, help="metrics JSON; a .md table and a .png plot go next to it")
    p.add_argument("--no-progress", action="store_true")
    return p


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces this run, as recorded in the report."""
    return shlex.join(["python", "benchmarks/settings_sweep.py", *argv])


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        report = sweep(args.model, args.data, args.variants, max_docs=args.max_docs, device=args.device,
                       gpu_id=args.gpu_id, warmup=args.warmup, lang=args.lang, spans_key=args.spans_key,
                       progress=not args.no_progress, command=command_line(argv))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)  # what to fix, not a traceback
        return 1
    table = render_table(report)
    print(table)
    if args.output:
        write_outputs(report, table, args.output, render_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
