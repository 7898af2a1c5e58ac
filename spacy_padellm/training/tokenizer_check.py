"""A check of the tokenizer a model is about to be trained with: does it use the whole-word pieces its own
vocabulary holds?

transformers builds a tokenizer from a GGUF file's vocabulary, and for some models and versions the result
segments text unlike the tokenizer the model was pre-trained with: transformers 5.17 reads Gemma 3's GGUF file into
one that writes "expression" as "▁ex pr ess ion" although "▁expression" is in its vocabulary. A model fine-tuned
on such pieces learns from text it was not pre-trained on, and carries that tokenizer from then on. The check
tokenizes a few common words after a space; a tokenizer whose vocabulary holds a word whole (SentencePiece's
"▁word" or byte-level BPE's "Ġword") should write it as that one piece.
"""

from __future__ import annotations

from typing import List

__all__ = ["PROBE_WORDS", "split_whole_words"]

PROBE_WORDS = ("the", "expression", "between", "government", "information", "people")
_SPACE_MARKS = ("\u2581", "\u0120")  # SentencePiece's "▁", byte-level BPE's "Ġ"


def split_whole_words(tokenizer) -> List[str]:
    """The probe words that ``tokenizer``'s vocabulary holds as one space-prefixed piece but that it splits
    into several when they follow a space; empty when none (or when the vocabulary holds none of them whole)."""
    vocab = tokenizer.get_vocab()
    split = []
    for word in PROBE_WORDS:
        whole = [mark + word for mark in _SPACE_MARKS if mark + word in vocab]
        if not whole:
            continue
        ids = tokenizer("a " + word, add_special_tokens=False)["input_ids"]
        if vocab[whole[0]] not in ids:
            split.append(word)
    return split
