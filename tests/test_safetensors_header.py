"""The safetensors header check reads the header only and names the file when it is not whole."""

import pytest
import torch
from safetensors.torch import save_file

from spacy_padellm.safetensors_header import SafetensorsHeaderError, read_safetensors_header


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(5)}, str(path), metadata={"format": "pt"})
    return path


def test_whole_file_gives_its_header(weights):
    header = read_safetensors_header(weights)
    assert set(header) == {"__metadata__", "a", "b"}
    assert header["a"]["shape"] == [3, 4]


@pytest.mark.parametrize("keep, message", [(-1, "truncated: its tensors take 68 bytes of data, the file holds 67"),
                                           (20, "truncated or not a safetensors file: its header claims"),
                                           (5, "shorter than a safetensors header")])
def test_cut_file_is_named(weights, keep, message):
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(SafetensorsHeaderError, match=str(weights) + ".*" + message):
        read_safetensors_header(weights)


def test_extra_bytes_are_corrupt(weights):
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(SafetensorsHeaderError, match="is corrupt: its tensors take 68 bytes of data, the file holds 69"):
        read_safetensors_header(weights)


def test_not_safetensors_at_all(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes((10).to_bytes(8, "little") + b"not json!!")
    with pytest.raises(SafetensorsHeaderError, match="not a safetensors file: its header is not JSON"):
        read_safetensors_header(path)
