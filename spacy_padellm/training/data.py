"""The training data: reading examples, tokenising them, and length-bucketed batches.

The PaDeLLM protocol trains on (label, k) examples (``text/protocol.py``), tokenised with the same
``PromptEncoder`` the decoder uses; the autoregressive protocols train on whole sentences
(``baselines/autoreg.py``), grouped from the same converted files. Either way an item is a pair
(input ids, labels) with labels -100 on the prompt, so the loss covers the target only; with
``[data] shared_prompts`` an item is a text's examples packed into one sequence (``packing.PackedItem``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..text.protocol import PromptEncoder, Template, TrainingExample, get_template
from .packing import PackedItem, collate_packed, pack
from .settings import TrainConfigError, TrainSettings

if TYPE_CHECKING:
    from ..baselines import AutoRegEncoder, Sentence

__all__ = ["read_examples", "read_sentences", "tokenize_examples", "packed_items", "tokenize_sentences",
           "length_bucketed_batches", "collate", "Batch", "item_length", "item_examples", "item_targets",
           "read_train_data", "read_dev_docs", "encode_train_data", "EncodedData"]

Item = Tuple[List[int], List[int]]  # (input ids, labels), labels -100 on the prompt


@dataclass
class EncodedData:
    """The tokenised training items and what the model folder must record about how they were made."""

    items: List[Any]  # Item pairs, or PackedItem with shared prompts
    labels: List[str]
    template: Optional[Template]  # the PaDeLLM prompt template; None for the autoregressive protocols
    ar_template: Any  # the autoregressive template; None for the PaDeLLM protocol
    bos_ids: List[int]  # what the prompts started with

    @property
    def examples(self) -> int:
        return sum(item_examples(item) for item in self.items)


def read_examples(path: str) -> List[TrainingExample]:
    """Training examples from a ``.padellm.jsonl`` file written by the converter."""
    examples = []
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                examples.append(TrainingExample(data["text"], data["label"], int(data["count"]), int(data["k"]),
                                                data["mention"]))
            except (ValueError, KeyError, TypeError) as err:
                raise TrainConfigError(f"{path}:{line_no}: not a PaDeLLM training example ({err})") from None
    if not examples:
        raise TrainConfigError(f"{path} holds no training examples")
    return examples


def read_sentences(path: str) -> List["Sentence"]:
    """Training sentences for the autoregressive protocols from a ``.padellm.jsonl`` file: its per-(label, k)
    records grouped by text, in file order (see :func:`~spacy_padellm.baselines.autoreg.group_records`)."""
    from ..baselines import group_records

    return group_records(read_examples(path))


def tokenize_sentences(encoder: "AutoRegEncoder", sentences: Sequence["Sentence"], labels: Sequence[str],
                       max_length: int = 512) -> Tuple[List[Tuple[List[int], List[int]]], int]:
    """(input ids, labels) pairs of the autoregressive protocols, labels -100 on the prompt; over-long
    sentences are dropped. Also returns how many mentions could not be written into an AutoRegAug
    target (not found in the text, or crossing another mention)."""
    out = []
    unwritable = 0
    for sentence in sentences:
        target, lost = encoder.target(sentence, labels)
        unwritable += lost
        prompt = encoder.prompt(sentence.text)
        if len(prompt) + len(target) > max_length:
            continue
        out.append((prompt + target, [-100] * len(prompt) + target))
    return out, unwritable


def _encoded(encoder: PromptEncoder, examples: Sequence[TrainingExample], max_length: int,
             nonzero_repeat: int) -> Iterator[Tuple[TrainingExample, List[int], List[int], int]]:
    """(example, prompt ids, target ids, times) of each example that fits ``max_length``; an example whose count is
    not 0 is taken ``nonzero_repeat`` times (more weight on the counts the model under-writes)."""
    for ex in examples:
        prompt, target = encoder.example(ex)
        if len(prompt) + len(target) <= max_length:
            yield ex, prompt, target, nonzero_repeat if ex.count > 0 else 1


def tokenize_examples(encoder: PromptEncoder, examples: Sequence[TrainingExample],
                      max_length: int = 512, nonzero_repeat: int = 1) -> List[Tuple[List[int], List[int]]]:
    """(input ids, labels) pairs; labels are -100 on the prompt. Over-long examples are dropped; an example
    whose count is not 0 appears ``nonzero_repeat`` times."""
    out = []
    for _, prompt, target, times in _encoded(encoder, examples, max_length, nonzero_repeat):
        out.extend([(prompt + target, [-100] * len(prompt) + target)] * times)
    return out


def packed_items(encoder: PromptEncoder, examples: Sequence[TrainingExample], max_length: int = 512,
                 nonzero_repeat: int = 1) -> List[PackedItem]:
    """The examples packed text by text (``packing.pack``), in the order the texts first come. The examples of one
    text need not be next to each other (a sample of them); a text that comes several times is packed once per time
    (an example joins the first packing of its text that lacks its label and k), so that each occurrence weighs in
    its batch as it would one by one. As in ``tokenize_examples``, an example longer than ``max_length`` is dropped
    and one whose count is not 0 appears ``nonzero_repeat`` times (as that many branches)."""
    groups: List[Tuple[set, List[Tuple[List[int], List[int]]]]] = []
    by_text: Dict[str, List[int]] = {}
    for ex, prompt, target, times in _encoded(encoder, examples, max_length, nonzero_repeat):
        key = (ex.label, ex.k)
        own = by_text.setdefault(ex.text, [])
        g = next((g for g in own if key not in groups[g][0]), None)
        if g is None:
            g = len(groups)
            groups.append((set(), []))
            own.append(g)
        groups[g][0].add(key)
        groups[g][1].extend([(prompt, target)] * times)
    return [pack(pairs) for _, pairs in groups]


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                            bucket_factor: int = 50, sizes: Optional[Sequence[int]] = None) -> List[List[int]]:
    """Shuffled batches of indices of similar length (sorted within shuffled mega-batches) holding ``batch_size``
    examples each (the last of a mega-batch fewer), an item counting ``sizes[i]`` examples (default 1). Items of
    several examples go into a batch while that takes its count nearer ``batch_size`` than stopping would."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: List[List[int]] = []
    mega = batch_size * bucket_factor
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: lengths[i])
        batch, n = [], 0
        for i in chunk:
            size = 1 if sizes is None else sizes[i]
            if batch and n + size - batch_size > batch_size - n:  # nearer to batch_size without it
                batches.append(batch)
                batch, n = [], 0
            batch.append(i)
            n += size
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def item_length(item) -> int:
    """How many tokens a training item's sequence holds."""
    return len(item.ids if isinstance(item, PackedItem) else item[0])


def item_examples(item) -> int:
    """How many examples a training item holds."""
    return item.examples if isinstance(item, PackedItem) else 1


def item_targets(item) -> int:
    """How many target tokens a training item trains."""
    labels = item.targets if isinstance(item, PackedItem) else item[1]
    return sum(1 for x in labels if x != -100)


@dataclass
class Batch:
    """A batch as the model takes it: ``targets[b, j]`` is the token position j of row b is trained to predict
    (-100: none); ``mask`` is (B, T) for pairs, or (B, 1, T, T) booleans with ``positions`` for packed items."""

    input_ids: Any
    mask: Any
    positions: Any
    targets: Any
    tokens: int  # the real tokens, padding left out

    def to(self, device) -> "Batch":
        move = (lambda t: None if t is None else t.to(device))
        return Batch(move(self.input_ids), move(self.mask), move(self.positions), move(self.targets), self.tokens)


def collate(items: Sequence[Any], pad_id: int) -> Batch:
    """The tensors of a batch of items (all pairs or all packed items), padded to its longest item."""
    import torch

    if isinstance(items[0], PackedItem):
        return Batch(*collate_packed(items, pad_id))
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    targets = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(items):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        targets[i, : len(lab) - 1] = torch.tensor(lab[1:])  # position j predicts the label of position j + 1
        mask[i, : len(ids)] = 1
    return Batch(input_ids, mask, None, targets, int(mask.sum()))


def _read_padellm_examples(settings: TrainSettings, nlp) -> Tuple[List[TrainingExample], List[str]]:
    """(label, k) examples for the PaDeLLM protocol: from a DocBin's entities, or a ``.padellm.jsonl`` file."""
    path = settings.train
    if path.endswith(".spacy"):
        from spacy.tokens import DocBin

        from .convert import docs_to_examples

        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        labels = settings.labels or sorted({e.label_ for d in docs for e in d.ents})
        examples = docs_to_examples(docs, labels)
    else:
        examples = read_examples(path)
        labels = settings.labels or sorted({e.label for e in examples})
    unknown = sorted({e.label for e in examples} - set(labels))
    if unknown:
        raise TrainConfigError(f"Training examples use labels {unknown} that are not in [data] labels {labels}")
    return examples, list(labels)


def _read_autoreg_sentences(settings: TrainSettings, nlp) -> Tuple[List["Sentence"], List[str]]:
    """Sentences for the autoregressive protocols: from a DocBin with exact spans, else grouped from the
    ``.padellm.jsonl`` records."""
    from ..baselines import Sentence

    path = settings.train
    if path.endswith(".spacy"):
        from spacy.tokens import DocBin

        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        sentences = [Sentence(d.text, [(e.label_, e.text) for e in d.ents],
                              [(e.start_char, e.end_char, e.label_) for e in d.ents]) for d in docs]
    else:
        sentences = read_sentences(path)
    found = sorted({label for s in sentences for label, _ in s.mentions})
    labels = settings.labels or found
    unknown = sorted(set(found) - set(labels))
    if unknown:
        raise TrainConfigError(f"Training examples use labels {unknown} that are not in [data] labels {labels}")
    return sentences, list(labels)


def read_train_data(settings: TrainSettings, nlp) -> Tuple[List[Any], List[str]]:
    """(examples or sentences, labels) of the training file, as the protocol trains on them."""
    if settings.autoreg:
        return _read_autoreg_sentences(settings, nlp)
    return _read_padellm_examples(settings, nlp)


def read_dev_docs(settings: TrainSettings, nlp, labels: Sequence[str]):
    """The gold dev docs (at most ``max_dev_docs``), or None without a dev file; their labels must be
    among ``labels``, and a ``spans_key`` must name a span group some dev doc has."""
    if not settings.dev:
        return None
    from spacy.tokens import DocBin

    dev_docs = list(DocBin().from_disk(settings.dev).get_docs(nlp.vocab))
    dev_labels = {e.label_ for d in dev_docs for e in d.ents}
    if settings.spans_key:
        missing = sum(settings.spans_key not in d.spans for d in dev_docs)
        if dev_docs and missing == len(dev_docs):
            raise TrainConfigError(f"[data] spans_key = {settings.spans_key!r}, but no dev doc has that span group "
                                   f"(convert the dev set with --spans-key {settings.spans_key})")
        dev_labels |= {s.label_ for d in dev_docs if settings.spans_key in d.spans for s in d.spans[settings.spans_key]}
    extra = sorted(dev_labels - set(labels))
    if extra:
        raise TrainConfigError(f"The dev set has labels {extra} that the training data lacks ({labels})")
    if settings.max_dev_docs:
        dev_docs = dev_docs[: settings.max_dev_docs]
    return dev_docs


def encode_train_data(settings: TrainSettings, tokenizer, examples: Sequence[Any], labels: List[str],
                      log: Callable[[str], None]) -> EncodedData:
    """Tokenise the examples (or sentences) with the protocol's encoder; over-long ones are dropped and
    none left is an error."""
    if settings.autoreg:
        from ..baselines import AutoRegEncoder, get_autoreg_template

        template = None
        ar_template = get_autoreg_template(settings.template_spec)
        ar_encoder = AutoRegEncoder(tokenizer, settings.protocol, ar_template)
        bos_ids = ar_encoder.bos_ids
        items, unwritable = tokenize_sentences(ar_encoder, examples, labels, settings.max_length)
        if unwritable:
            log(f"{unwritable} mention(s) could not be written into {settings.protocol} targets "
                "(not found in the text, or crossing another mention)")
    else:
        template = get_template(settings.template_spec)
        ar_template = None
        encoder = PromptEncoder(tokenizer, template)
        bos_ids = encoder.bos_ids
        pack = packed_items if settings.shared_prompts else tokenize_examples
        items = pack(encoder, examples, settings.max_length, settings.nonzero_repeat)
    if not items:
        raise TrainConfigError(f"No training example fits max_length={settings.max_length}")
    return EncodedData(items, labels, template, ar_template, bos_ids)
