"""Input shards: finding them (files and folders), naming their outputs, and reading their docs.

Inputs are JSONL files (one JSON object a line, the text under a field), plain text files (one doc a
line) or DocBin files, or folders holding them. Each input shard gives one output shard,
``OUTPUT_DIR/<name>.spacy``, and optionally ``OUTPUT_DIR/<name>.jsonl`` (see :mod:`.outputs`). A record
that cannot be read (bad JSON, no text, not UTF-8) is a :class:`Reject`: it either stops the run or is
skipped and listed in ``OUTPUT_DIR/<name>.rejects.jsonl``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, DocBin

__all__ = ["FORMATS", "ON_ERROR", "InputError", "Item", "Reject", "Shard", "ShardDone", "find_shards", "read_records",
           "read_shard", "count_docs"]

STATE_DIR = ".padellm_annotate"  # per-shard summaries (docs, failures) under OUTPUT_DIR
FORMATS = ("jsonl", "text", "docbin")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text", ".spacy": "docbin",
             ".docbin": "docbin"}
MAX_REPORTED = 10  # input errors / failed docs listed in full
MAX_RAW = 1000  # characters of a rejected line kept in the rejects file
ON_ERROR = ("skip", "fail")  # what an unreadable input record does: skipped into the rejects file, or stops the run

Item = Union[str, Doc]  # an input doc: a text, or a Doc read from a DocBin


class InputError(ValueError):
    """Input that cannot be annotated (bad JSON, missing text field, unreadable file), with file and line."""


@dataclass
class Reject:
    """An input record that cannot be annotated: its file, line (None for a DocBin), why, and the raw line."""

    path: Path
    line: Optional[int]
    reason: str
    raw: Optional[str] = None

    def message(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"

    def record(self) -> Dict[str, object]:
        """Its line in the rejects file: the raw line cut to ``MAX_RAW`` characters."""
        raw = self.raw
        return {"source": str(self.path), "line": self.line, "reason": self.reason,
                "raw": raw[:MAX_RAW] if raw is not None else None,
                "truncated": raw is not None and len(raw) > MAX_RAW}


@dataclass
class Shard:
    """One input file and the outputs it gives."""

    path: Path  # input file
    fmt: str  # "jsonl", "text" or "docbin"
    name: str  # output name relative to OUTPUT_DIR, without suffix
    output_dir: Path
    n_docs: int = 0  # set by count_docs
    rejects: List[Reject] = field(default_factory=list)  # set by count_docs when bad records are skipped

    @property
    def out(self) -> Path:
        return self.output_dir / f"{self.name}.spacy"

    @property
    def jsonl_out(self) -> Path:
        return self.output_dir / f"{self.name}.jsonl"

    @property
    def rejects_out(self) -> Path:
        return self.output_dir / f"{self.name}.rejects.jsonl"

    @property
    def state(self) -> Path:
        return self.output_dir / STATE_DIR / f"{self.name}.json"

    def done(self) -> bool:
        """A shard is finished when its DocBin exists: it is the last file moved into place."""
        return self.out.exists()

    def remove_temp_files(self) -> None:
        """Delete what a killed run left half-written for this shard (see :func:`.outputs.atomic_write`)."""
        for final in (self.out, self.jsonl_out, self.rejects_out, self.state):
            if final.parent.is_dir():
                for tmp in final.parent.glob(f".{final.name}.tmp-*"):
                    tmp.unlink()


#: on_shard(shard, annotated docs, their input line numbers, seconds): called once per finished shard.
ShardDone = Callable[[Shard, List[Doc], List[Optional[int]], float], None]


# -- finding -------------------------------------------------------------------------------------------


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


def _files_in(root: Path, out_resolved: Path) -> List[Tuple[Path, Path]]:
    """(path, path relative to ``root``) of the input files in a folder, sorted by path."""
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
    return found


def _check_names(shards: Sequence[Shard]) -> None:
    """No two inputs share an output, and no input is an output."""
    seen: Dict[Path, Path] = {}
    for shard in shards:
        for out in (shard.out, shard.jsonl_out, shard.rejects_out):
            if out in seen:
                raise InputError(f"{seen[out]} and {shard.path} would both be written to {out}; "
                                 "rename one or put them in different folders")
            seen[out] = shard.path
    outputs = {out.resolve() for out in seen}
    for shard in shards:
        if shard.path.resolve() in outputs:
            raise InputError(f"input {shard.path} is also an output; choose another OUTPUT_DIR")


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
            found = _files_in(root, out_resolved)
        elif root.is_file():
            found = [(root, Path(root.name))]
        else:
            raise FileNotFoundError(f"input {root} does not exist")
        for path, rel in found:
            fmt = input_format or _format_of(path) or "text"
            name = str(rel.parent / _stem(rel)) if str(rel.parent) != "." else _stem(rel)
            shards.append(Shard(path=path, fmt=fmt, name=name, output_dir=output_dir))
    _check_names(shards)
    return shards


# -- reading -------------------------------------------------------------------------------------------


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _lines(path: Path) -> Iterator[Tuple[int, Union[str, Reject]]]:
    """(1-based line number, line without its newline), decoding UTF-8 line by line for precise errors."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            try:
                line: Union[str, Reject] = raw.decode("utf8")
            except UnicodeDecodeError as err:
                line = Reject(path, lineno, f"not UTF-8 text ({err.reason} at byte {err.start})",
                              raw.decode("utf8", "replace"))
            yield lineno, line


def _jsonl_text(path: Path, lineno: int, line: str, text_field: str) -> Union[str, Reject]:
    """The text of one JSONL record, or why there is none."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return Reject(path, lineno, f"invalid JSON ({err.msg} at column {err.colno})", line)
    if not isinstance(record, dict):
        return Reject(path, lineno, f"expected a JSON object, got {type(record).__name__}", line)
    if text_field not in record:
        keys = ", ".join(sorted(record)[:8]) or "none"
        return Reject(path, lineno, f"no {text_field!r} field (fields: {keys}); set --text-field", line)
    text = record[text_field]
    if not isinstance(text, str):
        return Reject(path, lineno, f"field {text_field!r} is {type(text).__name__}, not a string", line)
    try:
        text.encode("utf8")
    except UnicodeEncodeError as err:  # a lone surrogate such as "\ud800"
        return Reject(path, lineno, f"field {text_field!r} cannot be encoded as UTF-8 ({err.reason} at "
                                    f"character {err.start})", line)
    return text


def _docbin_docs(path: Path, vocab) -> Iterator[Union[Doc, Reject]]:
    from spacy.vocab import Vocab

    try:
        docbin = DocBin().from_disk(path)
    except Exception as err:  # a truncated or foreign file: msgpack/zlib errors
        yield Reject(path, None, f"not a readable DocBin ({type(err).__name__}: {err})")
        return
    yield from docbin.get_docs(vocab if vocab is not None else Vocab())


def read_records(path: Union[str, Path], fmt: str, text_field: str = "text",
                 vocab=None) -> Iterator[Tuple[Optional[int], Union[Item, Reject]]]:
    """Yield (line number or None, text, Doc or :class:`Reject`) for each record of an input file, in order.

    JSONL: one doc per non-blank line; plain text: one doc per line, empty lines are empty docs (a final
    newline ends the last line); DocBin: its docs, with ``vocab`` (default: a new one), or one Reject for
    the whole file if it cannot be read.
    """
    path = Path(path)
    if fmt == "jsonl":
        for lineno, line in _lines(path):
            if isinstance(line, Reject) or line.strip():
                yield lineno, line if isinstance(line, Reject) else _jsonl_text(path, lineno, line, text_field)
    elif fmt == "text":
        for lineno, line in _lines(path):
            yield lineno, line[:-1] if isinstance(line, str) and line.endswith("\r") else line
    elif fmt == "docbin":
        for doc in _docbin_docs(path, vocab):
            yield None, doc
    else:
        raise ValueError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")


def read_shard(path: Union[str, Path], fmt: str, text_field: str = "text", vocab=None,
               rejects: Optional[List[Reject]] = None) -> Iterator[Tuple[Optional[int], Item]]:
    """Yield (line number or None, text or Doc) for each good record of an input file (see
    :func:`read_records`). A bad record raises :class:`InputError` naming its file and line, or, given a
    ``rejects`` list, is appended to it and skipped."""
    for lineno, item in read_records(path, fmt, text_field, vocab):
        if not isinstance(item, Reject):
            yield lineno, item
        elif rejects is None:
            raise InputError(item.message())
        else:
            rejects.append(item)


def count_docs(shards: Sequence[Shard], text_field: str, on_error: str = "fail") -> None:
    """Read every input once before anything is processed and set ``shard.n_docs``. With ``on_error``
    "skip" the bad records go to ``shard.rejects``; with "fail" every bad file and line (the first of each
    file, up to ten) is reported in one :class:`InputError`."""
    errors: List[str] = []
    for shard in shards:
        shard.rejects = []
        rejects = shard.rejects if on_error == "skip" else None
        n = 0
        try:
            for _ in read_shard(shard.path, shard.fmt, text_field, rejects=rejects):
                n += 1
        except InputError as err:  # the first bad record of each file
            errors.append(str(err))
            if len(errors) >= MAX_REPORTED:
                break
        shard.n_docs = n
    if errors:
        more = " (first ten shown)" if len(errors) >= MAX_REPORTED else ""
        raise InputError("bad input, nothing was annotated" + more + ":\n  " + "\n  ".join(errors)
                         + "\n(--on-error skip skips such records and lists them in OUTPUT_DIR/<name>.rejects.jsonl)")
