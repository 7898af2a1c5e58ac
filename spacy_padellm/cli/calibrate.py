"""``python -m spacy_padellm calibrate MODEL TRAIN``: the activation ranges ``quantize`` "int8" smooths by,
written into a PaDeLLM model folder.

int8 on the CPU (``decoding/quantize.py``) is smoothed (SmoothQuant, ``decoding/smoothing.py``) by the largest
input magnitude per channel of every layer's attention and MLP input projections while the model decodes real
text. They are measured here, once, by decoding ``--sentences`` training texts spread over TRAIN (a ``.spacy``
DocBin or PaDeLLM JSONL; training text, never dev or test) in float32 on the CPU, and saved as
``int8_ranges.safetensors`` in the model folder, which loads them with the model (``assemble`` and
``nlp.to_disk`` copy them). A folder without them runs int8 unsmoothed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

__all__ = ["calibrate", "training_texts"]


def training_texts(path: str, n: int) -> List[str]:
    """``n`` distinct texts spread evenly over a ``.spacy`` DocBin or a JSONL file: ``{"text": ...}`` lines (the
    training examples ``convert`` writes, which repeat their sentence) or ``[text, [start, end, mention, label],
    ...]`` lines (the PaDeLLM-NER data that ``convert`` reads)."""
    path = Path(path)
    if path.suffix == ".spacy":
        import spacy
        from spacy.tokens import DocBin

        texts = [doc.text for doc in DocBin().from_disk(path).get_docs(spacy.blank("xx").vocab)]
    else:
        texts = _jsonl_texts(path)
    texts = [t for t in dict.fromkeys(texts) if t.strip()]  # training examples repeat their sentence
    if not texts:
        raise ValueError(f"{path} holds no text")
    stride = max(1, len(texts) // n)
    return texts[::stride][:n]


def _jsonl_texts(path: Path) -> List[str]:
    """The texts of a JSONL file: the PaDeLLM-NER data, read (and checked) as ``convert`` reads it, when its first
    line is an array, else ``{"text": ...}`` lines; a ValueError naming the first line that is neither."""
    from ..training.readers.padellm_jsonl import read_padellm_records

    with path.open(encoding="utf8") as f:
        first = next((line for line in f if line.strip()), "")
    if first.lstrip().startswith("["):  # read once, by convert's reader, not also here
        return [record.text for record in read_padellm_records(path, show_progress=False)]
    with path.open(encoding="utf8") as f:
        lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    texts = []
    for i, line in lines:
        rec = json.loads(line)
        if not (isinstance(rec, dict) and isinstance(rec.get("text"), str)):
            raise ValueError(f"{path}, line {i}: expected {{\"text\": ...}} or [text, [start, end, mention, label], "
                             f"...], got {line.strip()[:80]!r}")
        texts.append(rec["text"])
    return texts


def model_folder(model: str) -> Path:
    """The PaDeLLM model folder ``model`` names (a folder, or ``padellm:NAME`` for a shipped one)."""
    from ..loading import META_FILE, resolve_model

    folder = resolve_model(model).folder
    if folder is None:
        raise ValueError(f"{model} is not a PaDeLLM model folder (no {META_FILE}); give the folder train wrote")
    return folder


def calibrate(model: str, data: str, sentences: int = 200, output: Optional[str] = None,
              progress: bool = True) -> Path:
    """Measure ``model``'s activation ranges on ``sentences`` texts of ``data`` and write them; the file's path."""
    import spacy
    from tqdm.auto import tqdm

    from ..decoding.calibration import recording_decoder, save_ranges
    from ..loading import RANGES_FILE

    target = Path(output) if output else model_folder(model) / RANGES_FILE
    texts = training_texts(data, sentences)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": model, "device": "cpu", "dtype": "float32",
                                               "quantize": None, "engine": "static"})
    with recording_decoder(ner.decoder) as recs:
        for _ in tqdm(nlp.pipe(texts), total=len(texts), desc="calibrate", disable=not progress):
            pass
        ranges = [(a.max, b.max) for a, b in recs]
    target.parent.mkdir(parents=True, exist_ok=True)
    save_ranges(ranges, target)
    return target


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="measure the activation ranges int8 smooths by, into a model folder")
    p.add_argument("model", help="PaDeLLM model folder (from train) or padellm:NAME")
    p.add_argument("data", help="training text: a .spacy DocBin or PaDeLLM JSONL (never dev or test)")
    p.add_argument("--sentences", type=int, default=200, help="texts decoded, spread over the data (default 200)")
    p.add_argument("--output", default=None, help="default: int8_ranges.safetensors in the model folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    path = calibrate(args.model, args.data, args.sentences, args.output, not args.no_progress)
    print(f"activation ranges written to {path} ({time.perf_counter() - start:.0f} s)")
    return 0
