"""``text/vocab.py``: the tokens a batch's outputs can be made of, on SmolLM2's tokenizer (the shipped model's)."""

from pathlib import Path

from transformers import AutoTokenizer

from spacy_padellm.text.protocol import PromptEncoder
from spacy_padellm.text.vocab import MAX_PIECE_WORD, batch_vocabulary, pieces_within

SHIPPED = Path(__file__).resolve().parents[2] / "spacy_padellm" / "models" / "conll03-smollm2-135m"


def test_the_vocabulary_holds_prompts_words_pieces_counts_and_special_tokens():
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    tok = enc.tokenizer
    text = "Peter Blackburn met 'Macho' in Bonn ."
    prefixes = [enc.prefix(text)]
    vocab = set(batch_vocabulary(enc, [(text, ["PER", "LOC"])], prefixes, max_count=5))
    assert set(prefixes[0]) | set(enc.label("PER")) | set(enc.label("LOC")) <= vocab
    assert set(enc.mention("Blackburn")) | set(enc.mention("Macho")) | set(enc.mention("Bonn")) <= vocab
    assert {t for n in range(6) for t in enc.count(n)} | {enc.eos_id} | set(tok.all_special_ids) <= vocab
    # the ways to write a word other than its own encoding: every token whose text lies inside it
    pieces = {i for i in range(len(tok)) if tok.decode([i]) and tok.decode([i]) in "Blackburn"}
    assert pieces - set(enc.mention("Blackburn")) and pieces <= vocab
    assert len(vocab) < len(tok) // 20
    other = set(batch_vocabulary(enc, [("Kowloon Tong", ["LOC"])], [enc.prefix("Kowloon Tong")], max_count=5))
    assert set(enc.mention("Blackburn")) - other  # another batch, another vocabulary


def test_pieces_within_words_and_after_a_space():
    texts = {"lack": [7], "burn": [8], " Bl": [9], "Bl": [10], "x": [11], " lack": [12], "burnt": [13]}
    assert pieces_within(texts, ["  Blackburn "]) == {7, 8, 9, 10}  # " lack" starts no word, "burnt" is longer
    long = "a" * MAX_PIECE_WORD + "zz"
    assert pieces_within({"zz": [1], "aa": [2]}, [long]) == {2}  # only a word's first MAX_PIECE_WORD characters


def test_pieces_within_keeps_each_words_pieces_in_its_memo(monkeypatch):
    from spacy_padellm.text import vocab

    texts = {"lack": [7], "burn": [8], " Bl": [9], "Bl": [10], "Bo": [11]}
    memo = {}
    assert pieces_within(texts, ["Blackburn", "Bonn"], memo) == {7, 8, 9, 10, 11}
    assert set(memo) == {"Blackburn", "Bonn"} and set(memo["Bonn"]) == {11}
    memo["Bonn"] = (99,)  # read from the memo, not worked out again
    assert pieces_within(texts, ["Bonn"], memo) == {99}
    monkeypatch.setattr(vocab, "MEMO_WORDS", 2)
    assert pieces_within(texts, ["lack"], memo) == {7} and "lack" not in memo  # a full memo takes no more words
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    assert enc.count(3) is enc.count(3) and enc.count(3) == list(enc.tokenizer("3\n", add_special_tokens=False)["input_ids"])


def test_every_token_the_mention_trie_allows_is_in_the_vocabulary():
    """Steered outputs under ``head_vocab`` "text" are normalised over the batch's set: the tokens a text's mention
    trie allows lie in it."""
    from spacy_padellm.decoding.constraints import MentionTrie

    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    for text in ("Peter Blackburn met 'Macho' in Bonn .", "EU rejects German call to boycott British lamb .",
                 "Japan's Nikkei rose 1.2 percent to 20,000.50 on Tuesday (AFP-Reuters).",
                 "SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT ."):
        vocab = set(batch_vocabulary(enc, [(text, ["PER"])], [enc.prefix(text)], max_count=3))
        trie = MentionTrie.build(text, enc)
        stack, seen, allowed = [trie.root], set(), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for tok in trie.allowed_ids(node):
                allowed.add(tok)
                child = trie.advance(node, tok)
                if child is not None:
                    stack.append(child)
        assert len(allowed) > 10 and allowed <= vocab, text
