"""Tokenizer folders that ship tokenizer.json gzip-compressed (``packed_tokenizer``), as the shipped Gemma 3
models' shared tokenizer does."""

import shutil

import spacy

import tiny
from spacy_padellm import packed_tokenizer
from spacy_padellm.loading import load_tokenizer, resolve_model
from test_shared_tokenizer import _entities, _with_shared_tokenizer


def test_pack_then_unpack_gives_the_same_bytes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SPACY_PADELLM_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"model": "x"}' * 1000)
    (src / "tokenizer_config.json").write_text("{}")
    packed = packed_tokenizer.pack(src, tmp_path / "packed")
    assert not (packed / "tokenizer.json").exists() and packed_tokenizer.is_packed(packed)
    assert (packed / packed_tokenizer.PACKED).stat().st_size < (src / "tokenizer.json").stat().st_size
    first = packed_tokenizer.unpacked(packed)
    assert first.parent == tmp_path / "cache" / "tokenizers"
    assert (first / "tokenizer.json").read_text() == (src / "tokenizer.json").read_text()
    assert (first / "tokenizer_config.json").read_text() == "{}"
    assert packed_tokenizer.unpacked(packed) == first  # made once
    assert packed_tokenizer.unpacked(src) == src  # a folder with tokenizer.json is used as it is


def test_cache_turned_off_unpacks_into_a_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SPACY_PADELLM_CACHE", "off")
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"a": 1}')
    where = packed_tokenizer.unpacked(packed_tokenizer.pack(src, tmp_path / "packed"))
    assert tmp_path not in where.parents and (where / "tokenizer.json").read_text() == '{"a": 1}'


def test_a_model_with_a_packed_shared_tokenizer_gives_the_same_entities_and_saves(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACY_PADELLM_CACHE", str(tmp_path / "cache"))
    folder, shared = _with_shared_tokenizer(tiny_model, tmp_path)
    shutil.move(str(shared), tmp_path / "loose")
    packed_tokenizer.pack(tmp_path / "loose", shared)
    source = resolve_model(str(folder))
    assert source.tokenizer_dir == shared.resolve() and packed_tokenizer.is_packed(shared)
    text = tiny.SENTENCES[0][0]
    expected_ids = load_tokenizer(resolve_model(str(tiny_model)))(text)["input_ids"]
    assert load_tokenizer(source)(text)["input_ids"] == expected_ids
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(folder), "device": "cpu"})
    expected = [[(m, label) for m, label in mentions] for _, mentions in tiny.SENTENCES]
    assert _entities(nlp) == expected
    nlp.to_disk(tmp_path / "pipeline")
    assert _entities(spacy.load(tmp_path / "pipeline")) == expected
