"""Tokenizer folders that ship their ``tokenizer.json`` gzip-compressed.

A byte-level BPE tokenizer with a large vocabulary (Gemma 3: 262,144 pieces and 514,906 merges) is a
``tokenizer.json`` of 33 MB that compresses to 5.6 MB. A folder may hold ``tokenizer.json.gz`` instead of
``tokenizer.json``; ``unpacked(folder)`` gives a folder transformers can read: the same folder when it holds
``tokenizer.json``, else a copy with the file decompressed, made once in the user cache (``tokenizers/`` of
``gguf_cache.cache_root()``, keyed by a hash of the compressed bytes) or, with the cache turned off or not
writable, in a temporary folder for this process.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
from pathlib import Path
from . import gguf_cache

__all__ = ["PACKED", "is_packed", "unpacked", "pack"]

PACKED = "tokenizer.json.gz"
_DONE = ".complete"  # written last: a folder without it is incomplete


def is_packed(folder: Path) -> bool:
    """True for a folder that holds ``tokenizer.json.gz`` and no ``tokenizer.json``."""
    return (folder / PACKED).exists() and not (folder / "tokenizer.json").exists()


def unpacked(folder: Path) -> Path:
    """``folder``, or where its tokenizer files are with ``tokenizer.json`` decompressed."""
    folder = Path(folder)
    if not is_packed(folder):
        return folder
    digest = hashlib.sha256((folder / PACKED).read_bytes()).hexdigest()[:24]
    root = gguf_cache.cache_root()
    if root is not None:
        target = root / "tokenizers" / digest
        if (target / _DONE).exists():
            return target
        try:
            return _write(folder, target)
        except OSError:
            pass
    return _write(folder, Path(tempfile.mkdtemp(prefix="spacy_padellm_tokenizer_")) / digest)


def _write(folder: Path, target: Path) -> Path:
    """The folder's files into ``target`` (through a temporary sibling, renamed when complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for item in folder.iterdir():
            if item.name == PACKED:
                with gzip.open(item, "rb") as src, (staging / "tokenizer.json").open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            elif item.is_file():
                shutil.copy2(item, staging / item.name)
        (staging / _DONE).write_text("")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / _DONE).exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def pack(source: Path, target: Path) -> Path:
    """Copy the tokenizer folder ``source`` to ``target`` with ``tokenizer.json`` gzip-compressed."""
    target.mkdir(parents=True, exist_ok=True)
    for item in Path(source).iterdir():
        if item.name == "tokenizer.json":
            with item.open("rb") as src, gzip.GzipFile(target / PACKED, "wb", mtime=0) as dst:
                shutil.copyfileobj(src, dst)
        elif item.is_file():
            shutil.copy2(item, target / item.name)
    return target
