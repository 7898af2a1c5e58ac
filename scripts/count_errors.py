"""Where recall goes: the decoder's counts against gold counts per (sentence, label) on the first 300 dev docs
(python scripts/count_errors.py; needs corpus/conll03 from `convert`)."""
import spacy, collections, json
from spacy.tokens import DocBin
from spacy_padellm.decoding.types import DocRequest
nlp = spacy.blank("en")
ner = nlp.add_pipe("padellm_ner", config={"device": "cpu"})
dec = ner.decoder
docs = list(DocBin().from_disk("corpus/conll03/conll03_dev.spacy").get_docs(nlp.vocab))[:300]
labels = list(ner.labels)
res = dec.decode([DocRequest(d.text, labels) for d in docs])
c = collections.Counter()
rep = 0
total_m = 0
for d, r in zip(docs, res):
    gold = collections.Counter(e.label_ for e in d.ents)
    for l in labels:
        p, g = r.counts.get(l, 0), gold.get(l, 0)
        c["under" if p < g else "over" if p > g else "exact"] += 1
        if p < g:
            c["missing_mentions_from_under"] += g - p
    by = collections.defaultdict(list)
    for m in r.predictions: by[m.label].append(m.text)
    for l, ms in by.items():
        total_m += len(ms)
        rep += len(ms) - len(set(ms))  # the same string twice under one label
print(json.dumps({"label_slots": sum(v for k, v in c.items() if k in ("under", "over", "exact")), **c,
                  "gold_mentions": sum(len(d.ents) for d in docs), "predicted_mentions": total_m,
                  "repeated_within_label": rep}))
