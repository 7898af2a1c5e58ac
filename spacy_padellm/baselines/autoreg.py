"""The two autoregressive baselines of the PaDeLLM-NER paper: their text protocols and their decoding.

Both write every entity of a text in **one** output sequence (the paper's AutoReg baselines), so their
latency grows with the number of entities; PaDeLLM exists to avoid that. They are trained with the
project's own ``train`` command (``[data] protocol = "autoreg_struct"`` or ``"autoreg_aug"``) and
decoded by ``padellm_ner`` with ``decoding = "autoreg_struct"`` / ``"autoreg_aug"``.

**AutoRegStruct** (``autoreg_struct``): one line per label that has mentions, labels in the fixed
order of the model's label list, mentions of a label in reading order, then EOS::

    prompt:  text:\\nJapan beat Syria in the Asian Cup .\\nentities:\\n
    target:  LOC: Japan; Syria\\nMISC: Asian Cup</s>

A text without entities has the empty target: just EOS. The Chinese template ("zh") writes
``文本：\\n{text}\\n实体：\\n`` and ``LOC：日本；叙利亚``.

**AutoRegAug** (``autoreg_aug``): the input rewritten with inline markup ``[ mention | LABEL ]``, then
EOS::

    prompt:  text:\\nJapan beat Syria in the Asian Cup .\\nannotated text:\\n
    target:  [ Japan | LOC ] beat [ Syria | LOC ] in the [ Asian Cup | MISC ] .</s>

The markup adds exactly ``"[ "`` before a mention and ``" | LABEL ]"`` after it, so the output minus its
markup is the input, character for character, and each mention's character offsets in the input come
straight out of the parse. Nested mentions nest: ``[ [ IL-2 | protein ] gene | DNA ]`` (crossing spans
cannot be written and are dropped from training targets). Brackets in the text need no escaping: a
mention ends only at ``" | LABEL ]"`` (an opener ``"[ "`` is markup only when a closer matches it,
innermost first); unmatched openers and closers are literal text. When the stripped output is not
the input (the model changed the text), the (label, mention) strings are returned without offsets
and the aligner finds them, as for PaDeLLM.

Decoding goes through a ``generate`` callable (:data:`GenerateFn`); :func:`hf_greedy_generate` is
batched greedy decoding on transformers' KV cache, and another engine can be plugged in with the same
signature. Results are :class:`~spacy_padellm.decoding.dynamic.DocResult` objects (subclassed to carry the
autoregressive counters; mentions with known offsets are :class:`LocatedMention`), so ``output.py``'s
path (align, de-duplicate, write) applies unchanged.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..decoding.counts import final_logits
from ..decoding.types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ..text.protocol import TrainingExample, tokenizer_bos_ids

__all__ = [
    "PROTOCOLS",
    "AUTOREG_PROTOCOLS",
    "AutoRegTemplate",
    "AUTOREG_TEMPLATES",
    "get_autoreg_template",
    "Sentence",
    "group_records",
    "locate_mentions",
    "struct_target",
    "aug_target",
    "parse_struct",
    "parse_aug",
    "ParsedOutput",
    "AutoRegEncoder",
    "LocatedMention",
    "AutoRegResult",
    "AutoRegDecoder",
    "GenerateFn",
    "hf_greedy_generate",
]

PROTOCOLS = ("padellm", "autoreg_struct", "autoreg_aug")
AUTOREG_PROTOCOLS = ("autoreg_struct", "autoreg_aug")

OPEN = "[ "  # before a mention
MID = " | "  # between the mention and its label
CLOSE = " ]"  # after the label

#: generate(prompts, *, max_new_tokens) -> [(generated ids without EOS, sum of log-probs, EOS reached)]
GenerateFn = Callable[..., List[Tuple[List[int], float, bool]]]


# --- Templates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoRegTemplate:
    """The text pieces of the two autoregressive protocols.

    ``struct_prompt`` and ``aug_prompt`` hold ``{text}``; in AutoRegStruct output a line is
    ``LABEL + label_sep + mentions joined by mention_sep``, lines joined by newlines.
    """

    struct_prompt: str = "text:\n{text}\nentities:\n"
    aug_prompt: str = "text:\n{text}\nannotated text:\n"
    label_sep: str = ": "
    mention_sep: str = "; "

    def __post_init__(self) -> None:
        from ..text.protocol import TemplateError

        for name in ("struct_prompt", "aug_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TemplateError(f"Autoreg template piece '{name}' must be a string")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
            except ValueError as err:
                raise TemplateError(f"Autoreg template piece '{name}' is not a valid format string: {err}") from None
            if fields != {"text"}:
                raise TemplateError(f"Autoreg template piece '{name}' ({value!r}) must have the one slot {{text}}")
        for name in ("label_sep", "mention_sep"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise TemplateError(f"Autoreg template piece '{name}' must be a non-blank string without newlines")

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, str]) -> "AutoRegTemplate":
        from ..text.protocol import TemplateError

        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise TemplateError(f"Unknown autoreg template piece(s): {sorted(unknown)}; "
                                f"expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


AUTOREG_TEMPLATES: Dict[str, AutoRegTemplate] = {
    "en": AutoRegTemplate(),
    "zh": AutoRegTemplate(struct_prompt="文本：\n{text}\n实体：\n", aug_prompt="文本：\n{text}\n标注文本：\n",
                          label_sep="：", mention_sep="；"),
}


def get_autoreg_template(spec: Any) -> AutoRegTemplate:
    """An AutoRegTemplate from a name in AUTOREG_TEMPLATES ("en", "zh"), a dict of pieces, or itself."""
    from ..text.protocol import TemplateError

    if isinstance(spec, AutoRegTemplate):
        return spec
    if spec is None:
        return AUTOREG_TEMPLATES["en"]
    if isinstance(spec, str):
        if spec not in AUTOREG_TEMPLATES:
            raise TemplateError(f"Unknown autoreg template name {spec!r}; choose one of {sorted(AUTOREG_TEMPLATES)}")
        return AUTOREG_TEMPLATES[spec]
    if isinstance(spec, dict):
        return AutoRegTemplate.from_dict(dict(spec))
    raise TemplateError(f"Cannot build an autoreg template from {type(spec).__name__}")


# --- Training data ---------------------------------------------------------------------------------


@dataclass
class Sentence:
    """One training sentence: its text, (label, mention) pairs (reading order within a label), and the
    character spans (start, end, label) when they are known exactly (training from a DocBin)."""

    text: str
    mentions: List[Tuple[str, str]] = field(default_factory=list)
    spans: Optional[List[Tuple[int, int, str]]] = None


def group_records(records: Iterable[TrainingExample]) -> List[Sentence]:
    """Sentences from the per-(label, k) records of a ``.padellm.jsonl`` file, in file order.

    ``convert`` writes, for each doc, one record per (label, k) (or one count-0 record per empty label),
    so a text repeats once per label. Records are grouped by text; a (label, k) that the open group of
    that text already has starts a new sentence (the same text occurring again as another doc).
    """
    groups: List[Tuple[str, Dict[str, Dict[int, str]]]] = []
    open_: Dict[str, int] = {}
    for rec in records:
        g = open_.get(rec.text)
        key_k = rec.k if rec.count > 0 else 0
        if g is None or key_k in groups[g][1].get(rec.label, {}):
            g = len(groups)
            groups.append((rec.text, {}))
            open_[rec.text] = g
        groups[g][1].setdefault(rec.label, {})[key_k] = rec.mention
    sentences = []
    for text, by_label in groups:
        mentions = [(label, by_k[k]) for label, by_k in by_label.items() for k in sorted(by_k) if k > 0]
        sentences.append(Sentence(text, mentions))
    return sentences


def _on_word_bounds(text: str, start: int, end: int) -> bool:
    return (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum())


def locate_mentions(text: str, mentions: Sequence[Tuple[str, str]]) -> Tuple[List[Tuple[int, int, str]], int]:
    """Character spans for (label, mention) pairs listed in reading order within each label.

    The k-th mention of a label takes the next occurrence of its string after the label's previous
    mention, preferring occurrences on word boundaries and not yet taken by another label. Returns
    (spans, number of mentions not found in the text).
    """
    taken_any: set = set()
    last: Dict[str, int] = {}
    used: Dict[str, set] = {}
    spans: List[Tuple[int, int, str]] = []
    missing = 0
    for label, mention in mentions:
        if not mention:
            missing += 1
            continue
        occ = []
        pos = text.find(mention)
        while pos != -1:
            occ.append((pos, pos + len(mention)))
            pos = text.find(mention, pos + 1)
        mine = used.setdefault(label, set())
        free = [o for o in occ if o not in mine]
        if not free:
            missing += 1
            continue

        def rank(o):
            return (o[0] <= last.get(label, -1), not _on_word_bounds(text, *o), o in taken_any, o[0])

        chosen = min(free, key=rank)
        mine.add(chosen)
        taken_any.add(chosen)
        last[label] = chosen[0]
        spans.append((chosen[0], chosen[1], label))
    return spans, missing


def struct_target(mentions: Sequence[Tuple[str, str]], labels: Sequence[str],
                  template: AutoRegTemplate = AUTOREG_TEMPLATES["en"]) -> str:
    """The AutoRegStruct output string (EOS not included): one line per label with mentions."""
    by_label: Dict[str, List[str]] = {}
    for label, mention in mentions:
        if label not in labels:
            raise ValueError(f"Mention {mention!r} has label {label!r}, which is not in the label set {list(labels)}")
        by_label.setdefault(label, []).append(mention)
    lines = [label + template.label_sep + template.mention_sep.join(by_label[label])
             for label in labels if by_label.get(label)]
    return "\n".join(lines)


def _nestable(spans: Sequence[Tuple[int, int, str]]) -> Tuple[List[Tuple[int, int, str]], int]:
    """Spans without crossings (outer first); crossing and empty spans are dropped and counted."""
    kept: List[Tuple[int, int, str]] = []
    dropped = 0
    for s in sorted(dict.fromkeys(spans), key=lambda s: (s[0], -s[1])):
        if s[1] <= s[0] or any(a[0] < s[0] < a[1] < s[1] or s[0] < a[0] < s[1] < a[1] for a in kept):
            dropped += 1
            continue
        kept.append(s)
    return kept, dropped


def aug_target(text: str, spans: Sequence[Tuple[int, int, str]]) -> Tuple[str, int]:
    """The AutoRegAug output string (EOS not included) for character spans (start, end, label), and the
    number of spans dropped because they cross another one (or are empty)."""
    kept, dropped = _nestable(spans)
    opens: Dict[int, List[int]] = {}
    closes: Dict[int, List[int]] = {}
    for i, (start, end, _) in enumerate(kept):  # kept is outer-first: open in this order, close in reverse
        opens.setdefault(start, []).append(i)
        closes.setdefault(end, []).append(i)
    out: List[str] = []
    for pos in range(len(text) + 1):
        for i in sorted(closes.get(pos, ()), reverse=True):
            out.append(MID + kept[i][2] + CLOSE)
        for _ in opens.get(pos, ()):
            out.append(OPEN)
        if pos < len(text):
            out.append(text[pos])
    return "".join(out), dropped


# --- Parsing ---------------------------------------------------------------------------------------


@dataclass
class ParsedOutput:
    """What a parser found in one output.

    ``mentions`` are (label, mention, start, end) in output order; start/end are character offsets in
    the input text, or None when they are not known (AutoRegStruct, or an AutoRegAug output whose
    text differs from the input). ``unparsable``: struct lines without a label separator, aug markup
    that matches nothing (stray openers/closers) or encloses nothing; ``unknown_labels``: mentions
    (aug) or lines (struct) under a label not in ``labels``, dropped; ``text_mismatch``: the aug output
    minus its markup is not the input (offsets unknown, strings aligned instead).
    """

    mentions: List[Tuple[str, str, Optional[int], Optional[int]]] = field(default_factory=list)
    unparsable: int = 0
    unknown_labels: int = 0
    text_mismatch: bool = False


_LABEL_SEPS = re.compile(r"[:：]")


def parse_struct(output: str, labels: Sequence[str], template: AutoRegTemplate = AUTOREG_TEMPLATES["en"],
                 truncated: bool = False) -> ParsedOutput:
    """(label, mention) pairs of an AutoRegStruct output; never raises on garbage.

    A line is ``LABEL: m1; m2``; the label separator may be ASCII or full-width (``:`` / ``：``),
    mentions are split at the template's separator and stripped. Lines of a label outside ``labels``
    are dropped and counted; lines without a separator are counted as unparsable. With
    ``truncated`` (no EOS) the last line, which may be cut, is dropped.
    """
    result = ParsedOutput()
    if not isinstance(output, str):
        result.unparsable += 1
        return result
    wanted = set(labels)
    lines = output.split("\n")
    if truncated and lines:
        lines = lines[:-1]
    sep = template.mention_sep
    known = sorted(wanted, key=len, reverse=True)  # a label that itself holds a colon is read whole
    for line in lines:
        if not line.strip():
            continue
        body = None
        stripped = line.lstrip()
        for label in known:
            if stripped.startswith(label):
                match = _LABEL_SEPS.match(stripped[len(label):].lstrip())
                if match is not None:
                    body = stripped[len(label):].lstrip()[match.end():]
                    break
        if body is None:
            match = _LABEL_SEPS.search(line)
            if match is None:
                result.unparsable += 1
                continue
            label = line[: match.start()].strip()
            if label not in wanted:
                result.unknown_labels += 1
                continue
            body = line[match.end():]
        for piece in body.split(sep):
            mention = piece.strip()
            if mention:
                result.mentions.append((label, mention, None, None))
    return result


def _closer_regex(labels: Sequence[str], any_label: bool) -> "re.Pattern[str]":
    alts = [re.escape(label) for label in sorted(set(labels), key=len, reverse=True) if label]
    if any_label:
        alts.append(r"[^\s\[\]|]+")
    if not alts:
        alts = [r"(?!)"]
    return re.compile(re.escape(MID) + "(" + "|".join(alts) + ")" + re.escape(CLOSE))


def _scan_aug(output: str, labels: Sequence[str], wanted: set, any_label: bool, drop_unmatched_opens: bool):
    """One reading: (stripped text, [(label, start, end)], markup kept as literal text, markup dropped or
    enclosing nothing, mentions of unknown labels)."""
    closer = _closer_regex(labels, any_label)
    events: List[Tuple[str, str]] = []  # (kind, payload) kind: text | open | close
    i = 0
    buf: List[str] = []
    while i < len(output):
        if output.startswith(OPEN, i):
            if buf:
                events.append(("text", "".join(buf)))
                buf = []
            events.append(("open", OPEN))
            i += len(OPEN)
            continue
        match = closer.match(output, i)
        if match is not None:
            if buf:
                events.append(("text", "".join(buf)))
                buf = []
            events.append(("close", match.group(1), match.group(0)))  # type: ignore[arg-type]
            i = match.end()
            continue
        buf.append(output[i])
        i += 1
    if buf:
        events.append(("text", "".join(buf)))
    # Match openers and closers, innermost first.
    stack: List[int] = []
    partner: Dict[int, int] = {}
    for idx, ev in enumerate(events):
        if ev[0] == "open":
            stack.append(idx)
        elif ev[0] == "close" and stack:
            partner[stack.pop()] = idx
            partner[idx] = -1
    literal = 0
    unparsable = 0
    unknown = 0
    pieces: List[str] = []
    pos = 0
    starts: Dict[int, int] = {}
    found: List[Tuple[str, int, int]] = []
    for idx, ev in enumerate(events):
        kind = ev[0]
        if kind == "text":
            pieces.append(ev[1])
            pos += len(ev[1])
        elif kind == "open":
            if idx in partner:
                starts[partner[idx]] = pos
            elif drop_unmatched_opens:
                unparsable += 1
            else:
                literal += 1
                pieces.append(ev[1])
                pos += len(ev[1])
        else:
            if idx in partner:
                label, start = ev[1], starts[idx]
                if label not in wanted:
                    unknown += 1
                elif start == pos:
                    unparsable += 1
                else:
                    found.append((label, start, pos))
            else:  # a closer without an opener: literal text
                literal += 1
                pieces.append(ev[2])  # type: ignore[misc]
                pos += len(ev[2])  # type: ignore[misc]
    return "".join(pieces), found, literal, unparsable, unknown


def parse_aug(output: str, text: str, labels: Sequence[str], truncated: bool = False) -> ParsedOutput:
    """(label, mention, start, end) of an AutoRegAug output; never raises on garbage.

    Offsets are exact when the output minus its markup is ``text`` (or, with ``truncated``, a prefix
    of it); otherwise they are None and ``text_mismatch`` is set. Mentions under a label outside
    ``labels`` are dropped and counted. Several readings are tried (closers of any label or of known
    labels only; unmatched openers as literal text or as markup of a cut mention) and the first whose
    text matches the input wins.
    """
    result = ParsedOutput()
    if not isinstance(output, str) or not isinstance(text, str):
        result.unparsable += 1
        return result
    wanted = set(labels)

    def matches(stripped: str) -> bool:
        return stripped == text or (truncated and text.startswith(stripped))

    candidates = [output]
    if truncated:  # the budget may have cut an opener or a closer: read without the cut piece as well
        pieces = [OPEN] + [MID + label + CLOSE for label in labels]
        longest = max(len(p) for p in pieces)
        for j in range(1, min(len(output), longest) + 1):
            tail = output[-j:]
            if any(p.startswith(tail) for p in pieces):
                candidates.append(output[:-j])
        if MID in output:
            candidates.append(output[: output.rindex(MID)])
    chosen = None
    first = None
    for candidate in candidates:
        for any_label in (True, False):
            for drop in (False, True):
                reading = _scan_aug(candidate, labels, wanted, any_label, drop)
                first = first or reading
                if matches(reading[0]):
                    chosen = reading
                    break
            if chosen is not None:
                break
        if chosen is not None:
            break
    stripped, found, literal, unparsable, unknown = chosen or first
    exact = chosen is not None
    # Openers and closers read as literal text are the input's own brackets when the text matches.
    result.unparsable = unparsable + (0 if exact else literal)
    result.unknown_labels = unknown
    result.text_mismatch = not exact
    for label, start, end in sorted(found, key=lambda f: (f[1], -f[2])):
        mention = stripped[start:end]
        if not mention.strip():
            result.unparsable += 1
            continue
        if exact:
            # Offsets of the mention without surrounding whitespace.
            lead = len(mention) - len(mention.lstrip())
            trail = len(mention) - len(mention.rstrip())
            result.mentions.append((label, mention.strip(), start + lead, end - trail))
        else:
            result.mentions.append((label, mention.strip(), None, None))
    return result


# --- Token ids -------------------------------------------------------------------------------------


class AutoRegEncoder:
    """Token ids of the autoregressive protocols, with the same piece discipline as PromptEncoder: the
    prompt and the target are encoded separately, EOS is appended to the target. ``bos``: as for
    PromptEncoder (None: as the tokenizer does)."""

    def __init__(self, tokenizer, protocol: str, template: Any = None, bos: Optional[bool] = None):
        if protocol not in AUTOREG_PROTOCOLS:
            raise ValueError(f"Unknown autoregressive protocol {protocol!r}; expected one of {AUTOREG_PROTOCOLS}")
        self.tokenizer = tokenizer
        self.protocol = protocol
        self.template = get_autoreg_template(template)
        self.eos_id: int = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("The tokenizer has no EOS token; the autoregressive protocols need one")
        self.bos_ids: List[int] = tokenizer_bos_ids(tokenizer, bos)

    def _encode(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def prompt(self, text: str) -> List[int]:
        piece = self.template.struct_prompt if self.protocol == "autoreg_struct" else self.template.aug_prompt
        return self.bos_ids + self._encode(piece.format(text=text))

    def target_text(self, sentence: Sentence, labels: Sequence[str]) -> Tuple[str, int]:
        """The target string of a sentence, and the number of its mentions that could not be written
        (aug: not found in the text, or crossing another span)."""
        if self.protocol == "autoreg_struct":
            if sentence.spans is not None:
                mentions = [(label, sentence.text[s:e]) for s, e, label in sorted(sentence.spans)]
            else:
                mentions = list(sentence.mentions)
            return struct_target(mentions, labels, self.template), 0
        spans, missing = ((list(sentence.spans), 0) if sentence.spans is not None
                          else locate_mentions(sentence.text, sentence.mentions))
        unknown = sorted({label for _, _, label in spans} - set(labels))
        if unknown:
            raise ValueError(f"Mentions with labels {unknown} are not in the label set {list(labels)}")
        target, dropped = aug_target(sentence.text, spans)
        return target, missing + dropped

    def target(self, sentence: Sentence, labels: Sequence[str]) -> Tuple[List[int], int]:
        """Target ids (EOS appended) of a training sentence, and its mentions that could not be written."""
        target, lost = self.target_text(sentence, labels)
        return self._encode(target) + [self.eos_id], lost

    def example(self, sentence: Sentence, labels: Sequence[str]) -> Tuple[List[int], List[int]]:
        """(prompt ids, target ids) of a training sentence; the loss covers the target only."""
        return self.prompt(sentence.text), self.target(sentence, labels)[0]

    def text_length(self, text: str) -> int:
        return len(self._encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


# --- Decoding --------------------------------------------------------------------------------------


@dataclass
class LocatedMention(MentionPrediction):
    """A mention whose character offsets in the decoded text are known (AutoRegAug)."""

    start: Optional[int] = None
    end: Optional[int] = None


@dataclass
class AutoRegResult(DocResult):
    """DocResult with the autoregressive counters (see :class:`ParsedOutput`) and the raw output."""

    unparsable_outputs: int = 0
    unknown_labels: int = 0
    truncated_outputs: int = 0  # outputs that hit the token budget without EOS (parsed as far as they go)
    rewrite_mismatches: int = 0  # aug outputs whose text is not the input (strings aligned instead)
    output: str = ""


class AutoRegDecoder:
    """Decode documents with one autoregressive output each, through a ``generate`` callable.

    ``max_new_tokens`` bounds an AutoRegStruct output; an AutoRegAug output, which copies the text,
    may take the text's token count plus ``max_new_tokens``. Every mention's probability is the
    probability of the whole output (the generate boundary returns one log-prob sum per sequence).
    """

    def __init__(self, encoder: AutoRegEncoder, generate: GenerateFn, *, max_new_tokens: int = 256):
        self.encoder = encoder
        self.generate = generate
        self.max_new_tokens = max(1, int(max_new_tokens))
        self.stats = DecoderStats()

    @property
    def protocol(self) -> str:
        return self.encoder.protocol

    def _budget(self, text: str) -> int:
        if self.protocol == "autoreg_aug":
            return self.encoder.text_length(text) + self.max_new_tokens
        return self.max_new_tokens

    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        results: List[DocResult] = [AutoRegResult() for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.labels and r.text.strip()]
        if not todo:
            return results
        prompts = [self.encoder.prompt(requests[i].text) for i in todo]
        budgets = [self._budget(requests[i].text) for i in todo]
        outputs = self.generate(prompts, max_new_tokens=max(budgets))
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        longest = 0
        for i, prompt, budget, (ids, logprob, done) in zip(todo, prompts, budgets, outputs):
            ids = list(ids)
            if len(ids) > budget:  # generated for a longer neighbour: cut to this doc's own budget
                ids, done = ids[:budget], False
            longest = max(longest, len(ids) + (1 if done else 0))
            self.stats.generated_tokens += len(ids) + (1 if done else 0)
            self._fill(results[i], requests[i], ids, float(logprob), bool(done))
        self.stats.forward_passes += 1 + longest
        return results

    def _fill(self, result: AutoRegResult, request: DocRequest, ids: List[int], logprob: float, done: bool) -> None:
        text = self.encoder.decode(ids)
        result.output = text
        if not done:
            result.truncated_outputs += 1
        if self.protocol == "autoreg_struct":
            parsed = parse_struct(text, request.labels, self.encoder.template, truncated=not done)
        else:
            parsed = parse_aug(text, request.text, request.labels, truncated=not done)
            result.rewrite_mismatches += int(parsed.text_mismatch)
        result.unparsable_outputs += parsed.unparsable
        result.unknown_labels += parsed.unknown_labels
        prob = math.exp(logprob) if logprob > -700 else 0.0
        counts: Dict[str, int] = {}
        for label, _, _, _ in parsed.mentions:
            counts[label] = counts.get(label, 0) + 1
        seen: Dict[str, int] = {}
        for label, mention, start, end in parsed.mentions:
            seen[label] = seen.get(label, 0) + 1
            result.predictions.append(LocatedMention(label, seen[label], mention, prob, counts[label], prob,
                                                     start=start, end=end))
        result.counts = {label: counts.get(label, 0) for label in request.labels}


def hf_greedy_generate(model, prompts: Sequence[Sequence[int]], *, eos_id: int, max_new_tokens: int,
                       max_batch_rows: int = 64) -> List[Tuple[List[int], float, bool]]:
    """Batched greedy decoding with a transformers causal LM and its KV cache.

    Prompts of different lengths share a batch right-padded, with padding masked and explicit position
    ids, so a prompt's result does not depend on its neighbours; finished rows (EOS) leave the batch.
    Returns, per prompt, (generated ids without EOS, sum of the log-probs of the generated tokens,
    EOS included, whether EOS was reached).
    """
    import torch

    results: List[Optional[Tuple[List[int], float, bool]]] = [None] * len(prompts)
    if max_new_tokens < 1:
        return [([], 0.0, False) for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    rows = max(1, int(max_batch_rows))
    with torch.inference_mode():
        for start in range(0, len(order), rows):
            chunk = order[start : start + rows]
            for i, out in zip(chunk, _greedy_chunk(model, [list(prompts[i]) for i in chunk], eos_id, max_new_tokens)):
                results[i] = out
    return results  # type: ignore[return-value]


def _greedy_chunk(model, prompts: List[List[int]], eos_id: int, max_new_tokens: int):
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    base = model.get_decoder()
    head = model.get_output_embeddings()
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    n = len(prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    if int(lengths.min()) < 1:
        raise ValueError("hf_greedy_generate: every prompt needs at least one token")
    width = int(lengths.max())
    ids = torch.full((n, width), eos_id, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p, dtype=torch.long, device=device)
    steps = torch.arange(width, device=device)
    mask = (steps[None, :] < lengths[:, None]).long()
    positions = torch.minimum(steps[None, :], (lengths - 1)[:, None])
    cache = DynamicCache()
    out = base(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    cache = out.past_key_values
    hidden = out.last_hidden_state[torch.arange(n, device=device), lengths - 1]
    next_pos = lengths.clone()
    active = list(range(n))
    gen: List[List[int]] = [[] for _ in range(n)]
    lp = [0.0] * n
    done = [False] * n
    for step in range(max_new_tokens):
        logits = final_logits(head(hidden).float(), softcap)
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logp.argmax(dim=-1)
        tok_lp = logp.gather(1, tokens[:, None]).squeeze(1)
        keep = []
        for j, (row, tok, value) in enumerate(zip(active, tokens.tolist(), tok_lp.tolist())):
            lp[row] += value
            if tok == eos_id:
                done[row] = True
            else:
                gen[row].append(tok)
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            sel = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(sel)
            mask, next_pos = mask.index_select(0, sel), next_pos.index_select(0, sel)
            tokens = tokens.index_select(0, sel)
            active = [active[j] for j in keep]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
        out = base(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                   past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
        next_pos = next_pos + 1
    return [(gen[i], lp[i], done[i]) for i in range(n)]
