"""A GGUF base is de-quantised once: later loads read the same weights from the safetensors cache."""

import os
import shutil

import pytest
import torch

import tiny
from spacy_padellm import gguf_cache, loading
from spacy_padellm.loading import load_base_model, resolve_model


@pytest.fixture(scope="module")
def gguf_file(tiny_base, tmp_path_factory):
    return tiny.build_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_base)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entries(cache):
    return sorted(p.parent.name for p in cache.glob(f"gguf/*/{gguf_cache.MARKER}"))


def _never_dequantised(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the GGUF file was de-quantised again")

    monkeypatch.setattr(loading, "_load_gguf", fail)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_second_load_reads_the_cache_with_the_same_weights(gguf_file, cache, monkeypatch):
    source = resolve_model(str(gguf_file))
    first = load_base_model(source, torch.float32)
    assert len(_entries(cache)) == 1
    assert not any(p.suffix == ".safetensors" for p in gguf_file.parent.iterdir())  # nothing next to the GGUF
    _never_dequantised(monkeypatch)
    second = load_base_model(source, torch.float32)
    _same_weights(first, second)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(first(ids).logits, second(ids).logits)


def test_a_copy_that_keeps_its_modification_time_shares_the_entry(gguf_file, cache, tmp_path, monkeypatch):
    load_base_model(resolve_model(str(gguf_file)), torch.float32)
    copy = shutil.copy2(gguf_file, tmp_path / "base.gguf")  # as nlp.to_disk copies a GGUF base
    _never_dequantised(monkeypatch)
    load_base_model(resolve_model(str(copy)), torch.float32)
    assert len(_entries(cache)) == 1


def test_each_dtype_has_its_own_entry(gguf_file, cache):
    source = resolve_model(str(gguf_file))
    load_base_model(source, torch.float32)
    model = load_base_model(source, torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert len(_entries(cache)) == 2


def test_a_changed_file_gets_a_new_entry_and_the_old_one_goes(gguf_file, cache, tmp_path):
    copy = shutil.copy2(gguf_file, tmp_path / "copy.gguf")
    load_base_model(resolve_model(str(copy)), torch.float32)
    old = _entries(cache)
    stat = os.stat(copy)
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_base_model(resolve_model(str(copy)), torch.float32)
    new = _entries(cache)
    assert len(old) == len(new) == 1 and old != new


def test_a_broken_entry_is_written_again(gguf_file, cache):
    source = resolve_model(str(gguf_file))
    first = load_base_model(source, torch.float32)
    (weights,) = cache.glob("gguf/*/model.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    again = load_base_model(source, torch.float32)
    _same_weights(first, again)
    assert len(_entries(cache)) == 1
    assert weights.stat().st_size > 100


@pytest.mark.parametrize("setting", ["off", ""])
def test_the_cache_can_be_turned_off(gguf_file, tmp_path, monkeypatch, setting):
    monkeypatch.setenv(gguf_cache.CACHE_ENV, setting)
    monkeypatch.chdir(tmp_path)
    assert load_base_model(resolve_model(str(gguf_file)), torch.float32) is not None
    assert gguf_cache.cache_root() is None
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_folder_still_loads(gguf_file, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(blocker / "cache"))
    assert load_base_model(resolve_model(str(gguf_file)), torch.float32) is not None
    assert not (blocker / "cache").exists()


def test_the_default_folder_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(gguf_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert gguf_cache.cache_root() == tmp_path / "spacy_padellm"
