"""Decoding levers of padellm_ner on CoNLL03, measured with spaCy's span scores (get_ner_prf).

    python scripts/measure_decoding_levers.py --stage dev    # plain, constrained, count biases (tuned here)
    python scripts/measure_decoding_levers.py --stage test   # plain, constrained, best dev bias, both
    python scripts/measure_decoding_levers.py --table        # print the markdown table of what is stored

The pipeline is built the normal way (``evaluate.load_pipeline``: ``spacy.blank`` + ``padellm_ner``) and
the levers are set on the component's decoder object::

    decoder = nlp.get_pipe("padellm_ner").decoder
    decoder.constrain_mentions = True      # mentions can only be spans of the text (constraints.MentionTrie)
    decoder.count_bias = -1.0              # added to the log-prob of the count "0" (or {label: bias})
    decoder.dedupe_mentions = True         # repeats of a label's string decoded again, claimed strings excluded

The count bias is tuned on dev only: the best of ``--biases`` by dev span F1 (and, from the same runs,
the best per label by each label's dev F1, since a label's count and mentions do not depend on the
other labels' biases; run with ``--per-label``); test gets the values chosen on dev. Results go to ``--output`` (JSON; a run
already stored for the same split, docs and settings is not run again unless ``--force``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_dynamic_pipeline(model: str, device: str = "cpu", **config):
    """The pipeline built the normal way (``evaluate.load_pipeline``), on the dynamic-cache engine
    (``decoder.TwoStepDecoder``, where the decoding levers are implemented): ``engine: "dynamic"`` where
    the component has that setting."""
    from spacy_padellm.pipeline.component import DEFAULT_CONFIG
    from spacy_padellm.decoding.dynamic import TwoStepDecoder
    from spacy_padellm.cli.evaluate import load_pipeline

    config = {"device": device, **config}
    if "engine" in DEFAULT_CONFIG:
        config["engine"] = "dynamic"
    nlp = load_pipeline(model, config=config)
    decoder = nlp.get_pipe("padellm_ner").decoder
    if not isinstance(decoder, TwoStepDecoder):
        raise SystemExit(f"the component's decoder is a {type(decoder).__name__}, not decoder.TwoStepDecoder")
    return nlp

DATA = {"dev": "corpus/conll03/conll03_dev.spacy", "test": "corpus/conll03/conll03_test.spacy"}
LABELS = ["PER", "LOC", "ORG", "MISC"]


def run_config(nlp, gold_docs, constrain: bool, bias, dedupe: bool, batch_size: int) -> Dict[str, Any]:
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm, string_level_scores

    ner = nlp.get_pipe("padellm_ner")
    decoder = ner.decoder
    decoder.constrain_mentions = constrain
    decoder.count_bias = bias
    decoder.dedupe_mentions = dedupe
    before = dict(ner.stats)
    results = []
    plain_decode = decoder.decode

    def recording_decode(requests):
        out = plain_decode(requests)
        results.extend(out)
        return out

    decoder.decode = recording_decode
    start = time.perf_counter()
    preds = list(nlp.pipe((nlp.make_doc(d.text) for d in gold_docs), batch_size=batch_size))
    seconds = time.perf_counter() - start
    del decoder.decode
    decoder.constrain_mentions, decoder.count_bias, decoder.dedupe_mentions = False, 0.0, False
    examples = [Example(p, g) for p, g in zip(preds, gold_docs)]
    scores = score_padellm(examples)
    strings = string_level_scores(examples)
    return {
        "ents_p": scores["ents_p"], "ents_r": scores["ents_r"], "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"],
        "string_f": strings["string_f"],
        "gold": sum(len(d.ents) for d in gold_docs), "pred": sum(len(d.ents) for d in preds),
        "component_stats": {k: ner.stats[k] - before.get(k, 0) for k in ner.stats},
        "decoder_counts": {k: sum(getattr(r, k, 0) for r in results) for k in
                           ("unparsable_counts", "truncated_mentions", "redecoded_mentions", "redecoded_dropped")},
        "zero_counts": sum(n == 0 for r in results for n in r.counts.values()),
        "mentions_decoded": sum(len(r.predictions) for r in results),
        "seconds": round(seconds, 1), "docs_per_second": round(len(gold_docs) / seconds, 2),
        "settings": {"decoder": type(decoder).__name__, "constrain_mentions": constrain, "count_bias": bias,
                     "dedupe_mentions": dedupe},
    }


def bias_name(bias) -> str:
    if isinstance(bias, dict):
        return "bias{" + ",".join(f"{k}:{v:g}" for k, v in bias.items()) + "}"
    return f"bias{bias:g}"


def config_name(constrain: bool, bias, dedupe: bool = False) -> str:
    parts = ["constrained"] if constrain else []
    if bias:
        parts.append(bias_name(bias))
    if dedupe:
        parts.append("dedupe")
    return "+".join(parts) or "plain"


def best_biases(runs: Dict[str, Any], biases: List[float]):
    """The best global bias by dev span F1 (0 = plain when nothing beats it), and the best per label."""
    cands = {0.0: runs.get("plain")}
    cands.update({b: runs.get(config_name(False, b)) for b in biases})
    cands = {b: r for b, r in cands.items() if r is not None}
    best = max(cands, key=lambda b: (cands[b]["ents_f"], -abs(b)))
    per_label = {}
    for label in LABELS:
        per_label[label] = max(cands, key=lambda b: (cands[b]["ents_per_type"].get(label, {}).get("f", 0.0), -abs(b)))
    return best, per_label


def load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def save(path: Path, data: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def table(data: Dict[str, Any]) -> str:
    runs = data["runs"]
    splits = [s for s in ("dev", "test") if s in runs] + [s for s in runs if s not in ("dev", "test")]
    names: List[str] = []
    for s in splits:
        for n in runs[s]["configs"]:
            if n not in names:
                names.append(n)
    head = "| decoding |" + "".join(f" {s.split(':')[0]}[:{runs[s]['docs']}] P | R | **F1** | ΔF1 |" for s in splits)
    lines = [head, "| --- |" + " --- | --- | --- | --- |" * len(splits)]
    for n in names:
        row = f"| {n} |"
        for s in splits:
            r = runs[s]["configs"].get(n)
            base = runs[s]["configs"].get("plain")
            if r is None:
                row += " – | – | – | – |"
                continue
            delta = (r["ents_f"] - base["ents_f"]) * 100 if base else 0.0
            row += f" {r['ents_p']:.4f} | {r['ents_r']:.4f} | **{r['ents_f']:.4f}** | {delta:+.2f} |"
        lines.append(row)
    extra = []
    if "dev" in runs and runs["dev"].get("chosen"):
        extra.append(f"chosen on dev: {json.dumps(runs['dev']['chosen'])}")
    return "\n".join(lines + ([""] + extra if extra else []))


def main(argv=None) -> int:
    from spacy.tokens import DocBin

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=["dev", "test"], default=None)
    p.add_argument("--table", action="store_true", help="only print the table of stored results")
    p.add_argument("--model", default="padellm:conll03-smollm2-135m")
    p.add_argument("--max-docs", type=int, default=400, help="the first N docs (0: all); other than 400, the runs "
                   "are stored under 'SPLIT:N'")
    p.add_argument("--only", default="", help="run only these configs of the stage (names as in the table)")
    p.add_argument("--biases", default="-0.5,-1,-2", help="count biases tried on dev")
    p.add_argument("--extra", default="", help="more configs, comma-separated: 'constrained:words' (trie without the punctuation split), "
                   "'dedupe_min_prob:0.01' (constrained+dedupe with that floor; default 0.005)")
    p.add_argument("--per-label", action="store_true", help="also the per-label biases chosen on dev")
    p.add_argument("--no-dedupe", action="store_true", help="leave out the dedupe_mentions configs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true")
    p.add_argument("--output", default="docs/results/decoding_levers.json")
    args = p.parse_args(argv)
    out = Path(args.output)
    data = load(out)
    if args.table or not args.stage:
        print(table(data))
        return 0
    biases = [float(b) for b in args.biases.split(",") if b.strip()]
    split = args.stage
    dedupe = [] if args.no_dedupe else [True]
    if split == "dev":
        configs = [(False, 0.0, False), (True, 0.0, False)] + [(False, b, False) for b in biases] + \
            [(True, 0.0, d) for d in dedupe]
    else:
        chosen = data["runs"].get("dev", {}).get("chosen")
        if not chosen:
            raise SystemExit("run --stage dev first: the bias is chosen on dev")
        configs = [(False, 0.0, False), (True, 0.0, False)] + [(True, 0.0, d) for d in dedupe]
        if chosen["bias"]:
            configs += [(False, chosen["bias"], False), (True, chosen["bias"], False)]
            configs += [(True, chosen["bias"], d) for d in dedupe]
        if args.per_label and chosen.get("per_label") and len(set(chosen["per_label"].values())) > 1:
            configs += [(False, chosen["per_label"], False), (True, chosen["per_label"], False)]

    nlp = load_dynamic_pipeline(args.model, args.device, batch_size=args.batch_size)
    gold = list(DocBin().from_disk(DATA[split]).get_docs(nlp.vocab))[: args.max_docs or None]
    key = split if args.max_docs == 400 else f"{split}:{len(gold)}"
    entry = data["runs"].setdefault(key, {"data": DATA[split], "docs": len(gold), "model": args.model,
                                            "configs": {}})
    if entry["docs"] != len(gold) or entry["model"] != args.model:
        raise SystemExit(f"{out} holds {split} runs on {entry['docs']} docs of {entry['model']}; use --output")

    only = [n for n in args.only.split(",") if n.strip()]

    def do(constrain: bool, bias, dedupe: bool = False, name: Optional[str] = None) -> None:
        name = name or config_name(constrain, bias, dedupe)
        if only and name not in only:
            return
        if name in entry["configs"] and not args.force:
            print(f"{split} {name}: stored, F1 {entry['configs'][name]['ents_f']:.4f}")
            return
        r = run_config(nlp, gold, constrain, bias, dedupe, args.batch_size)
        r["command"] = "python scripts/measure_decoding_levers.py " + " ".join(sys.argv[1:] if argv is None else argv)
        entry["configs"][name] = r
        save(out, data)
        print(f"{split} {name}: P {r['ents_p']:.4f} R {r['ents_r']:.4f} F1 {r['ents_f']:.4f} "
              f"({r['seconds']} s, {r['docs_per_second']} docs/s)", flush=True)

    for constrain, bias, dd in configs:
        do(constrain, bias, dd)
    for spec in [s for s in args.extra.split(",") if s.strip()]:
        if spec == "constrained:words":  # the trie over whitespace words only (no punctuation split)
            decoder = nlp.get_pipe("padellm_ner").decoder
            decoder.mention_trie_options = {"split_punct": False}
            try:
                do(True, 0.0, False, "constrained(words only)")
            finally:
                decoder.mention_trie_options = {}
        elif spec.startswith("dedupe_min_prob:"):  # constrained+dedupe with another probability floor
            decoder = nlp.get_pipe("padellm_ner").decoder
            default, decoder.dedupe_min_prob = decoder.dedupe_min_prob, float(spec.split(":", 1)[1])
            try:
                do(True, 0.0, True, f"constrained+dedupe(min_prob {decoder.dedupe_min_prob:g})")
            finally:
                decoder.dedupe_min_prob = default
        else:
            raise SystemExit(f"unknown --extra config {spec!r}")
    if split == "dev":
        best, per_label = best_biases(entry["configs"], biases)
        entry["chosen"] = {"bias": best, "per_label": per_label}
        save(out, data)
        if best:
            do(True, best)
            for d in dedupe:
                do(True, best, d)
        if args.per_label and len(set(per_label.values())) > 1:
            do(False, per_label)
            do(True, per_label)
    print()
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
