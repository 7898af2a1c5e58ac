"""``write_base_folder``: a GGUF base as a folder with its tokenizer files, which loading then takes over the GGUF
file's own reading; refused for a tokenizer that splits whole words."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import tiny
from spacy_padellm.loading import load_model, resolve_model
from spacy_padellm.packed_tokenizer import unpacked
from spacy_padellm.__main__ import main
from spacy_padellm.training.base_folder import write_base_folder

MODELS = Path(__file__).resolve().parents[2] / "spacy_padellm" / "models"


@pytest.fixture(scope="module")
def gguf(tiny_base, tmp_path_factory):
    return tiny.build_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_base)


def test_the_folder_is_the_gguf_file_and_its_tokenizer(gguf, tiny_base, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_base))
    folder = write_base_folder(gguf, tmp_path / "base", tokenizer=tok)
    assert (folder / gguf.name).is_symlink() and (folder / gguf.name).resolve() == gguf.resolve()
    source = resolve_model(folder)
    assert source.gguf_file == gguf.name and source.tokenizer_dir == folder.resolve()
    _, loaded = load_model(source, device="cpu")
    text = tiny.SENTENCES[0][0]
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    again = write_base_folder(gguf, tmp_path / "base", tokenizer=tok, copy=True)  # over the old one: a plain copy
    assert not (again / gguf.name).is_symlink() and (again / gguf.name).read_bytes() == gguf.read_bytes()


def test_a_tokenizer_that_splits_whole_words_is_refused(gguf, tmp_path, capsys):
    split = PreTrainedTokenizerFast(tokenizer_file=str(unpacked(MODELS / "tokenizers" / "gemma3-270m")
                                                       / "tokenizer.json"))
    with pytest.raises(ValueError, match="splits words its vocabulary holds whole"):
        write_base_folder(gguf, tmp_path / "base", tokenizer=split)
    assert not (tmp_path / "base").exists()
    with pytest.raises(ValueError, match="not a .gguf file"):
        write_base_folder(tmp_path / "missing.gguf", tmp_path / "base")
    assert main(["base-folder", str(tmp_path / "missing.gguf"), str(tmp_path / "base")]) == 1
    assert "not a .gguf file" in capsys.readouterr().err


def test_a_tokenizer_folder_given_on_purpose_is_written_as_it_is(gguf, tmp_path):
    """``--tokenizer`` with ``--allow-split-words``: the shipped character tokenizer (for Chinese text) beside the
    GGUF file, the folder then loading with it."""
    chars = MODELS / "tokenizers" / "gemma3-270m"
    assert main(["base-folder", str(gguf), str(tmp_path / "none"), "--tokenizer", str(tmp_path / "nowhere")]) == 1
    assert main(["base-folder", str(gguf), str(tmp_path / "refused"), "--tokenizer", str(chars)]) == 1
    assert not (tmp_path / "refused").exists()
    assert main(["base-folder", str(gguf), str(tmp_path / "base"), "--tokenizer", str(chars),
                 "--allow-split-words"]) == 0
    source = resolve_model(tmp_path / "base")
    assert source.gguf_file == gguf.name and source.tokenizer_dir == (tmp_path / "base").resolve()
    expected = AutoTokenizer.from_pretrained(str(unpacked(chars)))
    written = AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    text = "厦门泛华集团 gene expression"
    assert written(text, add_special_tokens=False)["input_ids"] == expected(text, add_special_tokens=False)["input_ids"]
