"""An annotation run in this process: ``nlp.pipe`` on one GPU (the first, unless told) or the CPU."""

from __future__ import annotations

import time
from typing import List, Sequence

from spacy.tokens import Doc

from ..devices import prefer_gpu_device, resolve_device
from .pipe import annotate_docs, load_annotation_pipeline
from .progress import Progress
from .shards import Shard, ShardDone, read_shard

__all__ = ["local_device", "run_local"]


def local_device(device=None, gpu_id=None) -> str:
    """``device`` if given, else GPU ``gpu_id`` if it is 0 or more (spaCy's own ops on it too, like
    spaCy's ``--gpu-id``), else the first GPU if there is one, else the CPU."""
    if gpu_id is not None and gpu_id >= 0:
        import spacy

        spacy.prefer_gpu(gpu_id)  # spaCy's own ops, if cupy is installed
        return str(resolve_device(device, gpu_id=gpu_id))
    return prefer_gpu_device(device)


def run_local(args, shards: Sequence[Shard], on_shard: ShardDone, progress: Progress) -> None:
    """Annotate ``shards`` one after the other, ``args.batch_size`` docs per ``nlp.pipe`` batch, and hand
    each to ``on_shard`` when it is done. ``args``: the ``annotate`` command's options (pipeline, device,
    gpu_id, text_field, batch_size, on_error). Bad records are skipped (``on_error`` "skip": the shard's
    rejects were listed when the inputs were counted) or raise :class:`.shards.InputError`."""
    nlp = load_annotation_pipeline(args.pipeline, local_device(args.device, args.gpu_id), getattr(args, "settings", None))
    for shard in shards:
        start = time.perf_counter()
        skipped = [] if args.on_error == "skip" else None
        records = list(read_shard(shard.path, shard.fmt, args.text_field, vocab=nlp.vocab, rejects=skipped))
        docs: List[Doc] = []
        step = max(args.batch_size, 1)
        for i in range(0, len(records), step):
            docs.extend(annotate_docs(nlp, [item for _, item in records[i:i + step]], args.batch_size))
            progress.update(min(step, len(records) - i))
        on_shard(shard, docs, [line for line, _ in records], time.perf_counter() - start)
