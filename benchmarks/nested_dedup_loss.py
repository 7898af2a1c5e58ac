"""What de-duplication and flat-mode overlap resolution cost on nested gold data (CPU, no model).

    python benchmarks/nested_dedup_loss.py [--data ../shared/data] [--splits test,dev]
        [--output metrics/genia_dedup_loss.json]

The spans of GENIA (``padellm/genia/genia_{split}.jsonl``, read with the project's converter into
``doc.spans["sc"]``) are fed, as if a model had predicted the gold exactly with equal probabilities, to
the two post-processing steps of ``padellm_ner`` (``spacy_padellm.text.overlaps``):

* ``one_label_per_span`` (nested and flat mode, ``deduplicate = true``): one label per character span. A span
  that is gold under several labels keeps one of them, so each extra label is a correct span lost.
  The paper's rule works on mention strings (one label per string in a sentence); its cost on the
  string-level metric is counted too.
* ``resolve_overlaps`` (flat mode only, no ``spans_key``): a non-overlapping subset, longest first on
  equal probabilities. Every span it drops is gold in the nested reference.

Both numbers are upper bounds of what these steps can cost a perfect model; a real model loses fewer
(it rarely predicts both labels) or more (it may keep the wrong one).

The step before them, the aligner (``spacy_padellm.text.align``: the k-th mention of a label goes to the
k-th free occurrence of its string, on token boundaries), is measured the same way: the gold mentions,
written as the model is trained to write them (per label, in reading order), are aligned back to the
text and compared with the gold spans. ``--align`` adds the Chinese test sets (character tokens,
``spacy.blank("zh")``) to that round trip.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spacy_padellm.text.align import align_mentions  # noqa: E402
from spacy_padellm.training.convert import doc_spans, read_docs  # noqa: E402
from spacy_padellm.text.overlaps import one_label_per_span, resolve_overlaps  # noqa: E402

KEY = "sc"


@dataclass(frozen=True)
class _Span:  # what dedup.py needs: start, end, label, prob
    start: int
    end: int
    label: str
    prob: float = 1.0


def _overlap(a: _Span, b: _Span) -> bool:
    return a.start < b.end and b.start < a.end


def align_round_trip(docs, spans_key=None) -> Dict[str, Any]:
    """Gold mentions (per label, k-th in reading order) aligned back to the text: how many land on their span."""
    n_gold = n_wrong = n_lost = 0
    examples: List[Dict[str, Any]] = []
    for doc in docs:
        gold = doc_spans(doc, spans_key)
        n_gold += len(gold)
        ks: Counter = Counter()
        preds = []
        for span in gold:
            ks[span.label_] += 1
            preds.append((span.label_, ks[span.label_], span.text, 1.0))
        offsets = [(t.idx, t.idx + len(t)) for t in doc if not t.is_space]
        aligned, _ = align_mentions(doc.text, preds, offsets)
        want = {(s.start_char, s.end_char, s.label_) for s in gold}
        got = {(s.start, s.end, s.label) for s in aligned}
        n_wrong += len(got - want)
        n_lost += len(want - got)
        if want != got and len(examples) < 3:
            examples.append({"text": doc.text, "missed": sorted(want - got), "placed": sorted(got - want)})
    return {"gold_spans": n_gold, "misplaced": n_wrong, "not_recovered": n_lost,
            "recovered_pct": round(100.0 * (n_gold - n_lost) / n_gold, 3) if n_gold else None,
            "_examples": examples}  # printed with --show-examples, never written (no corpus text in results)


def measure(path: Path) -> Dict[str, Any]:
    result = read_docs(path, "en", spans_key=KEY)
    docs = result.docs
    n_gold = n_nested_docs = n_in_overlap = 0
    n_multi_label_spans = n_dedup_removed = n_overlap_removed = 0
    n_string_pairs = n_string_removed = 0
    label_pairs: Counter = Counter()
    removed_by_overlap: Counter = Counter()
    for doc in docs:
        gold = [_Span(s.start_char, s.end_char, s.label_) for s in doc.spans[KEY]]
        n_gold += len(gold)
        overlapping = {i for i, a in enumerate(gold) for j, b in enumerate(gold)
                       if i != j and _overlap(a, b) and (a.start, a.end) != (b.start, b.end)}
        n_in_overlap += len(overlapping)
        n_nested_docs += bool(overlapping)
        by_span: Dict[tuple, List[str]] = {}
        for s in gold:
            by_span.setdefault((s.start, s.end), []).append(s.label)
        for labels in by_span.values():
            if len(labels) > 1:
                n_multi_label_spans += 1
                label_pairs[" + ".join(sorted(labels))] += 1
        kept, removed = one_label_per_span(gold)
        n_dedup_removed += removed
        flat, removed_flat = resolve_overlaps(kept)
        n_overlap_removed += removed_flat
        flat_set = {(s.start, s.end, s.label) for s in flat}
        for s in kept:
            if (s.start, s.end, s.label) not in flat_set:
                removed_by_overlap[s.label] += 1
        # The paper's rule, on strings: per sentence, one label per mention string.
        pairs = {(s.label, " ".join(doc.text[s.start:s.end].split())) for s in gold}
        strings = Counter(text for _, text in pairs)
        n_string_pairs += len(pairs)
        n_string_removed += sum(n - 1 for n in strings.values())

    def pct(x: int, n: int) -> float:
        return round(100.0 * x / n, 2) if n else 0.0

    alignment = align_round_trip(docs, KEY)
    n_after_dedup = n_gold - n_dedup_removed
    n_flat = n_after_dedup - n_overlap_removed
    return {
        "file": f"padellm/genia/{path.name}",
        "docs": len(docs),
        "gold_spans": n_gold,
        "docs_with_nesting": n_nested_docs,
        "spans_in_an_overlap": n_in_overlap,
        "spans_gold_under_several_labels": n_multi_label_spans,
        "label_sets_of_those_spans": dict(label_pairs.most_common()),
        "dedup_removed": n_dedup_removed,
        "dedup_removed_pct": pct(n_dedup_removed, n_gold),
        "nested_recall_bound_with_dedup": round(n_after_dedup / n_gold, 4) if n_gold else None,
        "flat_overlaps_removed": n_overlap_removed,
        "flat_overlaps_removed_pct": pct(n_overlap_removed, n_gold),
        "flat_overlaps_removed_per_label": dict(removed_by_overlap.most_common()),
        "flat_recall_bound_vs_nested_gold": round(n_flat / n_gold, 4) if n_gold else None,
        "string_pairs": n_string_pairs,
        "string_dedup_removed": n_string_removed,
        "string_dedup_removed_pct": pct(n_string_removed, n_string_pairs),
        "alignment_round_trip": alignment,
    }


def table(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| split | docs | gold spans | docs with nesting | spans in an overlap | removed by dedup | "
        "nested recall bound | removed by flat overlap resolution | flat recall bound (vs nested gold) | "
        "string pairs removed by the paper's string dedup |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['docs']} | {r['gold_spans']} | {r['docs_with_nesting']} | {r['spans_in_an_overlap']} "
            f"| {r['dedup_removed']} ({r['dedup_removed_pct']}%) | {r['nested_recall_bound_with_dedup']} "
            f"| {r['flat_overlaps_removed']} ({r['flat_overlaps_removed_pct']}%) | {r['flat_recall_bound_vs_nested_gold']} "
            f"| {r['string_dedup_removed']} of {r['string_pairs']} ({r['string_dedup_removed_pct']}%) |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding padellm/genia")
    parser.add_argument("--splits", default="test,dev")
    parser.add_argument("--align", default="weibo,resume,youku,ecommerce",
                        help="Chinese test sets for the alignment round trip (empty: none)")
    parser.add_argument("--show-examples", action="store_true", help="print a few sentences the aligner misplaces")
    parser.add_argument("--output", default=str(REPO / "docs" / "results" / "genia_dedup_loss.json"))
    args = parser.parse_args(argv)
    rows = []
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        row = measure(Path(args.data) / "padellm" / "genia" / f"genia_{split}.jsonl")
        rows.append({"split": split, **row})
    print(table(rows))
    for r in rows:
        print(f"{r['split']}: spans gold under several labels: {r['label_sets_of_those_spans']}")
        print(f"{r['split']}: flat mode drops per label: {r['flat_overlaps_removed_per_label']}")
    for r in rows:
        a = r["alignment_round_trip"]
        print(f"genia {r['split']}: aligner round trip recovers {a['recovered_pct']}% of {a['gold_spans']} gold spans "
              f"({a['not_recovered']} not recovered, {a['misplaced']} misplaced)")
    zh_rows = {}
    for name in [s.strip() for s in args.align.split(",") if s.strip()]:
        import spacy

        nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "char"}}})
        path = Path(args.data) / "padellm" / name / f"{name}_test.jsonl"
        a = align_round_trip(read_docs(path, nlp).docs)
        zh_rows[name] = a
        print(f"{name} test: aligner round trip on characters recovers {a['recovered_pct']}% of {a['gold_spans']} "
              f"gold spans ({a['not_recovered']} not recovered, {a['misplaced']} misplaced)")
    report = {
        "what": "GENIA gold spans fed as perfect predictions (equal probabilities) to spacy_padellm.text.overlaps: "
                "deduplicate (one label per character span) and resolve_overlaps (flat mode). Upper bounds of "
                "the correct spans these steps remove.",
        "command": "python benchmarks/nested_dedup_loss.py",
        "splits": rows,
        "alignment_round_trip_zh_test": zh_rows,
    }
    for a in [r["alignment_round_trip"] for r in rows] + list(zh_rows.values()):
        examples = a.pop("_examples")
        if args.show_examples:
            for ex in examples:
                print(json.dumps(ex, ensure_ascii=False))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
