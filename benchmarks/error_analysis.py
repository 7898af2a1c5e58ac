"""Where the errors of ``padellm_ner`` come from, on the first N docs of a DocBin.

    python benchmarks/error_analysis.py corpus/conll03/conll03_test.spacy --model padellm:conll03-smollm2-135m \
        --max-docs 400 --output metrics/conll03.error-analysis.json [--set KEY=VALUE ...]

The pipeline is built with ``spacy_padellm.pipeline.load.load_pipeline`` (any decoding setting through
``--set``, any engine) and run with ``nlp.pipe``; the decoder's raw output is recorded on the way (a wrapper
around ``decoder.decode``), so every stage can be counted:

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
  count was too low, or the count sufficed and the mention was lost (dropped, duplicated or wrong);
* recall and precision of the (doc, label) slots by how many gold mentions the label has in the doc (0, 1, ...,
  "6+"): whether what is missed sits in docs dense with mentions.

Nested data (GENIA): the component runs in nested mode, and ``doc.spans[KEY]`` is compared with the gold's span
group (overlaps kept) instead of ``doc.ents``, when the model records a span key (the shipped GENIA model: ``sc``) or
``--spans-key KEY`` names one.

Prints a table, writes JSON (``--output``) and a bar chart of where the missed gold mentions go (PNG next
to the JSON).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["analyse", "classify_spans", "main"]

Span = Tuple[int, int, str]  # (start_char, end_char, label)
COUNT_BUCKETS = 7  # recall by the label's gold count in the doc: 0, 1, ..., 5, "6+"
STAGE_KEYS = ("not_found", "no_free_occurrence", "duplicates_removed", "overlaps_removed", "unparsable_counts",
              "capped_counts", "truncated_mentions")
# The false-negative categories, in the order of the table and the chart.
MISSED_KINDS = (("fn_missed_count_low", "missed: label's count too low"),
                ("fn_missed_count_ok", "missed: count right, mention lost"),
                ("fn_wrong_label", "wrong label (same span)"),
                ("fn_wrong_boundary", "wrong boundary (same label)"),
                ("fn_wrong_label_and_boundary", "wrong label and boundary"))


# -- span categories ------------------------------------------------------------------------------------------


def overlap(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def miss_kind(span: Span, others: Sequence[Span]) -> Optional[str]:
    """How a span that the other side lacks relates to the other side's spans (None: to none of them)."""
    if any((o[0], o[1]) == (span[0], span[1]) for o in others):
        return "wrong_label"
    over = [o for o in others if overlap(span, o)]
    if any(o[2] == span[2] for o in over):
        return "wrong_boundary"
    return "wrong_label_and_boundary" if over else None


def classify_spans(pred: Sequence[Span], gold: Sequence[Span]) -> Tuple[Dict[Span, str], Dict[Span, str]]:
    """A category for every false positive and false negative (see the module doc)."""
    pred_set, gold_set = set(pred), set(gold)
    fp = {p: miss_kind(p, gold) or "spurious" for p in pred if p not in gold_set}
    fn = {g: miss_kind(g, pred) or "missed" for g in gold if g not in pred_set}
    return fp, fn


# -- running the pipeline with the decoder's output recorded --------------------------------------------------


@contextlib.contextmanager
def recording(decoder) -> Iterator[List[Tuple[str, Any]]]:
    """Within the block, every ``decoder.decode`` call appends (request text, ``DocResult``) to the list
    yielded; the component calls the same decoder object, so the wrapper sees every window."""
    recorded: List[Tuple[str, Any]] = []
    had_own = "decode" in vars(decoder)
    plain_decode = decoder.decode

    def recording_decode(requests):
        results = plain_decode(requests)
        recorded.extend(zip([r.text for r in requests], results))
        return results

    decoder.decode = recording_decode
    try:
        yield recorded
    finally:
        if had_own:
            decoder.decode = plain_decode
        else:
            del decoder.decode  # back to the class's method


def run_pipeline(nlp, gold_docs: Sequence[Any]) -> Tuple[List[Any], List[List[Tuple[str, Any]]], float]:
    """The predicted docs, each doc's (window text, ``DocResult``) pairs, and the seconds ``nlp.pipe`` took."""
    ner = nlp.get_pipe("padellm_ner")
    texts = (nlp.make_doc(d.text) for d in gold_docs)
    with recording(ner.decoder) as recorded:
        start = time.perf_counter()
        preds = list(nlp.pipe(texts, batch_size=ner.settings.batch_size))
        seconds = time.perf_counter() - start
    views, pos = [], 0
    for doc in preds:
        n_windows = (doc._.padellm or {}).get("windows", 0)
        views.append(recorded[pos:pos + n_windows])
        pos += n_windows
    if pos != len(recorded):
        raise RuntimeError(f"{len(recorded)} decoded windows, but the docs account for {pos}")
    return preds, views, seconds


# -- counting ------------------------------------------------------------------------------------------------


class Tally:
    """Totals, per-label counters and a few examples of each kind of error."""

    def __init__(self, labels: Sequence[str], examples_per_kind: int):
        self.totals: Dict[str, int] = collections.Counter()
        self.per_label: Dict[str, Dict[str, int]] = {label: collections.Counter() for label in labels}
        self.examples: Dict[str, List[Dict[str, Any]]] = collections.defaultdict(list)
        self.examples_per_kind = examples_per_kind
        # (doc, label) slots by their gold count (COUNT_BUCKETS-1 and more in the last): slots, gold, pred, tp
        self.by_gold_count: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)

    def add(self, key: str, n: int = 1, label: Optional[str] = None) -> None:
        """Add ``n`` to the total of ``key`` (and to ``label``'s, if given); ``n == 0`` still records the key."""
        self.totals[key] += n
        if label is not None:
            self.per_label[label][key] += n

    def example(self, kind: str, doc, **info: Any) -> None:
        if len(self.examples[kind]) < self.examples_per_kind:
            self.examples[kind].append({"text": doc.text[:300], **info})


def count_slots(tally: Tally, doc, gold_count: Dict[str, int], pred_count: Dict[str, int]) -> None:
    """Each (doc, label) slot: the decoded count against the gold count."""
    for label in tally.per_label:
        g, p = gold_count.get(label, 0), pred_count.get(label, 0)
        tally.add("count_exact" if p == g else "count_low" if p < g else "count_high", label=label)
        if p < g:
            tally.add("mentions_lost_to_low_counts", g - p, label=label)
            if p == 0:
                tally.add("count_zero_but_gold", label=label)
                tally.example("count_zero_but_gold", doc, label=label, gold=g)
        elif p > g:
            tally.add("mentions_added_by_high_counts", p - g, label=label)
            if g == 0:
                tally.add("count_nonzero_but_no_gold")


def dropped_kind(tally: Tally, mention: str, text: str, index) -> str:
    """Why a raw mention that did not align was dropped (``index``: a ``TextIndex`` of ``text``); the
    not-found ones are also split by whether any of their words is in the text."""
    if not mention.strip():
        return "raw_empty"
    if index.occurrences(mention):
        return "raw_no_free_occurrence"
    words = text.split()
    some = any(w in words for w in mention.split())
    tally.add("raw_not_found_some_words_in_text" if some else "raw_not_found_no_word_in_text")
    return "raw_not_found"


def window_offsets(doc, texts: Sequence[str]) -> List[Optional[List[Tuple[int, int]]]]:
    """For each window text of ``doc`` (in order), the offsets of the doc's tokens inside it, relative to it:
    the token boundaries the component aligned with; None where the window is not a slice of the doc's text
    (the model saw another view of it, as with text_format "tokens")."""
    tokens = [(t.idx, t.idx + len(t)) for t in doc if not t.is_space]
    found, cursor = [], 0
    for text in texts:
        start = doc.text.find(text, cursor) if text else -1
        if start < 0:
            found.append(None)
            continue
        end, cursor = start + len(text), start + len(text)
        found.append([(a - start, b - start) for a, b in tokens if start <= a and b <= end])
    return found


def count_raw_mentions(tally: Tally, doc, text: str, result, gold: Sequence[Span],
                       offsets: Optional[Sequence[Tuple[int, int]]], mode: str) -> None:
    """One window's decoder output: written, aligned (on the window's token ``offsets`` by the component's
    alignment ``mode``), dropped (and why), truncated, repeated."""
    from spacy_padellm.text.align import TextIndex, align_mentions

    tally.add("raw_mentions", len(result.predictions) + result.truncated_mentions)
    tally.add("raw_truncated", result.truncated_mentions)
    tally.add("raw_redecoded", getattr(result, "redecoded_mentions", 0))
    tally.add("raw_redecoded_dropped", getattr(result, "redecoded_dropped", 0))
    by_label: Dict[str, List[str]] = collections.defaultdict(list)
    for p in result.predictions:
        by_label[p.label].append(p.text)
    for label, texts in by_label.items():
        tally.add("raw_repeated_within_label", len(texts) - len(set(texts)), label=label)
    aligned, _ = align_mentions(text, [(p.label, p.k, p.text, p.prob) for p in result.predictions], offsets,
                                mode if offsets is not None else "expand")
    kept = {(s.label, s.k) for s in aligned}
    index = TextIndex(text)
    for p in result.predictions:
        if (p.label, p.k) in kept:
            tally.add("raw_aligned")
            if p.text not in text:
                tally.add("raw_aligned_only_case_or_space_insensitive")
            continue
        kind = dropped_kind(tally, p.text, text, index)
        tally.add(kind, label=p.label)
        tally.example(kind, doc, label=p.label, k=p.k, mention=p.text,
                      gold=[doc.text[s:e] for s, e, label in gold if label == p.label])


def gold_count_bucket(n: int) -> str:
    """The row of the by-gold-count table a slot with ``n`` gold mentions falls in."""
    last = COUNT_BUCKETS - 1
    return str(n) if n < last else f"{last}+"


def count_by_gold_count(tally: Tally, pred: Sequence[Span], gold: Sequence[Span], hits) -> None:
    """Each (doc, label) slot of the model's labels under its gold count: its gold and predicted spans and the true
    positives, so recall can be read against how many mentions of the label the doc holds (gold spans of a label
    the model does not know are in the totals only)."""
    for label in tally.per_label:
        g = sum(1 for s in gold if s[2] == label)
        row = tally.by_gold_count[gold_count_bucket(g)]
        row["slots"] += 1
        row["gold"] += g
        row["pred"] += sum(1 for s in pred if s[2] == label)
        row["tp"] += sum(1 for s in hits if s[2] == label)


def count_final_spans(tally: Tally, doc, pred: Sequence[Span], gold: Sequence[Span],
                      pred_count: Dict[str, int], gold_count: Dict[str, int]) -> None:
    """The predicted spans against gold: true positives, and every false positive and negative by category."""
    hits = set(pred) & set(gold)
    count_by_gold_count(tally, pred, gold, hits)
    tally.add("gold", len(gold))
    tally.add("pred", len(pred))
    tally.add("tp", len(hits))
    for label in tally.per_label:
        tally.per_label[label]["gold"] += sum(1 for s in gold if s[2] == label)
        tally.per_label[label]["pred"] += sum(1 for s in pred if s[2] == label)
        tally.per_label[label]["tp"] += sum(1 for s in hits if s[2] == label)
    fp, fn = classify_spans(pred, gold)
    for span, kind in fp.items():
        tally.add("fp_" + kind, label=span[2])
        if kind == "spurious" and pred_count.get(span[2], 0) > gold_count.get(span[2], 0):
            tally.add("fp_spurious_with_count_high")
        tally.example("fp_" + kind, doc, pred=(doc.text[span[0]:span[1]], span[2]),
                      gold=[(doc.text[s:e], label) for s, e, label in gold if overlap((s, e, label), span)])
    for span, kind in fn.items():
        if kind == "missed":
            low = pred_count.get(span[2], 0) < gold_count.get(span[2], 0)
            kind = "missed_count_low" if low else "missed_count_ok"
        tally.add("fn_" + kind, label=span[2])
        tally.example("fn_" + kind, doc, gold=(doc.text[span[0]:span[1]], span[2]),
                      pred=[(doc.text[s:e], label) for s, e, label in pred if overlap((s, e, label), span)])


def doc_spans(doc, spans_key: Optional[str] = None) -> List[Span]:
    """``doc.ents`` (flat), or ``doc.spans[spans_key]`` (nested), as (start_char, end_char, label)."""
    from spacy_padellm.pipeline.scoring import gold_spans

    return [(s.start_char, s.end_char, s.label_) for s in gold_spans(doc, spans_key)]


def count_doc(tally: Tally, gold_doc, doc, views: Sequence[Tuple[str, Any]], mode: str = "strict",
              spans_key: Optional[str] = None) -> None:
    """Every stage of one doc: the component's counters, counts, raw mentions, final spans."""
    stats = doc._.padellm or {}
    for key in STAGE_KEYS:
        tally.add("stage_" + key, stats.get(key, 0))
    tally.add("multi_window_docs", int(len(views) > 1))
    gold = doc_spans(gold_doc, spans_key)
    pred = doc_spans(doc, spans_key)
    gold_count = collections.Counter(s[2] for s in gold)
    pred_count: Dict[str, int] = collections.Counter()
    for _, result in views:
        pred_count.update(result.counts)
    count_slots(tally, doc, gold_count, pred_count)
    offsets = window_offsets(doc, [text for text, _ in views])
    for (text, result), window_tokens in zip(views, offsets):
        count_raw_mentions(tally, doc, text, result, gold, window_tokens, mode)
    count_final_spans(tally, doc, pred, gold, pred_count, gold_count)


def analyse(nlp, gold_docs: Sequence[Any], examples_per_kind: int = 6) -> Dict[str, Any]:
    """Run ``nlp`` on the texts of ``gold_docs`` and count where its errors come from (one run's JSON)."""
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm, score_prefix

    ner = nlp.get_pipe("padellm_ner")
    preds, views, seconds = run_pipeline(nlp, gold_docs)
    tally = Tally(ner.labels, examples_per_kind)
    for gold_doc, doc, doc_views in zip(gold_docs, preds, views):
        count_doc(tally, gold_doc, doc, doc_views, ner.alignment_mode, ner.spans_key)
    scores = score_padellm([Example(p, g) for p, g in zip(preds, gold_docs)], spans_key=ner.spans_key)
    if ner.spans_key:  # nested mode: spaCy's span scores under the names the tables use
        prefix = score_prefix(ner.spans_key) + "_"
        scores = {"ents_" + key[len(prefix):]: value for key, value in scores.items() if key.startswith(prefix)}
    settings = ner.decode_settings
    return {
        "docs": len(gold_docs),
        "seconds": round(seconds, 1),
        "ents_p": scores["ents_p"], "ents_r": scores["ents_r"], "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"], "spans_key": ner.spans_key,
        "decoder": {"class": type(ner.decoder).__name__, "constrain_mentions": settings.constrain_mentions,
                    "count_bias": settings.count_bias, "dedupe_mentions": settings.dedupe_mentions},
        "settings": settings.to_config(),
        "totals": dict(sorted(tally.totals.items())),
        "per_label": {label: dict(sorted(v.items())) for label, v in tally.per_label.items()},
        "by_gold_count": {key: dict(tally.by_gold_count[key]) for key in sorted(tally.by_gold_count, key=_bucket_order)},
        "examples": dict(tally.examples),
    }


# -- reports --------------------------------------------------------------------------------------------------


ROWS = [
    ("gold spans", "gold"), ("predicted spans", "pred"), ("true positives", "tp"),
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
PER_LABEL_KEYS = ["gold", "tp", "fn_missed_count_low", "fn_missed_count_ok", "fn_wrong_boundary", "fn_wrong_label",
                  "fp_spurious", "fp_wrong_boundary", "fp_wrong_label", "count_low", "count_high", "raw_not_found",
                  "raw_no_free_occurrence"]


def table(name: str, run: Dict[str, Any]) -> str:
    """The totals as a markdown table."""
    lines = [f"| | {name} |", "| --- | --- |"]
    for key in ("ents_p", "ents_r", "ents_f"):
        lines.append(f"| span {key[5:].upper()} | {run[key]:.4f} |")
    for title, key in ROWS:
        lines.append(f"| {title} |" + (" |" if key is None else f" {run['totals'].get(key, 0)} |"))
    return "\n".join(lines)


def _bucket_order(key: str) -> int:
    return int(key.rstrip("+"))


def by_gold_count_table(run: Dict[str, Any]) -> str:
    """Recall and precision of the (doc, label) slots grouped by how many gold mentions the label has there."""
    lines = ["| gold mentions of the label in the doc | slots | gold | predicted | true positives | recall | precision |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, row in run.get("by_gold_count", {}).items():
        recall = f"{row['tp'] / row['gold']:.4f}" if row["gold"] else "-"
        precision = f"{row['tp'] / row['pred']:.4f}" if row["pred"] else "-"
        lines.append(f"| {key} | {row['slots']} | {row['gold']} | {row['pred']} | {row['tp']} | {recall} | {precision} |")
    return "\n".join(lines)


def per_label_table(run: Dict[str, Any]) -> str:
    lines = ["| label | F1 | " + " | ".join(PER_LABEL_KEYS) + " |", "| --- | --- |" + " --- |" * len(PER_LABEL_KEYS)]
    for label, v in run["per_label"].items():
        f = (run["ents_per_type"].get(label) or {}).get("f", 0.0)
        lines.append(f"| {label} | {f:.4f} | " + " | ".join(str(v.get(k, 0)) for k in PER_LABEL_KEYS) + " |")
    return "\n".join(lines)


def plot_missed(name: str, run: Dict[str, Any], path: Path) -> None:
    """Horizontal bars: the gold mentions not found, by category, stacked by label."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    rows = list(range(len(MISSED_KINDS)))[::-1]
    left = [0] * len(MISSED_KINDS)
    for label, counts in run["per_label"].items():
        widths = [counts.get(key, 0) for key, _ in MISSED_KINDS]
        ax.barh(rows, widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths)]
    for row, total in zip(rows, left):
        ax.text(total, row, f" {total}", va="center", fontsize=9)
    ax.set_yticks(rows, [title for _, title in MISSED_KINDS], fontsize=9)
    ax.set_xlabel("gold mentions")
    ax.set_xlim(0, max(left + [1]) * 1.12)  # room for the totals
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    gold, tp = run["totals"].get("gold", 0), run["totals"].get("tp", 0)
    ax.set_title(f"{name}: {gold - tp} of {gold} gold mentions not found (span F1 {run['ents_f']:.4f})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="DocBin with gold entities")
    p.add_argument("--model", default="padellm:conll03-smollm2-135m",
                   help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("--max-docs", type=int, default=None, help="the first N docs (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--spans-key", default=None,
                   help="nested mode: the spans go to doc.spans[KEY] and are scored against the gold's "
                        "(default: the key the model records, else flat)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoding setting (repeatable); `python -m spacy_padellm settings` lists them")
    p.add_argument("--name", default=None, help="name of the run in the JSON (default: from the data and --set)")
    p.add_argument("--examples", type=int, default=6, help="examples kept per kind of error")
    p.add_argument("--output", required=True, help="JSON file; the chart goes next to it (.png)")
    return p


def run_name(data: str, docs: int, settings: Dict[str, Any]) -> str:
    options = " ".join(f"{k}={json.dumps(v)}" for k, v in settings.items()) or "default"
    return f"{Path(data).stem}[:{docs}] {options}"


def main(argv: Optional[List[str]] = None) -> int:
    from spacy.tokens import DocBin

    from spacy_padellm.decoding.settings import SettingsError
    from spacy_padellm.pipeline.load import load_pipeline, parse_settings

    args = build_parser().parse_args(argv)
    try:
        settings = parse_settings(args.settings)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    nlp = load_pipeline(args.model, spans_key=args.spans_key, config={"device": args.device, **settings})
    gold = list(DocBin().from_disk(args.data).get_docs(nlp.vocab))[: args.max_docs]
    run = analyse(nlp, gold, examples_per_kind=args.examples)
    argv_used = sys.argv[1:] if argv is None else argv
    run.update({"data": args.data, "model": args.model,
                "command": "python benchmarks/error_analysis.py " + " ".join(shlex.quote(a) for a in argv_used)})
    name = args.name or run_name(args.data, len(gold), settings)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"description": __doc__.split("\n\n")[0], "runs": {name: run}}
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    plot_missed(name, run, out.with_suffix(".png"))
    print(table(name, run))
    print()
    print(per_label_table(run))
    print()
    print(by_gold_count_table(run))
    print(f"\n{len(gold)} docs in {run['seconds']} s; JSON: {out}, chart: {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
