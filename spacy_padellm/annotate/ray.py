"""An annotation run on Ray Data: a reader task per shard, ``map_batches`` through one pipeline actor
per GPU (or per CPU worker), and the driver gathering each shard's docs and writing it as soon as all of
them are back. Only the inputs and the pipeline need to be visible to the workers."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from ..devices import prefer_gpu_device
from .pipe import annotate_docs, load_annotation_pipeline
from .progress import Progress
from .shards import Item, Shard, ShardDone, read_shard

__all__ = ["RayMissing", "import_ray", "PipelineWorker", "run_ray"]


class RayMissing(ValueError):
    """``--ray`` was given but Ray Data cannot be imported."""


def import_ray():
    """The ``ray`` module with Ray Data, or :class:`RayMissing` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RayMissing(
            f'--ray needs Ray Data, which is not installed ({err}): pip install "ray[data]" '
            "(or run without --ray to annotate in this process)"
        ) from None
    return ray


def _doc_table(rows):
    """Rows (shard, index, line, text, Doc bytes) as an Arrow table."""
    import pyarrow as pa

    return pa.table({
        "shard": pa.array([r[0] for r in rows], pa.int64()),
        "index": pa.array([r[1] for r in rows], pa.int64()),
        "line": pa.array([r[2] for r in rows], pa.int64()),
        "text": pa.array([r[3] for r in rows], pa.string()),
        "doc": pa.array([r[4] for r in rows], pa.binary()),
    })


def _read_shard_batches(batch, *, text_field: str, on_error: str = "fail",
                        rows_per_block: int = 1024) -> Iterator[Any]:
    """Ray Data reader (a task): one row (shard, path, fmt) in, that shard's docs out as Arrow tables with
    columns shard, index, line, text and doc (Doc bytes for DocBin inputs, else empty). Bad records are
    skipped (``on_error`` "skip": the driver listed them when it counted the inputs) or raise."""
    for shard_id, path, fmt in zip(*(batch.column(c).to_pylist() for c in ("shard", "path", "fmt"))):
        rows = []
        skipped = [] if on_error == "skip" else None
        for index, (line, item) in enumerate(read_shard(path, fmt, text_field, rejects=skipped)):
            rows.append((shard_id, index, line, item if isinstance(item, str) else "",
                         b"" if isinstance(item, str) else item.to_bytes()))
            if len(rows) >= rows_per_block:
                yield _doc_table(rows)
                rows = []
        if rows:
            yield _doc_table(rows)


class PipelineWorker:
    """Ray Data actor: loads the pipeline once (on the GPU Ray gives it, if any) and annotates batches."""

    def __init__(self, pipeline: str, device: Optional[str] = None, batch_size: int = 64,
                 cpu_threads: Optional[int] = None, settings: Optional[Dict[str, Any]] = None):
        if cpu_threads:
            import torch

            torch.set_num_threads(cpu_threads)
        self.nlp = load_annotation_pipeline(pipeline, prefer_gpu_device(device), settings)
        self.batch_size = batch_size

    def __call__(self, batch):
        import pyarrow as pa

        cols = {c: batch.column(c).to_pylist() for c in ("shard", "index", "line", "text", "doc")}
        items: List[Item] = [Doc(self.nlp.vocab).from_bytes(data) if data else text
                             for text, data in zip(cols["text"], cols["doc"])]
        docs = annotate_docs(self.nlp, items, self.batch_size)
        return pa.table({
            "shard": pa.array(cols["shard"], pa.int64()),
            "index": pa.array(cols["index"], pa.int64()),
            "line": pa.array(cols["line"], pa.int64()),
            "doc": pa.array([doc.to_bytes() for doc in docs], pa.binary()),
        })


def _ray_workers(ray, args) -> Tuple[int, float, float]:
    """(number of actors, GPUs per actor, CPUs per actor) from the options and the cluster's resources."""
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    gpus_per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    cpus_per_worker = args.cpus_per_worker
    if args.num_workers:
        n = args.num_workers
    elif gpus_per_worker > 0:
        n = int(gpus // gpus_per_worker)
    else:
        n = int((cpus - 1) // cpus_per_worker)  # leave one CPU for reading
    if n < 1:
        raise ValueError(f"the Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs) has room for no worker with "
                         f"{gpus_per_worker:g} GPUs and {cpus_per_worker:g} CPUs; set --num-workers, "
                         "--gpus-per-worker or --cpus-per-worker")
    return n, gpus_per_worker, cpus_per_worker


def _abs_if_local(model: str) -> str:
    path = Path(model)
    return str(path.resolve()) if path.exists() else model


def _connect(ray, address: Optional[str]) -> bool:
    """Start or join a Ray cluster unless this process already has one; True if it was started here."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as err:
        address = address or os.environ.get("RAY_ADDRESS")
        raise ValueError(f"cannot connect to the Ray cluster at {address}: {err}") from None
    return True


def _dataset(ray, args, rows: List[Dict[str, Any]], workers: Tuple[int, float, float]):
    """The Ray dataset of annotated docs: reader tasks, then ``workers`` (see :func:`_ray_workers`) pipeline
    actors."""
    n_workers, gpus_per_worker, cpus_per_worker = workers
    device = args.device or (None if gpus_per_worker > 0 else "cpu")
    cpu_threads = None if gpus_per_worker > 0 else max(1, int(cpus_per_worker))
    try:
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 1000))
    except TypeError:  # Ray < 2.10
        ds = ray.data.from_items(rows, parallelism=min(len(rows), 1000))
    ds = ds.map_batches(_read_shard_batches, batch_size=1, batch_format="pyarrow",
                        fn_kwargs={"text_field": args.text_field, "on_error": args.on_error}, num_cpus=0.25)
    return ds.map_batches(PipelineWorker, batch_size=args.batch_size, batch_format="pyarrow",
                          compute=ray.data.ActorPoolStrategy(size=n_workers),
                          fn_constructor_kwargs={"pipeline": str(_abs_if_local(args.pipeline)), "device": device,
                                                 "settings": getattr(args, "settings", None),
                                                 "batch_size": args.batch_size, "cpu_threads": cpu_threads},
                          num_gpus=gpus_per_worker or None, num_cpus=cpus_per_worker)


def run_ray(args, shards: Sequence[Shard], on_shard: ShardDone, progress: Progress) -> None:
    """Annotate ``shards`` on Ray Data and hand each to ``on_shard`` as soon as all its docs are back.
    ``args``: the ``annotate`` command's options (pipeline, device, text_field, on_error, batch_size,
    ray_address, ray_progress, num_workers, gpus_per_worker, cpus_per_worker)."""
    ray = import_ray()
    started_here = _connect(ray, args.ray_address)
    try:
        workers = _ray_workers(ray, args)
        print(f"Ray: {workers[0]} pipeline worker(s), {workers[1]:g} GPU and {workers[2]:g} CPU each",
              file=sys.stderr)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # shards come back whole, one after the other
        if not args.ray_progress:
            ctx.enable_progress_bars = False
        rows = [{"shard": i, "path": str(s.path.resolve()), "fmt": s.fmt} for i, s in enumerate(shards) if s.n_docs]
        # no rows (only empty shards): nothing for the workers to do
        _collect(_dataset(ray, args, rows, workers) if rows else None, shards, on_shard, progress)
    finally:
        if started_here:
            ray.shutdown()


def _collect(ds, shards: Sequence[Shard], on_shard: ShardDone, progress: Progress) -> None:
    """Gather the annotated rows by shard and hand each shard over as soon as all its docs are back."""
    pending: Dict[int, Dict[int, Tuple[Optional[int], bytes]]] = {}
    started: Dict[int, float] = {}
    for shard in shards:  # shards with no docs never show up in the stream
        if shard.n_docs == 0:
            on_shard(shard, [], [], 0.0)
    if ds is None:
        return
    iterator = iter(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    try:
        for table in iterator:
            cols = {c: table.column(c).to_pylist() for c in ("shard", "index", "line", "doc")}
            for shard_id, index, line, data in zip(cols["shard"], cols["index"], cols["line"], cols["doc"]):
                started.setdefault(shard_id, time.perf_counter())
                got = pending.setdefault(shard_id, {})
                if index in got:
                    raise RuntimeError(f"{shards[shard_id].path}: doc {index} came back twice")
                got[index] = (line, data)
                if len(got) == shards[shard_id].n_docs:
                    del pending[shard_id]
                    _hand_over(shards[shard_id], got, on_shard, time.perf_counter() - started.pop(shard_id))
            progress.update(table.num_rows)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if pending:
        missing = ", ".join(f"{shards[i].path} ({shards[i].n_docs - len(got)} docs)" for i, got in pending.items())
        raise RuntimeError(f"Ray returned too few docs for: {missing}")


def _hand_over(shard: Shard, got: Dict[int, Tuple[Optional[int], bytes]], on_shard: ShardDone,
               seconds: float) -> None:
    """A shard whose docs are all back, in input order, to ``on_shard``."""
    from spacy.vocab import Vocab

    ordered = [got[i] for i in range(len(got))]
    vocab = Vocab()  # one per shard, so that the driver's string store does not keep growing
    docs = [Doc(vocab).from_bytes(data) for _, data in ordered]
    on_shard(shard, docs, [line for line, _ in ordered], seconds)
