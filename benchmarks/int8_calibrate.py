"""``python benchmarks/int8_calibrate.py``: the activation ranges ``quantize`` "int8" smooths by, for a model folder.

Decodes ``--sentences`` CoNLL03 training sentences (every ``--stride``-th, spread over the set) with the folder's
model in float32, records the largest input magnitude per channel of every layer's ``wqkv`` and ``wgu``
(``decoding/calibration.py``) and writes them to ``int8_ranges.safetensors`` in the folder (``--output`` elsewhere).
Training text only: never dev or test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_speed import ROOT, load_conll03  # noqa: E402
from instrument import using  # noqa: E402

TRAIN = ROOT.parent / "shared" / "data" / "padellm" / "conll03" / "conll03_train.jsonl"


def calibrate(nlp, ner, decoder, texts):
    """Per layer (wqkv, wgu) input ranges while ``decoder`` (fp32, swapped into ``ner``) decodes ``texts``."""
    from spacy_padellm.decoding.calibration import recording

    with recording(decoder.lm) as recs:
        for lm in decoder._lms:
            lm.layers = decoder.lm.layers
        with using(ner, decoder):
            list(nlp.pipe(texts))
    for lm in decoder._lms:
        lm.layers = decoder.lm.layers
        lm.release()
    return [(a.max, b.max) for a, b in recs]


def main() -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/int8_calibrate.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="padellm:conll03-smollm2-135m")
    p.add_argument("--data", type=Path, default=TRAIN, help=f"training sentences, PaDeLLM JSONL (default {TRAIN})")
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--stride", type=int, default=70)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", type=Path, default=None, help="default: int8_ranges.safetensors in the model folder")
    args = p.parse_args()
    import spacy
    import torch

    from spacy_padellm.decoding.calibration import save_ranges
    from spacy_padellm.decoding.factory import build_decoder
    from spacy_padellm.loading import RANGES_FILE, SHIPPED_DIR, SHIPPED_PREFIX

    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = args.model.startswith(SHIPPED_PREFIX)
    folder = SHIPPED_DIR / args.model[len(SHIPPED_PREFIX):] if shipped else Path(args.model)
    output = args.output or folder / RANGES_FILE
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": args.model, "device": "cpu"})
    weights, _, engine = ner._ensure_loaded()
    decoder = build_decoder(weights, engine.encoder, ner.settings, "padellm")
    texts = [t for t, _ in load_conll03(args.data, args.sentences * args.stride)[:: args.stride]]
    start = time.perf_counter()
    save_ranges(calibrate(nlp, ner, decoder, texts), output)
    print(f"{output}: ranges from {len(texts)} sentences in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
