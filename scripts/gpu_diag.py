"""What the diagnosis scripts (gpu_anatomy.py, gpu_pipe_profile.py, gpu_variants.py) share: their common arguments,
the pipeline and test texts they load, the benchmark's nlp.pipe warm-up, variants of the decoder's settings, and
wall-clock timers wrapped around the functions of the data's path."""

import argparse
import json
import time
from collections import defaultdict

import spacy
import torch
from spacy.tokens import DocBin

import spacy_padellm  # noqa: F401  (registers padellm_ner)


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser with the arguments both scripts take: PIPELINE DATA.spacy OUT.json, --device, --max-docs, --config."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("pipeline")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    p.add_argument("--max-docs", type=int, default=0)
    p.add_argument("--config", default="{}", help="JSON: extra component config")
    return p


def load(args):
    """(nlp with padellm_ner, the component, the texts of the data's docs, whether on CUDA, a device sync)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": args.pipeline, "device": args.device, **json.loads(args.config)})
    ner = nlp.get_pipe("padellm_ner")
    texts = [d.text for d in DocBin().from_disk(args.data).get_docs(nlp.vocab)]
    texts = texts[: args.max_docs] if args.max_docs else texts
    cuda = args.device.startswith("cuda")
    return nlp, ner, texts, cuda, (torch.cuda.synchronize if cuda else (lambda: None))


def warm_pipes(nlp, texts) -> None:
    """nlp.pipe over all texts at 256 and 2048 docs per call, as the benchmark's warm-up (CUDA graphs captured)."""
    for bs in (256, 2048):
        list(nlp.pipe(texts, batch_size=bs))


class Variants:
    """Settings of a decoder to switch between: each variant is a dict of decoder attributes, and every attribute
    that any variant names goes back to its value at the start unless the variant in use sets it."""

    def __init__(self, dec, variants):
        self.dec = dec
        self.variants = list(variants)
        self.defaults = {key: getattr(dec, key) for v in self.variants for key in v}

    def settings(self, variant) -> dict:
        return {**self.defaults, **variant}

    def use(self, variant) -> None:
        for key, value in self.settings(variant).items():
            setattr(self.dec, key, value)


class Timers:
    """Wall time per key of wrapped functions, added up in ``acc`` while ``active``; only the outermost running
    call of a key counts (nested calls, or two wrapped functions under one key, are not counted twice)."""

    def __init__(self, active: bool = True):
        self.acc = defaultdict(float)
        self.active = active
        self._depth = defaultdict(int)

    def wrap(self, owner, name: str, key: str) -> None:
        """Time ``owner.name`` under ``key``; a name the code does not have (another version's) is left out."""
        fn = getattr(owner, name, None)
        if fn is None:
            return

        def wrapper(*a, **k):
            if not self.active or self._depth[key]:
                return fn(*a, **k)
            self._depth[key] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.acc[key] += time.perf_counter() - t0
                self._depth[key] -= 1

        setattr(owner, name, wrapper)
