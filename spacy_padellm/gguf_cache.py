"""The de-quantised weights of a GGUF base model, kept as safetensors so that later loads skip de-quantising.

transformers de-quantises a GGUF file tensor by tensor in Python each time it loads one, which takes most of a
model's load time. The first load of a file writes the result (``config.json`` and ``model.safetensors``, as
``save_pretrained`` writes them) into a cache folder; a later load of the same file in the same dtype with the
same transformers version reads that instead. An entry is keyed by the GGUF file's size, modification time and a
hash of 16 pieces of its bytes, the dtype and the transformers version, not by its path: the copy of the file in
a pipeline saved with ``nlp.to_disk`` (which keeps the modification time) uses the same entry. Writing an entry
removes the entries written for an older version of the file at the same path.

The cache folder is ``$SPACY_PADELLM_CACHE`` if set (``off``: no cache), else ``$XDG_CACHE_HOME/spacy_padellm``,
else ``~/.cache/spacy_padellm``; entries go in its ``gguf/`` folder. Nothing is ever written next to the GGUF
file (it may be inside an installed package). A folder that cannot be written, or a disk without room for the
weights, means the model loads from the GGUF file as before; an entry that cannot be read is written again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["CACHE_ENV", "cache_root", "entry_folder", "load_cached", "store"]

logger = logging.getLogger("spacy_padellm")

CACHE_ENV = "SPACY_PADELLM_CACHE"
MARKER = "padellm-gguf.json"  # written last: an entry without it is incomplete
SAMPLE_PIECES = 16  # pieces of 64 KiB of a GGUF file hashed into its key
_OFF = ("off", "0", "false", "no", "none")


def cache_root() -> Optional[Path]:
    """The folder holding the ``gguf/`` entries, or None when the cache is turned off."""
    where = os.environ.get(CACHE_ENV)
    if where is not None:
        return None if where.strip().lower() in _OFF or not where.strip() else Path(where).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spacy_padellm"


def _sample(gguf: Path, pieces: int = SAMPLE_PIECES, piece: int = 1 << 16) -> str:
    """A hash of ``pieces`` evenly spaced pieces of the file, its first and last bytes among them (reads about
    1 MiB whatever the file's size)."""
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for i in range(pieces):
            f.seek(max(0, size - piece) * i // (pieces - 1))
            digest.update(f.read(piece))
    return digest.hexdigest()


def _source(gguf: Path, dtype: Any) -> Dict[str, Any]:
    """What an entry is keyed by: the file's size, modification time and sampled bytes (not its path, so that a
    copy that keeps its modification time, such as the one ``nlp.to_disk`` writes, shares the entry), the dtype
    and the transformers version; and the path that wrote it (to find the entries of older versions)."""
    import transformers

    stat = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sample": _sample(gguf), "dtype": str(dtype), "transformers": transformers.__version__}


def entry_folder(gguf: Path, dtype: Any) -> Optional[Path]:
    """Where the entry of ``gguf`` loaded in ``dtype`` is (or would be); None when the cache is off."""
    root = cache_root()
    return None if root is None else _folder(root, _source(gguf, dtype))


def _folder(root: Path, source: Dict[str, Any]) -> Path:
    """The entry folder of ``source`` (what ``_source`` says of a file) in the cache ``root``."""
    keyed = {k: v for k, v in source.items() if k != "gguf"}
    return root / "gguf" / hashlib.sha256(json.dumps(keyed, sort_keys=True).encode("utf8")).hexdigest()[:24]


def load_cached(gguf: Path, dtype: Any, trust_remote_code: bool = False):
    """The model of ``gguf`` in ``dtype`` from its cache entry, or None (no cache, no entry, or an unreadable
    one: it is removed, to be written again)."""
    folder = entry_folder(gguf, dtype)
    if folder is None or not (folder / MARKER).is_file():
        return None
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - a broken entry is replaced, never fatal
        logger.warning("spacy_padellm: the cached weights of %s in %s cannot be read (%s: %s); loading the GGUF "
                       "file", gguf, folder, type(err).__name__, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def store(model, gguf: Path, dtype: Any) -> Optional[Path]:
    """Write ``model`` (just de-quantised from ``gguf`` in ``dtype``) as the file's cache entry; the entry's
    folder, or None where it could not be written (the reason is logged at info level)."""
    root = cache_root()
    if root is None:
        return None
    source = _source(gguf, dtype)  # the file's sample read once, for both the key and the marker
    folder = _folder(root, source)
    if (folder / MARKER).is_file():
        return None
    try:
        return _write(model, folder, source)
    except Exception as err:  # noqa: BLE001 - without a cache the model still loads, from the GGUF file
        logger.info("spacy_padellm: not caching the de-quantised %s in %s: %s", gguf, folder, err)
        return None


def _write(model, folder: Path, source: Dict[str, Any]) -> Optional[Path]:
    folder.parent.mkdir(parents=True, exist_ok=True)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(folder.parent).free
    if free < 2 * size:
        raise OSError(f"{free >> 20} MiB free, {size >> 20} MiB of weights")
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's folder is its owner's only; the cache folder may be shared
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / MARKER).write_text(json.dumps(source, indent=1) + "\n", encoding="utf8")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if (folder / MARKER).is_file():  # another process wrote it first
            return folder
        raise
    _remove_older(folder, source)
    logger.info("spacy_padellm: cached the de-quantised weights of %s in %s", source["gguf"], folder)
    return folder


def _remove_older(kept: Path, source: Dict[str, Any]) -> None:
    """Remove the entries written for the same path (dtype, transformers version) from a file that has changed."""
    for marker in kept.parent.glob(f"*/{MARKER}"):
        if marker.parent == kept:
            continue
        try:
            other = json.loads(marker.read_text(encoding="utf8"))
        except (OSError, ValueError):
            continue
        same = all(other.get(key) == source[key] for key in ("gguf", "dtype", "transformers"))
        if same and any(other.get(key) != source[key] for key in ("size", "mtime_ns", "sample")):
            shutil.rmtree(marker.parent, ignore_errors=True)
