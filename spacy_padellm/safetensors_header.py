"""Check that a ``.safetensors`` file is whole by its header alone: the 8-byte header length, the JSON
header, and the tensors' byte ranges against the file's size. No tensor is read, so a truncated or corrupt
weights file is reported (with its name) before anything loads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Union

__all__ = ["SafetensorsHeaderError", "read_safetensors_header"]

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit of the safetensors format itself


class SafetensorsHeaderError(ValueError):
    """A ``.safetensors`` file that cannot be whole: truncated, corrupt, or not safetensors at all."""


def read_safetensors_header(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The JSON header of ``path``, checked against the file's size; ``SafetensorsHeaderError`` naming the
    file otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SafetensorsHeaderError(f"{path} is truncated: {size} bytes, shorter than a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise SafetensorsHeaderError(f"{path} is truncated or not a safetensors file: its header claims "
                                         f"{length} bytes, the file has {size}")
        raw = handle.read(length)
    header = _parse(path, raw)
    _check_data_size(path, header, size - 8 - length)
    return header


def _parse(path: Path, raw: bytes) -> Dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf8"))
    except ValueError as err:
        raise SafetensorsHeaderError(f"{path} is corrupt or not a safetensors file: its header is not JSON "
                                     f"({err})") from None
    if not isinstance(header, dict):
        raise SafetensorsHeaderError(f"{path} is corrupt: its header is not a JSON object")
    return header


def _check_data_size(path: Path, header: Dict[str, Any], data_bytes: int) -> None:
    """The tensors' byte ranges must cover the data exactly, as safetensors requires when it loads."""
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
            raise SafetensorsHeaderError(f"{path} is corrupt: tensor {name!r} has no valid data_offsets")
        ends.append(offsets[1])
    needed = max(ends, default=0)
    if needed != data_bytes:
        state = "truncated" if needed > data_bytes else "corrupt"
        raise SafetensorsHeaderError(f"{path} is {state}: its tensors take {needed} bytes of data, the file holds "
                                     f"{data_bytes}; copy or download it again")
