"""Where the errors of padellm_ner come from, on the first N docs of a DocBin (supersedes count_errors.py).

    python scripts/error_analysis.py corpus/conll03/conll03_test.spacy --max-docs 400 \
        --output docs/results/error_analysis.json [--constrain-mentions] [--count-bias -1]

The pipeline is built the normal way (``evaluate.load_pipeline``) and run with ``nlp.pipe``; the decoder's
raw output is recorded on the way (a wrapper around ``decoder.decode``), so every stage can be counted:

* counts: per (doc, label) slot, the decoded count against the gold count (exact / too low / too high,
  and the mentions lost or added that way; "zero" when the count was 0 and gold was not);
* raw mentions: aligned, not found in the text (dropped; hallucinated or altered strings), no free
  occurrence (a repeat of an earlier mention of its label, dropped), truncated, and repeats of a string
  within one label;
* after alignment: spans removed as duplicates across labels (one label per span) and as overlaps;
* final spans against gold (exact character span and label, spaCy's scoring): false positives split into
  wrong label (same span), wrong boundary (overlaps a gold span of the same label), wrong label and
  boundary (overlaps only gold spans of other labels), spurious (overlaps nothing), and false negatives
  split the same way, with "missed" (no overlapping prediction at all) split by its cause: the label's
  count was too low, or the count sufficed and the mention was lost (dropped, duplicated or wrong).

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_decoding_levers import load_dynamic_pipeline  # noqa: E402  (one copy, beside this script)

Span = Tuple[int, int, str]


def _overlap(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _miss_kind(span: Span, others: List[Span]) -> Optional[str]:
    """How a span that the other side lacks relates to the other side's spans (None: to none of them)."""
    if any((o[0], o[1]) == (span[0], span[1]) for o in others):
        return "wrong_label"
    over = [o for o in others if _overlap(span, o)]
    if any(o[2] == span[2] for o in over):
        return "wrong_boundary"
    return "wrong_label_and_boundary" if over else None


def classify_spans(pred: List[Span], gold: List[Span]) -> Tuple[Dict[Span, str], Dict[Span, str]]:
    """A category for every false positive and false negative (see the module doc)."""
    pred_set, gold_set = set(pred), set(gold)
    fp = {p: _miss_kind(p, gold) or "spurious" for p in pred if p not in gold_set}
    fn = {g: _miss_kind(g, pred) or "missed" for g in gold if g not in pred_set}
    return fp, fn


def analyse(nlp, gold_docs, batch_size: int = 32, examples_per_kind: int = 6) -> Dict[str, Any]:
    from spacy.training import Example

    from spacy_padellm.text.align import _Index, align_mentions
    from spacy_padellm.pipeline.scoring import score_padellm

    ner = nlp.get_pipe("padellm_ner")
    decoder = ner.decoder
    recorded: List[Tuple[str, Any]] = []
    plain_decode = decoder.decode

    def recording_decode(requests):
        results = plain_decode(requests)
        recorded.extend(zip([r.text for r in requests], results))
        return results

    decoder.decode = recording_decode
    start = time.perf_counter()
    try:
        preds = list(nlp.pipe((nlp.make_doc(d.text) for d in gold_docs), batch_size=batch_size))
    finally:
        del decoder.decode  # back to the class method
    seconds = time.perf_counter() - start
    labels = list(ner.labels)

    c: Dict[str, int] = collections.Counter()
    per_label: Dict[str, Dict[str, int]] = {label: collections.Counter() for label in labels}
    examples: Dict[str, List[Dict[str, Any]]] = collections.defaultdict(list)

    def example(kind: str, doc, **info) -> None:
        if len(examples[kind]) < examples_per_kind:
            examples[kind].append({"text": doc.text[:300], **info})

    pos = 0
    for gold_doc, doc in zip(gold_docs, preds):
        n_windows = (doc._.padellm or {}).get("windows", 0)
        views = recorded[pos:pos + n_windows]
        pos += n_windows
        stats = doc._.padellm or {}
        for key in ("not_found", "no_free_occurrence", "duplicates_removed", "overlaps_removed",
                    "unparsable_counts", "capped_counts", "truncated_mentions"):
            c["stage_" + key] += stats.get(key, 0)
        c["multi_window_docs"] += n_windows > 1
        gold = [(e.start_char, e.end_char, e.label_) for e in gold_doc.ents]
        pred = [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        gold_count = collections.Counter(s[2] for s in gold)
        pred_count: Dict[str, int] = collections.Counter()
        for _, res in views:
            for label, n in res.counts.items():
                pred_count[label] += n
        # counts
        for label in labels:
            g, p = gold_count.get(label, 0), pred_count.get(label, 0)
            kind = "count_exact" if p == g else "count_low" if p < g else "count_high"
            c[kind] += 1
            per_label[label][kind] += 1
            if p < g:
                c["mentions_lost_to_low_counts"] += g - p
                per_label[label]["mentions_lost_to_low_counts"] += g - p
                if p == 0:
                    c["count_zero_but_gold"] += 1
                    per_label[label]["count_zero_but_gold"] += 1
                    example("count_zero_but_gold", doc, label=label, gold=g)
            elif p > g:
                c["mentions_added_by_high_counts"] += p - g
                per_label[label]["mentions_added_by_high_counts"] += p - g
                if g == 0:
                    c["count_nonzero_but_no_gold"] += 1
        # raw mentions (single-window docs: the model saw doc.text; text_format raw)
        for text, res in views:
            c["raw_mentions"] += len(res.predictions) + res.truncated_mentions
            c["raw_truncated"] += res.truncated_mentions
            c["raw_redecoded"] += getattr(res, "redecoded_mentions", 0)
            c["raw_redecoded_dropped"] += getattr(res, "redecoded_dropped", 0)
            by_label: Dict[str, List[str]] = collections.defaultdict(list)
            for p in res.predictions:
                by_label[p.label].append(p.text)
            for label, texts in by_label.items():
                c["raw_repeated_within_label"] += len(texts) - len(set(texts))
                per_label[label]["raw_repeated_within_label"] += len(texts) - len(set(texts))
            offsets = [(t.idx, t.idx + len(t)) for t in doc if not t.is_space] if text == doc.text else None
            aligned, _ = align_mentions(text, [(p.label, p.k, p.text, p.prob) for p in res.predictions], offsets)
            kept = {(s.label, s.k) for s in aligned}
            index = _Index(text)
            for p in res.predictions:
                if (p.label, p.k) in kept:
                    c["raw_aligned"] += 1
                    if p.text not in text:
                        c["raw_aligned_only_case_or_space_insensitive"] += 1
                    continue
                if not p.text.strip():
                    kind = "raw_empty"
                elif not index.occurrences(p.text):
                    kind = "raw_not_found"
                    words = p.text.split()
                    sub = "raw_not_found_some_words_in_text" if any(w in text.split() for w in words) else \
                        "raw_not_found_no_word_in_text"
                    c[sub] += 1
                else:
                    kind = "raw_no_free_occurrence"
                c[kind] += 1
                per_label[p.label][kind] += 1
                example(kind, doc, label=p.label, k=p.k, mention=p.text,
                        gold=[doc.text[s:e] for s, e, l in gold if l == p.label])
        # final spans against gold
        fp, fn = classify_spans(pred, gold)
        c["gold"] += len(gold)
        c["pred"] += len(pred)
        c["tp"] += len(set(pred) & set(gold))
        for label in labels:
            per_label[label]["gold"] += sum(1 for s in gold if s[2] == label)
            per_label[label]["pred"] += sum(1 for s in pred if s[2] == label)
            per_label[label]["tp"] += sum(1 for s in set(pred) & set(gold) if s[2] == label)
        for span, kind in fp.items():
            c["fp_" + kind] += 1
            per_label[span[2]]["fp_" + kind] += 1
            if kind == "spurious" and pred_count.get(span[2], 0) > gold_count.get(span[2], 0):
                c["fp_spurious_with_count_high"] += 1
            example("fp_" + kind, doc, pred=(doc.text[span[0]:span[1]], span[2]),
                    gold=[(doc.text[s:e], l) for s, e, l in gold if _overlap((s, e, l), span)])
        for span, kind in fn.items():
            if kind == "missed":
                kind = "missed_count_low" if pred_count.get(span[2], 0) < gold_count.get(span[2], 0) \
                    else "missed_count_ok"
            c["fn_" + kind] += 1
            per_label[span[2]]["fn_" + kind] += 1
            example("fn_" + kind, doc, gold=(doc.text[span[0]:span[1]], span[2]),
                    pred=[(doc.text[s:e], l) for s, e, l in pred if _overlap((s, e, l), span)])
    assert pos == len(recorded), "decoder calls and windows do not line up"
    scores = score_padellm([Example(p, g) for p, g in zip(preds, gold_docs)])
    totals = dict(sorted(c.items()))
    return {
        "docs": len(gold_docs),
        "seconds": round(seconds, 1),
        "ents_p": scores["ents_p"], "ents_r": scores["ents_r"], "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"],
        "decoder": {"class": type(decoder).__name__,
                    "constrain_mentions": getattr(decoder, "constrain_mentions", False),
                    "count_bias": getattr(decoder, "count_bias", 0.0),
                    "dedupe_mentions": getattr(decoder, "dedupe_mentions", False)},
        "totals": totals,
        "per_label": {label: dict(sorted(v.items())) for label, v in per_label.items()},
        "examples": dict(examples),
    }


ROWS = [
    ("gold spans", "gold"), ("predicted spans (doc.ents)", "pred"), ("true positives", "tp"),
    ("**false negatives (recall)**", None),
    ("missed, label's count too low", "fn_missed_count_low"),
    ("missed, count ok (mention lost: dropped/duplicate/elsewhere)", "fn_missed_count_ok"),
    ("wrong boundary (overlapping span, same label)", "fn_wrong_boundary"),
    ("wrong label (same span)", "fn_wrong_label"),
    ("wrong label and boundary", "fn_wrong_label_and_boundary"),
    ("**false positives (precision)**", None),
    ("spurious (overlaps no gold span)", "fp_spurious"),
    ("  of which the label's count was too high", "fp_spurious_with_count_high"),
    ("wrong boundary", "fp_wrong_boundary"),
    ("wrong label", "fp_wrong_label"),
    ("wrong label and boundary", "fp_wrong_label_and_boundary"),
    ("**counts per (doc, label) slot**", None),
    ("exact", "count_exact"), ("too low", "count_low"), ("  of which 0 while gold > 0", "count_zero_but_gold"),
    ("  mentions lost", "mentions_lost_to_low_counts"), ("too high", "count_high"),
    ("  mentions added", "mentions_added_by_high_counts"),
    ("**raw mentions (decoder output)**", None),
    ("written (after dedupe_mentions: as finally kept)", "raw_mentions"), ("aligned", "raw_aligned"),
    ("  only case/space-insensitively", "raw_aligned_only_case_or_space_insensitive"),
    ("dropped: not in the text", "raw_not_found"),
    ("  some of its words in the text", "raw_not_found_some_words_in_text"),
    ("  none of its words in the text", "raw_not_found_no_word_in_text"),
    ("dropped: repeat, no free occurrence", "raw_no_free_occurrence"),
    ("same string twice within a label", "raw_repeated_within_label"),
    ("truncated (no EOS)", "raw_truncated"), ("empty", "raw_empty"),
    ("decoded again (dedupe_mentions)", "raw_redecoded"),
    ("  dropped: probability below dedupe_min_prob", "raw_redecoded_dropped"),
    ("**after alignment**", None),
    ("same span under 2 labels, removed", "stage_duplicates_removed"),
    ("overlapping spans removed", "stage_overlaps_removed"),
    ("unparsable counts", "stage_unparsable_counts"), ("capped counts", "stage_capped_counts"),
]


def table(runs: Dict[str, Dict[str, Any]]) -> str:
    names = list(runs)
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for name in ("ents_p", "ents_r", "ents_f"):
        lines.append(f"| span {name[5:].upper()} | " + " | ".join(f"{runs[n][name]:.4f}" for n in names) + " |")
    for title, key in ROWS:
        if key is None:
            lines.append(f"| {title} |" + " |" * len(names))
        else:
            lines.append(f"| {title} | " + " | ".join(str(runs[n]["totals"].get(key, 0)) for n in names) + " |")
    return "\n".join(lines)


def per_label_table(run: Dict[str, Any]) -> str:
    keys = ["gold", "tp", "fn_missed_count_low", "fn_missed_count_ok", "fn_wrong_boundary", "fn_wrong_label",
            "fp_spurious", "fp_wrong_boundary", "fp_wrong_label", "count_low", "count_high", "raw_not_found",
            "raw_no_free_occurrence"]
    lines = ["| label | F1 | " + " | ".join(keys) + " |", "| --- | --- |" + " --- |" * len(keys)]
    for label, v in run["per_label"].items():
        f = run["ents_per_type"].get(label, {}).get("f", 0.0)
        lines.append(f"| {label} | {f:.4f} | " + " | ".join(str(v.get(k, 0)) for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import spacy
    from spacy.tokens import DocBin

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", default="corpus/conll03/conll03_test.spacy")
    p.add_argument("--model", default="padellm:conll03-smollm2-135m")
    p.add_argument("--max-docs", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--constrain-mentions", action="store_true", help="set decoder.constrain_mentions = True")
    p.add_argument("--count-bias", type=float, default=0.0, help="set decoder.count_bias (bias on the count '0')")
    p.add_argument("--dedupe-mentions", action="store_true", help="set decoder.dedupe_mentions = True")
    p.add_argument("--name", default=None, help="name of this run in the JSON (default from the options)")
    p.add_argument("--output", default="docs/results/error_analysis.json",
                   help="JSON file; runs are added under their name")
    args = p.parse_args(argv)

    nlp = load_dynamic_pipeline(args.model, args.device)
    decoder = nlp.get_pipe("padellm_ner").decoder
    decoder.constrain_mentions = args.constrain_mentions
    decoder.count_bias = args.count_bias
    decoder.dedupe_mentions = args.dedupe_mentions
    name = args.name or "+".join(
        (["constrained"] if args.constrain_mentions else []) + ([f"bias{args.count_bias:g}"] if args.count_bias else [])
        + (["dedupe"] if args.dedupe_mentions else [])) or "plain"
    gold = list(DocBin().from_disk(args.data).get_docs(nlp.vocab))[: args.max_docs]
    run = analyse(nlp, gold, batch_size=args.batch_size)
    run.update({"data": args.data, "model": args.model, "command": "python scripts/error_analysis.py " +
                " ".join(sys.argv[1:] if argv is None else argv)})
    out = Path(args.output)
    existing: Dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    runs = existing.get("runs", {})
    runs[f"{Path(args.data).stem}[:{len(gold)}] {name}"] = run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"description": __doc__.split("\n\n")[0], "runs": runs}, indent=1, ensure_ascii=False))
    print(table({f"{Path(args.data).stem}[:{len(gold)}] {name}": run}))
    print()
    print(per_label_table(run))
    print(f"\n{len(gold)} docs in {run['seconds']} s; JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
