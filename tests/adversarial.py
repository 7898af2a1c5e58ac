"""A seeded generator of random and adversarial texts (and mentions a model might write about them) for the
property tests of ``spacy_padellm.text`` and of ``padellm_ner``: control characters, lone surrogates, CJK,
right-to-left scripts, combining marks, emoji, characters whose case mapping changes length, very long
tokens, repeated names, protocol tags and format braces, empty and whitespace-only texts. The same seed
gives the same texts."""

import random
import re
from typing import List, Tuple

NAMES = ["Jordan", "Peter Blackburn", "São Paulo", "EU", "Σίσυφος", "İstanbul", "Straße", "北京", "东京大学",
         "ירושלים", "القاهرة", "O'Neill", "AT&T", "2-1", "U.S."]
WORDS = ["the", "said", "in", "on", "Thursday", "rejects", "call", "and", "x", "a", "de", "la"]
ODD = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\u200d", "\u200e", "\u202e", "\u2028", "\u2029",
       "\ufeff", "\ufffd", "\ufffe", "\uffff", "\ud800", "\udfff", "\udc80", "\U0010ffff", "\U000e0001",
       "e\u0301", "\u0301", "\u0308\u0308\u0308", "ﬁ", "ß", "ǅ", "ΐ", "Σ", "İ", "🎉", "👩\u200d👩\u200d👧", "🇩🇪", "👍🏽",
       "שלום", "مرحبا", "日本，东京（１２３）。", "한국어", "ไทย", "हिन्दी", "<mention 1>", "</s>", "{text}", "{}", "{0}",
       "%s", "\\", "\"", "<num>", "0", "12", "1\n", "<|endoftext|>"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2009", "\x0b", "\x0c"]
PUNCT = [".", ",", "!", "?", "。", "！", "…", ";", "；", "(", ")", "-", "'s"]


def _piece(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(NAMES)
    if kind < 0.5:
        return rng.choice(WORDS)
    if kind < 0.75:
        return rng.choice(ODD)
    if kind < 0.85:
        return rng.choice(PUNCT)
    if kind < 0.9:
        return rng.choice("xyzé日🎉\ud800") * rng.randint(50, 1000)  # a very long token
    if kind < 0.95:
        return (rng.choice(NAMES) + rng.choice(SPACES)) * rng.randint(2, 30)  # a repeated name
    return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 6)))  # any code point


def random_text(rng: random.Random, max_pieces: int = 16) -> str:
    """A text of random pieces joined by random whitespace (or none); now and then empty or blank."""
    roll = rng.random()
    if roll < 0.03:
        return ""
    if roll < 0.06:
        return "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 5)))
    parts: List[str] = []
    for _ in range(rng.randint(1, max_pieces)):
        parts.append(_piece(rng))
        parts.append(rng.choice(SPACES) if rng.random() < 0.85 else "")
    return "".join(parts)


def random_texts(seed: int, n: int, max_pieces: int = 16) -> List[str]:
    rng = random.Random(seed)
    return [random_text(rng, max_pieces) for _ in range(n)]


def token_offsets(text: str) -> List[Tuple[int, int]]:
    """(start, end) of word runs and single other non-space characters: every non-space character is in a
    token, as with spaCy's tokens."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def random_mentions(rng: random.Random, text: str, n: int) -> List[str]:
    """Strings a model might write for ``text``: slices of it (which may cut tokens), its tokens changed in
    case or spacing, names and odd strings that are not in it, empty and blank strings."""
    out = []
    tokens = token_offsets(text)
    for _ in range(n):
        roll = rng.random()
        if roll < 0.35 and text:
            a = rng.randrange(len(text))
            out.append(text[a:a + rng.randint(1, 30)])
        elif roll < 0.6 and tokens:
            i = rng.randrange(len(tokens))
            j = min(len(tokens), i + rng.randint(1, 3))
            piece = text[tokens[i][0]:tokens[j - 1][1]]
            out.append(rng.choice([piece, piece.upper(), piece.lower(), " ".join(piece.split()), piece.replace(" ", "")]))
        elif roll < 0.8:
            out.append(rng.choice(NAMES))
        elif roll < 0.95:
            out.append(_piece(rng)[:50])
        else:
            out.append(rng.choice(["", " ", "\n"]))
    return out
