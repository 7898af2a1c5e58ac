"""The tokenizer check before training: a tokenizer that splits words its own vocabulary holds whole is flagged
(transformers 5.17's reading of Gemma 3's GGUF file, shipped with the Gemma models), a sound one is not."""

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from spacy_padellm.packed_tokenizer import unpacked
from spacy_padellm.training.tokenizer_check import PROBE_WORDS, split_whole_words

MODELS = Path(__file__).resolve().parents[2] / "spacy_padellm" / "models"


def test_a_tokenizer_that_splits_whole_words_is_flagged():
    folder = unpacked(MODELS / "tokenizers" / "gemma3-270m")  # shipped as tokenizer.json.gz
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert "\u2581expression" in tok.get_vocab()
    assert tok.tokenize(" expression") != ["\u2581expression"]
    assert split_whole_words(tok) == list(PROBE_WORDS)


def test_a_sound_tokenizer_is_not_flagged():
    tok = AutoTokenizer.from_pretrained(str(MODELS / "conll03-smollm2-135m"))  # SmolLM2's byte-level BPE
    assert "\u0120expression" in tok.get_vocab()
    assert split_whole_words(tok) == []


def test_the_shipped_bpe_tokenizer_of_gemma_keeps_words_whole():
    """The tokenizer the Weibo and GENIA models ship with: Gemma's byte-level BPE, not flagged."""
    folder = unpacked(MODELS / "tokenizers" / "gemma3-270m-bpe")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert tok.tokenize(" expression") == ["\u2581expression"]
    assert split_whole_words(tok) == []


def test_words_the_vocabulary_does_not_hold_whole_are_not_probed(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate("aehtxp \u2581")}  # characters only: nothing to hold whole
    inner = Tokenizer(models.WordPiece(vocab, unk_token="x", max_input_chars_per_word=100))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="x")
    assert split_whole_words(tok) == []
