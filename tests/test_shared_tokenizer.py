"""Where a model's tokenizer comes from: a tokenizer folder that model folders share (``"tokenizer"`` in
padellm.json, how the shipped Gemma 3 models carry theirs once), and tokenizer files beside a GGUF base."""

import json
import shutil

import pytest
import spacy

import tiny
from spacy_padellm.loading import META_FILE, TOKENIZER_FILES, ModelFolderError, resolve_model


def _with_shared_tokenizer(model, root):
    """A copy of ``model`` whose tokenizer files moved to root/tokenizers/t, named by its padellm.json."""
    folder, shared = root / "models" / "m", root / "models" / "tokenizers" / "t"
    shutil.copytree(model, folder)
    shared.mkdir(parents=True)
    for item in list(folder.iterdir()):
        if item.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens", "chat_template")):
            shutil.move(str(item), shared / item.name)
    meta = json.loads((folder / META_FILE).read_text())
    meta["tokenizer"] = "../tokenizers/t"
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder, shared


def _entities(nlp):
    return [[(e.text, e.label_) for e in doc.ents] for doc in nlp.pipe([t for t, _ in tiny.SENTENCES])]


def test_a_shared_tokenizer_folder_is_used_and_saved_into_the_pipeline(tiny_model, tmp_path):
    folder, shared = _with_shared_tokenizer(tiny_model, tmp_path)
    assert not any((folder / name).exists() for name in TOKENIZER_FILES)
    assert resolve_model(str(folder)).tokenizer_dir == shared.resolve()
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(folder), "device": "cpu"})
    expected = [[(m, label) for m, label in mentions] for _, mentions in tiny.SENTENCES]
    assert _entities(nlp) == expected
    nlp.to_disk(tmp_path / "pipeline")
    saved = tmp_path / "pipeline" / "padellm_ner" / "model"
    assert "tokenizer" not in json.loads((saved / META_FILE).read_text())  # self-contained: its own copy
    assert (saved / "tokenizer.json").exists()
    assert _entities(spacy.load(tmp_path / "pipeline")) == expected


def test_a_shared_tokenizer_folder_that_is_missing_is_an_error(tiny_model, tmp_path):
    folder, shared = _with_shared_tokenizer(tiny_model, tmp_path)
    shutil.rmtree(shared)
    with pytest.raises(ModelFolderError, match="names the tokenizer folder .* which holds no tokenizer"):
        resolve_model(str(folder))


def test_tokenizer_files_beside_a_gguf_file_are_its_tokenizer(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path)).tokenizer_dir is None  # the GGUF's own tokenizer
    (tmp_path / "tokenizer.json").write_text("{}")
    source = resolve_model(str(tmp_path))
    assert (source.gguf_file, source.tokenizer_dir) == ("model.gguf", tmp_path.resolve())
    assert resolve_model(str(tmp_path / "model.gguf")).tokenizer_dir is None  # the file alone: as before


def test_a_tokenizer_beside_a_gguf_file_is_copied_when_the_model_is_exported(tmp_path):
    from spacy_padellm.loading import export_model_folder

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.gguf").write_bytes(b"GGUF")
    (base / "tokenizer.json").write_text("{}")
    (base / "tokenizer_config.json").write_text("{}")
    dest = export_model_folder(resolve_model(str(base)), tmp_path / "out", {"labels": ["PER"]})
    assert sorted(p.name for p in dest.iterdir()) == ["base.gguf", META_FILE, "tokenizer.json", "tokenizer_config.json"]
    assert resolve_model(str(dest)).tokenizer_dir == dest.resolve()


def test_a_tokenizer_config_alone_beside_a_gguf_file_is_not_a_tokenizer(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).tokenizer_dir is None
