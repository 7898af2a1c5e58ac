"""One reader per input format of ``convert``; each returns :class:`~.raw.RawDoc` objects.

* :mod:`.conll`: CoNLL/IOB column files (BIO, IOB1, BIOES);
* :mod:`.padellm_jsonl`: the JSONL of the PaDeLLM-NER authors (token or character offsets);
* :mod:`.docbin`: spaCy DocBins;
* :mod:`.raw`: what they return and the helpers they share.

The package imports none of them itself (``spans`` and the DocBin reader import each other's
neighbours): ``training.convert`` is the import surface.
"""
