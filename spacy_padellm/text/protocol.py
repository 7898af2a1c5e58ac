"""The PaDeLLM text protocol: prompts, targets and the parsing of model output.

Training and inference share this module, so the token sequence a model is trained on is exactly the
one the decoder feeds it. A training example for (label, k) is the concatenation of separately
encoded pieces::

    prefix(text) + label_part(label) | count(n) + mention_tag(k) + mention + EOS
    ------------ prompt -------------   ------------------ target --------------

and a label with no mentions gives ``prefix + label_part | count(0) + EOS``. Encoding the pieces
separately (instead of the joined string) keeps token boundaries fixed, which is what lets the decoder
encode the shared prefix once per document and reuse its KV cache for every label.
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .chunks import ChunkedEncoder

__all__ = [
    "Template",
    "TEMPLATES",
    "get_template",
    "PromptEncoder",
    "TrainingExample",
    "build_examples",
    "parse_count",
    "parse_mention",
    "tokenizer_bos_ids",
]

_SLOTS = {"prefix": {"text"}, "label": {"label"}, "count": {"n"}, "mention": {"k"}}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    """The four pieces of the PaDeLLM prompt/target format.

    ``prefix`` holds ``{text}`` and is shared by every label branch of a document; ``label`` holds
    ``{label}``; ``count`` holds ``{n}`` followed by a non-empty terminator (the decoder stops the
    count step when the model writes it); ``mention`` holds ``{k}`` and precedes the k-th mention.
    """

    prefix: str = "text:\n{text}\nentity type:\n"
    label: str = "{label}\n\n<num>"
    count: str = "{n}\n"
    mention: str = "<mention {k}>"

    def __post_init__(self) -> None:
        for piece, required in _SLOTS.items():
            value = getattr(self, piece)
            if not isinstance(value, str):
                raise TemplateError(f"Template piece '{piece}' must be a string, got {type(value).__name__}")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
            except ValueError as err:
                raise TemplateError(f"Template piece '{piece}' is not a valid format string: {err}") from None
            missing = required - fields
            extra = fields - required
            if missing:
                raise TemplateError(
                    f"Template piece '{piece}' ({value!r}) lacks the slot {{{sorted(missing)[0]}}}"
                )
            if extra:
                raise TemplateError(
                    f"Template piece '{piece}' ({value!r}) has unknown slot(s) "
                    + ", ".join("{" + f + "}" for f in sorted(extra))
                    + f"; allowed: {{{sorted(required)[0]}}}"
                )
        if not self.count_terminator:
            raise TemplateError(
                f"Template piece 'count' ({self.count!r}) must end with a terminator after {{n}}, "
                "such as a newline, so the decoder knows where the count ends"
            )
        if self.count.index("{n}") != 0:
            raise TemplateError(f"Template piece 'count' ({self.count!r}) must start with {{n}}")

    @property
    def count_terminator(self) -> str:
        return self.count.split("{n}", 1)[1]

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, str]) -> "Template":
        unknown = set(data) - set(_SLOTS)
        if unknown:
            raise TemplateError(f"Unknown template piece(s): {sorted(unknown)}; expected {sorted(_SLOTS)}")
        return cls(**data)


TEMPLATES: Dict[str, Template] = {
    # The paper's English template.
    "en": Template(),
    # The Chinese counterpart ("text", "entity type", "count", "mention").
    "zh": Template(
        prefix="文本：\n{text}\n实体类型：\n",
        label="{label}\n\n<数量>",
        count="{n}\n",
        mention="<实体 {k}>",
    ),
}


def get_template(spec) -> Template:
    """A Template from a name in TEMPLATES, a dict of pieces, or a Template."""
    if isinstance(spec, Template):
        return spec
    if spec is None:
        return TEMPLATES["en"]
    if isinstance(spec, str):
        if spec not in TEMPLATES:
            raise TemplateError(f"Unknown template name {spec!r}; choose one of {sorted(TEMPLATES)} or give the pieces")
        return TEMPLATES[spec]
    if isinstance(spec, dict):
        return Template.from_dict(dict(spec))
    raise TemplateError(f"Cannot build a template from {type(spec).__name__}")


_COUNT_RE = re.compile(r"^\s*(\d{1,6})\s*$")


def parse_count(text: str, template: Template = TEMPLATES["en"]) -> Optional[int]:
    """The mention count written by the model, or None when it is not a number.

    ``text`` is the decoded output of the count step, terminator included or not.
    """
    term = template.count_terminator
    if term.strip() and term in text:
        text = text.split(term, 1)[0]
    match = _COUNT_RE.match(text)
    return int(match.group(1)) if match else None


def parse_mention(text: str, eos_token: Optional[str] = None) -> str:
    """The mention text from the decoded output of a mention step."""
    if eos_token and eos_token in text:
        text = text.split(eos_token, 1)[0]
    return text.strip()


@dataclass
class TrainingExample:
    """One (label, k) example as strings, before tokenisation."""

    text: str
    label: str
    count: int
    k: int  # 0 when count == 0
    mention: str  # "" when count == 0

    def to_dict(self) -> Dict:
        return asdict(self)


def build_examples(
    text: str, mentions: Iterable[Tuple[str, str]], labels: Sequence[str]
) -> List[TrainingExample]:
    """The PaDeLLM examples of one sentence.

    ``mentions`` are (label, mention string) pairs in reading order; a label of ``labels`` without
    mentions gives one count-0 example. Labels outside ``labels`` are an error.
    """
    by_label: Dict[str, List[str]] = {label: [] for label in labels}
    for label, mention in mentions:
        if label not in by_label:
            raise ValueError(f"Mention {mention!r} has label {label!r}, which is not in the label set {list(labels)}")
        by_label[label].append(mention)
    examples: List[TrainingExample] = []
    for label in labels:
        found = by_label[label]
        if not found:
            examples.append(TrainingExample(text, label, 0, 0, ""))
        for k, mention in enumerate(found, start=1):
            examples.append(TrainingExample(text, label, len(found), k, mention))
    return examples


def tokenizer_bos_ids(tokenizer, bos: Optional[bool] = None) -> List[int]:
    """The BOS id a prompt starts with: ``[bos_token_id]`` or ``[]``.

    ``bos`` (what a model folder records, ``padellm.json`` "bos") decides when given. Otherwise: whether the
    tokenizer puts BOS before a text itself (``tokenizer(text)``), or its ``add_bos_token`` says so. The
    attribute alone is not enough: transformers 5 does not save ``add_bos_token`` (the BOS lives in
    tokenizer.json's post-processor), so a tokenizer that adds BOS (Gemma's, as a GGUF file loads it)
    reports False once saved with a model folder and loaded back, and prompts built from the attribute lost
    the BOS the model was trained with.
    """
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None or bos is False:
        return []
    if bos or getattr(tokenizer, "add_bos_token", False):
        return [bos_id]
    probe = "a"
    with_special = list(tokenizer(probe)["input_ids"])
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    return [bos_id] if with_special[:1] == [bos_id] and plain[:1] != [bos_id] else []


# Texts the fast tokenizer's backend is checked on (against transformers' wrapper) before it is trusted.
_BACKEND_PROBES = ("EU rejects German call to boycott British lamb .", "  two  spaces\n\tand a tab ",
                   "Ärzte in São Paulo, 2026", "日本，东京（１２３）。", "<mention 1>Japan</s>", " leading space", "x" * 300)
_BACKEND_CHECKS = 16
# Up to this many items, a fast tokenizer's backend is called item by item rather than with its batch method:
# the batch methods hand the items to a thread pool (TOKENIZERS_PARALLELISM, on by default), whose start costs
# more than a few items take (11 texts: 181 us against 105; 2 decodes: 27 us against 2).
_SMALL_BATCH = 32


@dataclass
class _Shortcut:
    """Whether a fast tokenizer's backend may stand in for transformers' wrapper (``PromptEncoder._via_backend``),
    and how many calls had their first item checked against the wrapper."""

    ok: bool = True
    checks: int = 0


def _backend_batch(one, batch, items: List, **kwargs) -> List:
    """``batch(items, **kwargs)``, item by item with ``one`` for a small batch (the same results)."""
    if len(items) <= _SMALL_BATCH:
        return [one(item, **kwargs) for item in items]
    return batch(items, **kwargs)


@dataclass
class PromptEncoder:
    """Turns protocol pieces into token ids with one tokenizer, the same way for training and decoding.

    ``bos``: whether prompts start with BOS (a model folder's recorded choice); None: as the tokenizer
    does (``tokenizer_bos_ids``)."""

    tokenizer: object
    template: Template = field(default_factory=Template)
    bos: Optional[bool] = None

    def __post_init__(self) -> None:
        tok = self.tokenizer
        self.eos_id: int = tok.eos_token_id
        if self.eos_id is None:
            raise ValueError("The tokenizer has no EOS token; PaDeLLM needs one to end mentions")
        self.bos_ids: List[int] = tokenizer_bos_ids(tok, self.bos)
        self._label_cache: Dict[str, List[int]] = {}
        self._tag_cache: Dict[int, List[int]] = {}
        self._count_cache: Dict[int, List[int]] = {}
        self._ends_count_cache: Dict[int, bool] = {}
        # whether _encode_many and decode_many may call a fast tokenizer's backend directly (see _via_backend)
        self._encoding = _Shortcut()
        self._decoding = _Shortcut()
        self._mention_chunks = ChunkedEncoder(self._encode_many)
        self._token_texts: Optional[Dict[str, List[int]]] = None  # ``token_texts``
        self._memos: Dict[str, Dict] = {}

    def _encode(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_many(self, texts: Sequence[str]) -> List[List[int]]:
        """``[_encode(t) for t in texts]`` (the same ids, less overhead per text).

        A fast tokenizer's backend is used directly (``encode_batch``, or item by item for a small batch, see
        ``_backend_batch``): transformers' wrapper spends more time converting each encoding than the tokenizer
        spends encoding (about 0.4 ms a call, which was most of the host time of a batch-1 sentence). The
        backend is checked against the wrapper first (``_via_backend``) on probe texts (spaces, newlines,
        accents, CJK, digits, the protocol's tags).
        """
        if not texts:
            return []
        texts = list(texts)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            ids = self._via_backend(self._encoding, texts, self._probes, self._encode, lambda items: [
                e.ids for e in _backend_batch(backend.encode, backend.encode_batch, items, add_special_tokens=False)])
            if ids is not None:
                return ids
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    @staticmethod
    def _via_backend(shortcut: "_Shortcut", items: List, probes, wrapper, backend_call) -> Optional[List]:
        """``backend_call(items)`` when the backend may stand in for the wrapper, else None (then the caller uses
        the wrapper). Before the first call the backend is checked on ``probes()``, then on the first item of each
        of the first ``_BACKEND_CHECKS`` calls: each checked item must give what ``wrapper(item)`` gives. Any
        difference, or an error, turns the shortcut off for good."""
        if not shortcut.ok:
            return None
        checking = shortcut.checks < _BACKEND_CHECKS
        checked = ((probes() if shortcut.checks == 0 else []) + [items[0]]) if checking else []
        try:
            out = backend_call(checked + items)
        except Exception:  # noqa: BLE001 - any trouble: the wrapper's way
            out = None
        if out is not None and all(out[i] == wrapper(item) for i, item in enumerate(checked)):
            shortcut.checks += int(checking)
            return out[len(checked):]
        shortcut.ok = False
        return None

    def _probes(self) -> List[str]:
        t = self.template
        return list(_BACKEND_PROBES) + [t.prefix.format(text="Japan"), t.label.format(label="LOC"),
                                        t.count.format(n=2) + t.mention.format(k=2) + "Syria"]

    def prefix(self, text: str) -> List[int]:
        return self.bos_ids + self._encode(self.template.prefix.format(text=text))

    def prefixes(self, texts: Sequence[str]) -> List[List[int]]:
        """``[prefix(t) for t in texts]``, encoded in one batch."""
        return [self.bos_ids + ids for ids in self._encode_many([self.template.prefix.format(text=t) for t in texts])]

    def prefixes_and_mentions(self, texts: Sequence[str], mentions: Sequence[str]) -> Tuple[List[List[int]], List[List[int]]]:
        """``(prefixes(texts), mentions(mentions))`` in one tokenizer call (a call's own cost is most of what a
        short batch costs)."""
        ids = self._encode_many([self.template.prefix.format(text=t) for t in texts] + list(mentions))
        return [self.bos_ids + i for i in ids[: len(texts)]], ids[len(texts):]

    def label(self, label: str) -> List[int]:
        return self._cached(self._label_cache, label, self.template.label, label=label)

    def count(self, n: int) -> List[int]:
        return self._cached(self._count_cache, n, self.template.count, n=n)

    def mention_tag(self, k: int) -> List[int]:
        return self._cached(self._tag_cache, k, self.template.mention, k=k)

    def _cached(self, cache: Dict, key, piece: str, **slots) -> List[int]:
        """The ids of the template ``piece`` filled with ``slots``, encoded once per ``key`` (a shared list: not to
        be changed)."""
        ids = cache.get(key)
        if ids is None:
            ids = cache[key] = self._encode(piece.format(**slots))
        return ids

    def mention(self, mention: str) -> List[int]:
        return self._encode(mention)

    def mentions(self, mentions: Sequence[str]) -> List[List[int]]:
        """``[mention(m) for m in mentions]``: in one batch, or joined from the cached ids of their whitespace
        chunks once that is checked to give the same ids (``chunks``)."""
        return self._mention_chunks.encode(mentions)

    def mention_chunk_ids(self, chunks: Sequence[str]) -> Optional[List[Tuple[int, ...]]]:
        """The ids of each whitespace chunk (``chunks.chunks_of``) such that a mention's ids are its chunks' ids
        joined; None until that has been checked to hold for this tokenizer (``mentions`` checks it)."""
        if not self._mention_chunks.composes:
            return None
        return self._mention_chunks.chunk_ids(chunks)

    def memo(self, name: str) -> Dict:
        """A dict kept with this encoder under ``name``, for values derived from its ids (e.g. the mention trie's
        per-word chunk ids, ``decoding.trie_paths``)."""
        return self._memos.setdefault(name, {})

    def token_texts(self) -> Dict[str, List[int]]:
        """Each token's text, decoded alone, -> the ids that decode to it; built once (about a second and a half
        for a vocabulary of 262k entries)."""
        if self._token_texts is None:
            tok = self.tokenizer
            texts: Dict[str, List[int]] = {}
            for i, text in enumerate(tok.batch_decode([[i] for i in range(len(tok))])):
                texts.setdefault(text, []).append(i)
            self._token_texts = texts
        return self._token_texts

    def ends_count(self, token_id: int) -> bool:
        """Whether a generated token ends a count step: EOS, or a token holding the count terminator."""
        if token_id not in self._ends_count_cache:
            self._ends_count_cache[token_id] = (
                token_id == self.eos_id or self.template.count_terminator in self.tokenizer.decode([token_id])
            )
        return self._ends_count_cache[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def decode_many(self, seqs: Sequence[Sequence[int]]) -> List[str]:
        """``[decode(ids) for ids in seqs]``, with less overhead per sequence.

        As in ``_encode_many``, a fast tokenizer's backend (``decode_batch``, or ``decode`` item by item for a
        small batch) is used directly once it agrees with the wrapper (``_via_backend``, the probe texts encoded
        with EOS): the wrapper may post-process (``clean_up_tokenization_spaces``, which transformers versions
        apply differently).
        """
        if not seqs:
            return []
        seqs = [list(ids) for ids in seqs]
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            texts = self._via_backend(
                self._decoding, seqs, lambda: [self._encode(t) + [self.eos_id] for t in self._probes()], self.decode,
                lambda items: _backend_batch(backend.decode, backend.decode_batch, items, skip_special_tokens=True))
            if texts is not None:
                return texts
        return [self.decode(ids) for ids in seqs]

    def example(self, ex: TrainingExample) -> Tuple[List[int], List[int]]:
        """(prompt ids, target ids) of a training example; the loss covers the target only."""
        prompt = self.prefix(ex.text) + self.label(ex.label)
        target = self.count(ex.count)
        if ex.count > 0:
            target = target + self.mention_tag(ex.k) + self.mention(ex.mention)
        return prompt, target + [self.eos_id]
