"""Input shards: finding them (files and folders), naming their outputs, and reading their docs.

Inputs are JSONL files (one JSON object a line, the text under a field), plain text files (one doc a
line) or DocBin files, or folders holding them. Each input shard gives one output shard,
``OUTPUT_DIR/<name>.spacy``, and optionally ``OUTPUT_DIR/<name>.jsonl`` (see :mod:`.outputs`).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, DocBin

__all__ = ["FORMATS", "InputError", "Item", "Shard", "ShardDone", "find_shards", "read_shard", "count_docs"]

STATE_DIR = ".padellm_annotate"  # per-shard summaries (docs, failures) under OUTPUT_DIR
FORMATS = ("jsonl", "text", "docbin")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text", ".text": "text", ".spacy": "docbin",
             ".docbin": "docbin"}
MAX_REPORTED = 10  # input errors / failed docs listed in full

Item = Union[str, Doc]  # an input doc: a text, or a Doc read from a DocBin


class InputError(ValueError):
    """Input that cannot be annotated (bad JSON, missing text field, unreadable file), with file and line."""


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
        """Delete what a killed run left half-written for this shard (see :func:`.outputs.atomic_write`)."""
        for final in (self.out, self.jsonl_out, self.state):
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
    """No two inputs share an output, and no input is its own output."""
    seen: Dict[str, Path] = {}
    for shard in shards:
        if shard.name in seen:
            raise InputError(f"{seen[shard.name]} and {shard.path} would both be written to {shard.out}; "
                             "rename one or put them in different folders")
        seen[shard.name] = shard.path
        if shard.path.resolve() in (shard.out.resolve(), shard.jsonl_out.resolve()):
            raise InputError(f"input {shard.path} is also its own output; choose another OUTPUT_DIR")


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


def _docbin_docs(path: Path, vocab) -> Iterator[Doc]:
    from spacy.vocab import Vocab

    try:
        docbin = DocBin().from_disk(path)
    except Exception as err:  # a truncated or foreign file: msgpack/zlib errors
        raise InputError(f"{path}: not a readable DocBin ({type(err).__name__}: {err})") from None
    yield from docbin.get_docs(vocab if vocab is not None else Vocab())


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
        for doc in _docbin_docs(path, vocab):
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
            if len(errors) >= MAX_REPORTED:
                break
        shard.n_docs = n
    if errors:
        more = " (first ten shown)" if len(errors) >= MAX_REPORTED else ""
        raise InputError("bad input, nothing was annotated" + more + ":\n  " + "\n  ".join(errors))
