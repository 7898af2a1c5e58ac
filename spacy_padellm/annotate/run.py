"""``python -m spacy_padellm annotate PIPELINE INPUT... OUTPUT_DIR``: annotate many documents, locally or on Ray.

PIPELINE is a spaCy pipeline folder (``config.cfg`` inside) or a PaDeLLM model folder, which is wrapped in
``spacy.blank(lang)`` + ``padellm_ner`` (see :func:`spacy_padellm.cli.evaluate.load_pipeline`).

Inputs are *shards*: JSONL files (one JSON object a line, the text under ``--text-field``), plain text files
(one doc a line) or DocBin files, or folders holding them. Each input shard gives one output shard,
``OUTPUT_DIR/<name>.spacy`` (a DocBin with user data), and with ``--jsonl`` also ``OUTPUT_DIR/<name>.jsonl``
(character offsets, labels and probabilities). Every output file is written under a temporary name and
moved into place with ``os.replace``, the DocBin last: a shard whose DocBin exists is finished, so a re-run
skips it and a crash loses no finished shard.

Every input doc gets exactly one output doc, in input order, empty docs included. A doc that fails is kept,
unannotated, with its error message in ``doc._.padellm_error`` (a Doc extension stored in ``user_data``); a
batch that raises is retried one doc at a time so that only the failing docs are marked. The run ends with the
number of failed docs and exits non-zero if there are any, unless ``--allow-failures``.

Locally the docs go through ``nlp.pipe`` on the GPU if there is one. With ``--ray`` (or ``--ray-address``)
they go through Ray Data ``map_batches`` with one pipeline actor per GPU (or per CPU worker); the driver
writes the shards, so only the inputs and the pipeline need to be visible to the workers.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, DocBin

__all__ = ["ERROR_ATTR", "InputError", "Shard", "find_shards", "read_shard", "count_docs", "annotate_docs",
           "load_annotation_pipeline", "doc_to_record", "add_parser", "run"]

logger = logging.getLogger(__name__)

#: Doc extension that holds the error message of a doc that could not be annotated (None otherwise).
ERROR_ATTR = "padellm_error"
if not Doc.has_extension(ERROR_ATTR):
    Doc.set_extension(ERROR_ATTR, default=None)

#: Test hook: ``N`` raises after N shards are written by this run, ``N:kill`` sends SIGKILL to the process.
CRASH_ENV = "SPACY_PADELLM_CRASH_AFTER_SHARDS"

STATE_DIR = ".padellm_annotate"  # per-shard summaries (docs, failures) under OUTPUT_DIR
FORMATS = ("jsonl", "text", "docbin")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text", ".spacy": "docbin",
             ".docbin": "docbin"}
_MAX_REPORTED = 10  # input errors / failed docs listed in full

Item = Union[str, Doc]  # an input doc: a text, or a Doc read from a DocBin


class InputError(ValueError):
    """Input that cannot be annotated (bad JSON, missing text field, unreadable file), with file and line."""


class SimulatedCrash(RuntimeError):
    """Raised by the ``SPACY_PADELLM_CRASH_AFTER_SHARDS`` test hook."""


# -- shards --------------------------------------------------------------------------------------------


@dataclass
class Shard:
    """One input file and the outputs it gives."""

    path: Path  # input file
    fmt: str  # "jsonl", "text" or "docbin"
    name: str  # output name relative to OUTPUT_DIR, without suffix
    output_dir: Path
    n_docs: int = 0  # set by count_docs

    @property
    def out(self) -> Path:
        return self.output_dir / f"{self.name}.spacy"

    @property
    def jsonl_out(self) -> Path:
        return self.output_dir / f"{self.name}.jsonl"

    @property
    def state(self) -> Path:
        return self.output_dir / STATE_DIR / f"{self.name}.json"

    def done(self) -> bool:
        """A shard is finished when its DocBin exists: it is the last file moved into place."""
        return self.out.exists()

    def remove_temp_files(self) -> None:
        """Delete what a killed run left half-written for this shard (see :func:`_atomic_write`)."""
        for final in (self.out, self.jsonl_out, self.state):
            if final.parent.is_dir():
                for tmp in final.parent.glob(f".{final.name}.tmp-*"):
                    tmp.unlink()


def _format_of(path: Path) -> Optional[str]:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        fmt = _SUFFIXES.get(suffixes[-1]) if suffixes else None
        return fmt if fmt in ("jsonl", "text") else None  # DocBins are compressed already
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in _SUFFIXES else name


def find_shards(inputs: Sequence[Union[str, Path]], output_dir: Union[str, Path],
                input_format: Optional[str] = None) -> List[Shard]:
    """The input shards, in the order given (folders: recursively, sorted by path).

    A file given by name may have any suffix (unknown ones are read as plain text unless ``input_format``
    says otherwise); in a folder only ``.jsonl``, ``.ndjson``, ``.txt``, ``.spacy`` (and ``.jsonl.gz``,
    ``.txt.gz``) files are taken, hidden files and anything under OUTPUT_DIR left out. The output name keeps
    the path relative to the folder, without the input suffix.
    """
    output_dir = Path(output_dir)
    out_resolved = output_dir.resolve()
    shards: List[Shard] = []
    for given in inputs:
        root = Path(given)
        if root.is_dir():
            found = []
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                rel = path.relative_to(root)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if out_resolved == path.resolve().parent or out_resolved in path.resolve().parents:
                    continue
                if _format_of(path) is None:
                    continue
                found.append((path, rel))
            if not found:
                raise InputError(f"{root}: no .jsonl, .txt or .spacy files in this folder")
        elif root.is_file():
            found = [(root, Path(root.name))]
        else:
            raise FileNotFoundError(f"input {root} does not exist")
        for path, rel in found:
            fmt = input_format or _format_of(path) or "text"
            name = str(rel.parent / _stem(rel)) if str(rel.parent) != "." else _stem(rel)
            shards.append(Shard(path=path, fmt=fmt, name=name, output_dir=output_dir))
    seen: Dict[str, Path] = {}
    for shard in shards:
        if shard.name in seen:
            raise InputError(f"{seen[shard.name]} and {shard.path} would both be written to {shard.out}; "
                             "rename one or put them in different folders")
        seen[shard.name] = shard.path
        if shard.path.resolve() in (shard.out.resolve(), shard.jsonl_out.resolve()):
            raise InputError(f"input {shard.path} is also its own output; choose another OUTPUT_DIR")
    return shards


# -- reading -------------------------------------------------------------------------------------------


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(1-based line number, line without its newline), decoding UTF-8 line by line for precise errors."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            yield lineno, line[:-1] if line.endswith("\n") else line


def _jsonl_text(path: Path, lineno: int, line: str, text_field: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    if text_field not in record:
        keys = ", ".join(sorted(record)[:8]) or "none"
        raise InputError(f"{path}:{lineno}: no {text_field!r} field (fields: {keys}); set --text-field")
    text = record[text_field]
    if not isinstance(text, str):
        raise InputError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def read_shard(path: Union[str, Path], fmt: str, text_field: str = "text",
               vocab=None) -> Iterator[Tuple[Optional[int], Item]]:
    """Yield (line number or None, text or Doc) for each doc of an input file, in order.

    JSONL: one doc per non-blank line; plain text: one doc per line, empty lines are empty docs (a final
    newline ends the last line); DocBin: its docs, with ``vocab`` (default: a new one). Raises
    :class:`InputError` naming the file and line of the first bad record.
    """
    path = Path(path)
    if fmt == "jsonl":
        for lineno, line in _lines(path):
            if line.strip():
                yield lineno, _jsonl_text(path, lineno, line, text_field)
    elif fmt == "text":
        for lineno, line in _lines(path):
            yield lineno, line[:-1] if line.endswith("\r") else line
    elif fmt == "docbin":
        from spacy.vocab import Vocab

        try:
            docbin = DocBin().from_disk(path)
        except Exception as err:  # a truncated or foreign file: msgpack/zlib errors
            raise InputError(f"{path}: not a readable DocBin ({type(err).__name__}: {err})") from None
        for doc in docbin.get_docs(vocab if vocab is not None else Vocab()):
            yield None, doc
    else:
        raise ValueError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")


def count_docs(shards: Sequence[Shard], text_field: str) -> None:
    """Read every input once before anything is processed: set ``shard.n_docs`` and report every bad
    file and line (up to ten) in one :class:`InputError`."""
    errors: List[str] = []
    for shard in shards:
        n = 0
        try:
            for _ in read_shard(shard.path, shard.fmt, text_field):
                n += 1
        except InputError as err:  # the first bad record of each file
            errors.append(str(err))
            if len(errors) >= _MAX_REPORTED:
                break
        shard.n_docs = n
    if errors:
        more = " (first ten shown)" if len(errors) >= _MAX_REPORTED else ""
        raise InputError("bad input, nothing was annotated" + more + ":\n  " + "\n  ".join(errors))


# -- annotating ----------------------------------------------------------------------------------------


def _resolve_device(device: Optional[str]) -> str:
    """``device`` if given; else the first visible GPU (``spacy.prefer_gpu`` for spaCy's own ops too), else CPU.
    On a Ray worker the first visible GPU is the one Ray assigned to it."""
    if device:
        return device
    import spacy

    spacy.prefer_gpu()
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda:0"
    except ImportError:
        pass
    return "cpu"


def load_annotation_pipeline(model: str, device: Optional[str] = None):
    """Load PIPELINE with every ``padellm_ner`` component on ``device`` and its model loaded, so that
    configuration errors (missing model, no labels) stop the run before any doc is processed."""
    import spacy
    from spacy.util import load_config

    from ..cli.evaluate import load_pipeline

    path = Path(model)
    if (path / "config.cfg").exists():
        config = load_config(path / "config.cfg")
        overrides = {}
        if device:
            overrides = {f"components.{name}.device": device for name, block in config.get("components", {}).items()
                         if block.get("factory") == "padellm_ner"}
        nlp = spacy.load(path, config=overrides)
    else:
        nlp = load_pipeline(model, config={"device": device} if device else None)
    for _, pipe in nlp.pipeline:
        if hasattr(pipe, "_ensure_loaded"):
            pipe._ensure_loaded()
    return nlp


def _fresh(nlp, item: Item) -> Doc:
    return nlp.make_doc(item) if isinstance(item, str) else item.copy()


def _error_doc(nlp, item: Item, err: BaseException) -> Doc:
    """The input doc, unannotated, with the error in ``doc._.padellm_error``."""
    if isinstance(item, str):
        try:
            doc = nlp.tokenizer(item)  # no max_length check: a too-long text still comes back whole
        except Exception:
            doc = Doc(nlp.vocab, words=[item], spaces=[False]) if item else Doc(nlp.vocab)
    else:
        doc = item.copy()
    message = f"{type(err).__name__}: {err}".strip()
    doc._.set(ERROR_ATTR, message[:2000])
    return doc


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def annotate_docs(nlp, items: Sequence[Item], batch_size: int = 64) -> List[Doc]:
    """Run ``nlp.pipe`` over ``items`` and return exactly one Doc per item, in order.

    Each batch of ``batch_size`` docs is tried whole; if it raises, its docs are retried one at a time and
    only the ones that still raise come back unannotated, with ``doc._.padellm_error`` set. The items are
    never modified (Docs are copied).
    """
    out: List[Doc] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        try:
            docs = list(nlp.pipe([_fresh(nlp, item) for item in chunk], batch_size=batch_size))
            if len(docs) != len(chunk):
                raise RuntimeError(f"the pipeline returned {len(docs)} docs for {len(chunk)}")
        except Exception as err:
            logger.warning("a batch of %d docs failed (%s: %s); retrying them one at a time",
                           len(chunk), type(err).__name__, err)
            _free_gpu_memory()
            docs = []
            for item in chunk:
                try:
                    docs.extend(nlp.pipe([_fresh(nlp, item)], batch_size=1))
                except Exception as one_err:
                    _free_gpu_memory()
                    docs.append(_error_doc(nlp, item, one_err))
        out.extend(docs)
    return out


# -- writing -------------------------------------------------------------------------------------------


def _span_record(span) -> Dict[str, Any]:
    prob = span._.get("padellm_prob") if span.has_extension("padellm_prob") else None
    return {"start": span.start_char, "end": span.end_char, "label": span.label_, "text": span.text,
            "prob": prob}


def doc_to_record(doc: Doc, index: int, line: Optional[int] = None) -> Dict[str, Any]:
    """One JSONL output record: the doc's position in its shard, text, entities with character offsets,
    labels and probabilities, span groups (nested mode) and the error, if the doc failed."""
    record: Dict[str, Any] = {"index": index, "line": line, "text": doc.text,
                              "ents": [_span_record(ent) for ent in doc.ents]}
    if doc.spans:
        record["spans"] = {key: [_span_record(span) for span in group] for key, group in doc.spans.items()}
    record["error"] = doc._.get(ERROR_ATTR)
    return record


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _jsonl_bytes(docs: Sequence[Doc], lines: Sequence[Optional[int]]) -> bytes:
    return "".join(json.dumps(doc_to_record(doc, i, line), ensure_ascii=False) + "\n"
                   for i, (doc, line) in enumerate(zip(docs, lines))).encode("utf8")


def write_shard(shard: Shard, docs: Sequence[Doc], lines: Sequence[Optional[int]], *, jsonl: bool,
                seconds: float = 0.0) -> List[Tuple[int, Optional[int], str]]:
    """Write a finished shard (JSONL, summary, then the DocBin that marks it done); return its failures
    as (index, line, error)."""
    if len(docs) != shard.n_docs:
        raise RuntimeError(f"{shard.path}: {len(docs)} output docs for {shard.n_docs} input docs")
    failures = [(i, line, doc._.get(ERROR_ATTR)) for i, (doc, line) in enumerate(zip(docs, lines))
                if doc._.get(ERROR_ATTR)]
    docbin = DocBin(store_user_data=True)
    for doc in docs:
        docbin.add(doc)
    if jsonl:
        _atomic_write(shard.jsonl_out, _jsonl_bytes(docs, lines))
    summary = {"input": str(shard.path), "docs": len(docs), "failed": len(failures), "seconds": round(seconds, 3)}
    _atomic_write(shard.state, json.dumps(summary).encode("utf8"))
    _atomic_write(shard.out, docbin.to_bytes())
    return failures


def _finished_failures(shard: Shard) -> int:
    """Failed docs in a shard written by an earlier run (its summary, else counted in the DocBin)."""
    try:
        return int(json.loads(shard.state.read_text())["failed"])
    except (OSError, ValueError, KeyError, TypeError):
        from spacy.vocab import Vocab

        return sum(1 for doc in DocBin().from_disk(shard.out).get_docs(Vocab()) if doc._.get(ERROR_ATTR))


def _complete_jsonl(shard: Shard, text_field: str) -> None:
    """A shard finished by a run without ``--jsonl``: write its JSONL from the DocBin, not the model."""
    from spacy.vocab import Vocab

    docs = list(DocBin().from_disk(shard.out).get_docs(Vocab()))
    lines: List[Optional[int]] = [None] * len(docs)
    if shard.path.exists():
        try:
            records = [line for line, _ in read_shard(shard.path, shard.fmt, text_field)]
        except InputError:
            records = None
        if records is not None and len(records) == len(docs):
            lines = records
    _atomic_write(shard.jsonl_out, _jsonl_bytes(docs, lines))


def _maybe_crash(shards_written: int) -> None:
    """Test hook (``SPACY_PADELLM_CRASH_AFTER_SHARDS``): simulate a crash after N shards of this run."""
    value = os.environ.get(CRASH_ENV)
    if not value:
        return
    count, _, mode = value.partition(":")
    if shards_written >= int(count):
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise SimulatedCrash(f"simulated crash after {shards_written} shard(s) ({CRASH_ENV}={value})")


# -- local and Ray runners -----------------------------------------------------------------------------

ShardDone = Callable[[Shard, List[Doc], List[Optional[int]], float], None]


def _run_local(args, shards: Sequence[Shard], on_shard: ShardDone, progress) -> None:
    if args.gpu_id is not None and args.gpu_id >= 0:
        import spacy

        spacy.prefer_gpu(args.gpu_id)  # spaCy's own ops, if cupy is installed
        device = args.device or f"cuda:{args.gpu_id}"
    else:
        device = _resolve_device(args.device)
    nlp = load_annotation_pipeline(args.pipeline, device)
    for shard in shards:
        start = time.perf_counter()
        records = list(read_shard(shard.path, shard.fmt, args.text_field, vocab=nlp.vocab))
        docs: List[Doc] = []
        step = max(args.batch_size, 1)
        for i in range(0, len(records), step):
            docs.extend(annotate_docs(nlp, [item for _, item in records[i:i + step]], args.batch_size))
            progress.update(min(step, len(records) - i))
        on_shard(shard, docs, [line for line, _ in records], time.perf_counter() - start)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RayMissing(
            f'--ray needs Ray Data, which is not installed ({err}): pip install "ray[data]" '
            "(or run without --ray to annotate in this process)"
        ) from None
    return ray


class RayMissing(ValueError):
    """``--ray`` was given but Ray Data cannot be imported."""


def _read_shard_batches(batch, *, text_field: str, rows_per_block: int = 1024) -> Iterator[Any]:
    """Ray Data reader (a task): one row (shard, path, fmt) in, that shard's docs out as Arrow tables with
    columns shard, index, line, text and doc (Doc bytes for DocBin inputs, else empty)."""
    import pyarrow as pa

    def table(rows):
        return pa.table({
            "shard": pa.array([r[0] for r in rows], pa.int64()),
            "index": pa.array([r[1] for r in rows], pa.int64()),
            "line": pa.array([r[2] for r in rows], pa.int64()),
            "text": pa.array([r[3] for r in rows], pa.string()),
            "doc": pa.array([r[4] for r in rows], pa.binary()),
        })

    for shard_id, path, fmt in zip(*(batch.column(c).to_pylist() for c in ("shard", "path", "fmt"))):
        rows = []
        for index, (line, item) in enumerate(read_shard(path, fmt, text_field)):
            rows.append((shard_id, index, line, item if isinstance(item, str) else "",
                         b"" if isinstance(item, str) else item.to_bytes()))
            if len(rows) >= rows_per_block:
                yield table(rows)
                rows = []
        if rows:
            yield table(rows)


class PipelineWorker:
    """Ray Data actor: loads the pipeline once (on the GPU Ray gives it, if any) and annotates batches."""

    def __init__(self, pipeline: str, device: Optional[str] = None, batch_size: int = 64,
                 cpu_threads: Optional[int] = None):
        if cpu_threads:
            import torch

            torch.set_num_threads(cpu_threads)
        self.nlp = load_annotation_pipeline(pipeline, _resolve_device(device))
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


def _run_ray(args, shards: Sequence[Shard], on_shard: ShardDone, progress) -> None:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=args.ray_address, logging_level=logging.WARNING)
        except ConnectionError as err:
            address = args.ray_address or os.environ.get("RAY_ADDRESS")
            raise ValueError(f"cannot connect to the Ray cluster at {address}: {err}") from None
    try:
        n_workers, gpus_per_worker, cpus_per_worker = _ray_workers(ray, args)
        print(f"Ray: {n_workers} pipeline worker(s), {gpus_per_worker:g} GPU and {cpus_per_worker:g} CPU each",
              file=sys.stderr)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # shards come back whole, one after the other
        if not args.ray_progress:
            ctx.enable_progress_bars = False
        device = args.device or (None if gpus_per_worker > 0 else "cpu")
        cpu_threads = None if gpus_per_worker > 0 else max(1, int(cpus_per_worker))
        rows = [{"shard": i, "path": str(s.path.resolve()), "fmt": s.fmt} for i, s in enumerate(shards) if s.n_docs]
        if not rows:  # only empty shards: nothing for the workers to do
            _collect(None, shards, on_shard, progress)
            return
        try:
            ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 1000))
        except TypeError:  # Ray < 2.10
            ds = ray.data.from_items(rows, parallelism=min(len(rows), 1000))
        ds = ds.map_batches(_read_shard_batches, batch_size=1, batch_format="pyarrow",
                            fn_kwargs={"text_field": args.text_field}, num_cpus=0.25)
        ds = ds.map_batches(PipelineWorker, batch_size=args.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=n_workers),
                            fn_constructor_kwargs={"pipeline": str(_abs_if_local(args.pipeline)), "device": device,
                                                   "batch_size": args.batch_size, "cpu_threads": cpu_threads},
                            num_gpus=gpus_per_worker or None, num_cpus=cpus_per_worker)
        _collect(ds, shards, on_shard, progress)
    finally:
        if started_here:
            ray.shutdown()


def _abs_if_local(model: str) -> str:
    path = Path(model)
    return str(path.resolve()) if path.exists() else model


def _collect(ds, shards: Sequence[Shard], on_shard: ShardDone, progress) -> None:
    """Gather the annotated rows by shard and hand each shard over as soon as all its docs are back."""
    from spacy.vocab import Vocab

    pending: Dict[int, Dict[int, Tuple[Optional[int], bytes]]] = {}
    started: Dict[int, float] = {}
    empty = [i for i, s in enumerate(shards) if s.n_docs == 0]
    for i in empty:  # shards with no docs never show up in the stream
        on_shard(shards[i], [], [], 0.0)
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
                    ordered = [got[i] for i in range(len(got))]
                    vocab = Vocab()  # one per shard, so that the driver's string store does not keep growing
                    docs = [Doc(vocab).from_bytes(data) for _, data in ordered]
                    on_shard(shards[shard_id], docs, [line for line, _ in ordered],
                             time.perf_counter() - started.pop(shard_id))
            progress.update(table.num_rows)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    if pending:
        missing = ", ".join(f"{shards[i].path} ({shards[i].n_docs - len(got)} docs)" for i, got in pending.items())
        raise RuntimeError(f"Ray returned too few docs for: {missing}")


class _Progress:
    """A tqdm bar in docs (it shows docs/s) that also times the run with and without the startup (loading
    the pipeline, starting Ray workers: everything before the first batch came back)."""

    def __init__(self, total: int, disable: bool = False):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="doc", desc="annotate", disable=disable, file=sys.stderr, smoothing=0.1)
        self.start = time.perf_counter()
        self.first: Optional[Tuple[float, int]] = None  # (time, docs) when the first batch came back
        self.docs = 0

    def update(self, n: int) -> None:
        self.docs += n
        if self.first is None:
            self.first = (time.perf_counter(), n)
        self.bar.update(n)

    def close(self) -> None:
        self.end = time.perf_counter()
        self.bar.close()

    def summary(self) -> str:
        seconds = self.end - self.start
        text = f"{seconds:.1f} s ({self.docs / seconds if seconds > 0 else 0.0:.1f} docs/s"
        if self.first is not None and self.docs > self.first[1] and self.end > self.first[0]:
            steady = (self.docs - self.first[1]) / (self.end - self.first[0])
            text += f"; {steady:.1f} docs/s after the first batch, {self.first[0] - self.start:.1f} s of startup"
        return text + ")"


# -- command line --------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "annotate", help="annotate JSONL/text/DocBin shards with a pipeline, locally or on Ray",
        description="Annotate every doc of INPUT (JSONL, plain text one doc a line, or DocBin files, or folders "
                    "of them) with PIPELINE and write one DocBin per input shard to OUTPUT_DIR. Finished shards "
                    "are skipped on a re-run.")
    p.add_argument("pipeline", metavar="PIPELINE", help="spaCy pipeline folder or PaDeLLM model folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input file(s) or folder(s)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--input-format", choices=FORMATS, default=None,
                   help="read every input as this format (default: from the suffix; unknown suffixes are text)")
    p.add_argument("--jsonl", action="store_true",
                   help="also write OUTPUT_DIR/<name>.jsonl: offsets, labels and probabilities per doc")
    p.add_argument("--batch-size", type=int, default=64, help="docs per nlp.pipe / Ray batch (default: 64)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 (default: the first GPU if there is one, on Ray the worker's)")
    p.add_argument("--gpu-id", type=int, default=None, help="local run: use this GPU, like spacy's --gpu-id")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even if some docs failed (they are written with doc._.padellm_error)")
    p.add_argument("--retry-failed", action="store_true",
                   help="annotate again the finished shards that hold failed docs")
    p.add_argument("--no-progress", action="store_true")
    ray = p.add_argument_group("Ray Data (pip install \"ray[data]\")")
    ray.add_argument("--ray", action="store_true", help="run on Ray Data: a local Ray, or RAY_ADDRESS's cluster")
    ray.add_argument("--ray-address", default=None,
                     help="connect to this Ray cluster (implies --ray), e.g. auto or ray://head:10001")
    ray.add_argument("--num-workers", type=int, default=None,
                     help="pipeline actors (default: one per GPU; on CPU one per --cpus-per-worker, "
                          "one CPU left for reading)")
    ray.add_argument("--gpus-per-worker", type=float, default=None,
                     help="GPUs per actor (default: 1 if the cluster has GPUs, else 0); 0.5 puts two on a GPU")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (default: 1)")
    ray.add_argument("--ray-progress", action="store_true", help="also show Ray Data's own progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    """The ``annotate`` command; returns the exit code (1 if docs failed and not ``--allow-failures``)."""
    use_ray = bool(args.ray or args.ray_address)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"OUTPUT_DIR {output_dir} is a file")
    if use_ray:
        try:
            _import_ray()
        except RayMissing as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    shards = find_shards(args.inputs, output_dir, args.input_format)
    finished = [s for s in shards if s.done()]
    if args.retry_failed:
        finished = [s for s in finished if not _finished_failures(s)]
    done_ids = {id(s) for s in finished}
    todo = [s for s in shards if id(s) not in done_ids]
    count_docs(todo, args.text_field)  # bad input stops the run here, before the model is loaded
    for shard in todo:
        shard.remove_temp_files()
    if args.jsonl:
        for shard in finished:
            if not shard.jsonl_out.exists():
                _complete_jsonl(shard, args.text_field)
    failed_before = sum(_finished_failures(s) for s in finished)
    total = sum(s.n_docs for s in todo)
    print(f"{len(shards)} shard(s): {len(finished)} already done, {len(todo)} to annotate ({total} docs)",
          file=sys.stderr)

    failures: List[Tuple[Shard, int, Optional[int], str]] = []
    written = 0

    def on_shard(shard: Shard, docs: List[Doc], lines: List[Optional[int]], seconds: float) -> None:
        nonlocal written
        for index, line, error in write_shard(shard, docs, lines, jsonl=args.jsonl, seconds=seconds):
            failures.append((shard, index, line, error))
        written += 1
        _maybe_crash(written)

    progress = _Progress(total, disable=args.no_progress)
    try:
        if todo:
            (_run_ray if use_ray else _run_local)(args, todo, on_shard, progress)
    finally:
        progress.close()
    n_failed = len(failures) + failed_before
    print(f"annotated {total} docs in {progress.summary()}; {written} shard(s) written to {output_dir}, "
          f"{len(finished)} already done; {n_failed} failed doc(s)")
    for shard, index, line, error in failures[:_MAX_REPORTED]:
        where = f"line {line}" if line is not None else f"doc {index}"
        print(f"  failed: {shard.path} {where}: {error}", file=sys.stderr)
    if n_failed and not args.allow_failures:
        print(f"error: {n_failed} doc(s) failed; they are in the output with doc._.{ERROR_ATTR} set "
              "(pass --allow-failures to accept them)", file=sys.stderr)
        return 1
    return 0
