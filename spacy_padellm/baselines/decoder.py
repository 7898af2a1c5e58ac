"""Decoding with the autoregressive protocols: token ids (:class:`AutoRegEncoder`), the decoder of one
output per document (:class:`AutoRegDecoder`) and batched greedy generation on transformers' KV cache
(:func:`hf_greedy_generate`).

Decoding goes through a ``generate`` callable (:data:`GenerateFn`); :func:`hf_greedy_generate` is the
default, and another engine can be plugged in with the same signature. Results are
:class:`~spacy_padellm.decoding.types.DocResult` objects (subclassed to carry the autoregressive
counters; mentions with known offsets are :class:`LocatedMention`), so ``pipeline/output.py``'s path
(align, de-duplicate, write) applies unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..decoding.counts import final_logits
from ..decoding.hf_cache import cache_kwargs, returned_cache
from ..decoding.types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ..text.protocol import tokenizer_bos_ids
from .parse import parse_aug, parse_struct
from .targets import Sentence, aug_target, locate_mentions, struct_target
from .templates import AUTOREG_PROTOCOLS, get_autoreg_template

__all__ = ["AutoRegEncoder", "LocatedMention", "AutoRegResult", "AutoRegDecoder", "GenerateFn",
           "hf_greedy_generate"]

#: generate(prompts, *, max_new_tokens) -> [(generated ids without EOS, sum of log-probs, EOS reached)]
GenerateFn = Callable[..., List[Tuple[List[int], float, bool]]]


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
    out = base(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **cache_kwargs(base, cache))
    cache = returned_cache(out, cache)
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
        out = base(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None], use_cache=True,
                   **cache_kwargs(base, cache))
        cache = returned_cache(out, cache)
        hidden = out.last_hidden_state[:, -1]
        next_pos = next_pos + 1
    return [(gen[i], lp[i], done[i]) for i in range(n)]
