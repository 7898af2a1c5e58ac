"""Plain greedy PaDeLLM decoding, every sequence on its own and without a cache: the ground truth the
engines are tested against, and the cost model of re-encoding the prompt at every step."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .constraints import redecode_plan
from .counts import count_bias_for, read_count, zero_count_token
from .levers import Levers
from .settings import DecodeSettings, limits_of
from .types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ..text.protocol import PromptEncoder, parse_mention

__all__ = ["plain_decode", "PlainDecoder"]



@torch.inference_mode()
def _greedy_no_cache(model, ids: List[int], max_tokens: int, stop, scores=None) -> Tuple[List[int], float, bool, int]:
    """``scores(out, logp)``, when given, returns the scores to take the argmax of (the log-prob added to
    the sequence's stays the model's own)."""
    device = next(model.parameters()).device
    out: List[int] = []
    lp = 0.0
    for _ in range(max_tokens):
        # the causal LM's own logits: a final soft-capping (Gemma) is already applied
        logits = model(input_ids=torch.tensor([ids + out], device=device), use_cache=False).logits[0, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        tok = int(logp.argmax()) if scores is None else int(scores(out, logp).argmax())
        lp += float(logp[tok])
        out.append(tok)
        if stop(tok):
            return out, lp, True, len(out)
    return out, lp, False, len(out)


def plain_decode(model, encoder: PromptEncoder, requests: Sequence[DocRequest],
                 settings: Optional[DecodeSettings] = None, *, stats: Optional[DecoderStats] = None,
                 mention_trie_options: Optional[Dict[str, Any]] = None, **changes: Any) -> List[DocResult]:
    """Greedy PaDeLLM decoding of every sequence on its own, without any cache.

    Slow by design: it is the ground truth for the engine's tests and the reference implementation's
    cost model (the whole prompt is re-encoded for every mention and at every step). ``settings`` (with
    ``changes``) are read as the engines read them: the decode lengths and the levers ``constrain_mentions``,
    ``count_bias`` and ``dedupe_mentions``.
    """
    run = _PlainRun(model, encoder, (settings or DecodeSettings()).replace(**changes),
                    stats if stats is not None else DecoderStats(), mention_trie_options)
    return [run.document(req) for req in requests]


def _count_scores(encoder: PromptEncoder, bias: float):
    """Scores for the count's first token with ``bias`` added to the count "0" (None: no bias)."""
    if not bias:
        return None
    zero = zero_count_token(encoder)

    def scores(out: List[int], logp: torch.Tensor) -> torch.Tensor:
        if out:
            return logp
        biased = logp.clone()
        biased[zero] += bias
        return biased

    return scores


def _mention_scores(trie, eos: int):
    """Scores that allow only the tokens ``trie`` allows after the mention so far (EOS where nothing is)."""
    if trie is None:
        return None

    def scores(out: List[int], logp: torch.Tensor) -> torch.Tensor:
        node = trie.walk(out)
        ids = trie.allowed_ids(node) if node is not None else []
        mask = torch.full_like(logp, float("-inf"))
        mask[torch.tensor(ids or [eos], device=logp.device)] = 0.0
        return logp + mask

    return scores


class _PlainRun:
    def __init__(self, model, encoder: PromptEncoder, settings: DecodeSettings, stats: DecoderStats,
                 trie_options: Optional[Dict[str, Any]]):
        self.model = model
        self.encoder = encoder
        self.settings = settings
        self.levers = Levers.of(settings, trie_options)
        self.stats = stats

    def _greedy(self, ids: List[int], max_tokens: int, stop, scores) -> Tuple[List[int], float, bool]:
        out, lp, done, steps = _greedy_no_cache(self.model, ids, max_tokens, stop, scores)
        self.stats.forward_passes += steps
        self.stats.prompt_tokens += len(ids) * steps
        self.stats.generated_tokens += steps
        return out, lp, done

    def document(self, req: DocRequest) -> DocResult:
        res = DocResult()
        prefix = self.encoder.prefix(req.text)
        trie = self.levers.trie(req.text, self.encoder) if self.levers.constrain_mentions else None
        for label in req.labels:
            self._label(req, res, prefix + self.encoder.label(label), label, trie)
        return res

    def _label(self, req: DocRequest, res: DocResult, prompt: List[int], label: str, trie) -> None:
        enc, s = self.encoder, self.settings
        count_ids, count_lp, _ = self._greedy(prompt, s.max_count_tokens, enc.ends_count,
                                              _count_scores(enc, count_bias_for(self.levers.count_bias, label)))
        n = read_count(enc.tokenizer.decode(count_ids, skip_special_tokens=True), enc, s.max_count, res)
        res.counts[label] = n
        # Mentions follow only a count that ended with its terminator (as in the engine).
        ended = enc.ends_count(count_ids[-1]) and count_ids[-1] != enc.eos_id
        head = prompt + count_ids
        ks = range(1, (n if ended else 0) + 1)
        mentions = {k: self._mention(head, k, trie) for k in ks}
        dropped = self._redecode_repeats(req, res, head, ks, mentions) if self.levers.dedupe_mentions else set()
        for k in ks:
            text, m_lp, done = mentions[k]
            if k in dropped:
                continue
            if not done:
                res.truncated_mentions += 1
                continue
            res.predictions.append(MentionPrediction(label, k, text, math.exp(m_lp), n, math.exp(count_lp)))

    def _mention(self, head: List[int], k: int, trie) -> Tuple[str, float, bool]:
        eos = self.encoder.eos_id
        m_ids, m_lp, done = self._greedy(head + self.encoder.mention_tag(k), self.settings.max_mention_tokens,
                                         lambda t: t == eos, _mention_scores(trie, eos))
        text = parse_mention(self.encoder.tokenizer.decode(m_ids[:-1] if done else m_ids, skip_special_tokens=True))
        return text, m_lp, done

    def _redecode_repeats(self, req: DocRequest, res: DocResult, head: List[int], ks, mentions) -> set:
        """``dedupe_mentions``: decode repeats again away from the strings taken; the ks dropped."""
        dropped: set = set()
        levers = self.levers
        for _ in range(levers.dedupe_rounds):
            again, exclude = redecode_plan(req.text, [(k, mentions[k][0], mentions[k][1]) for k in ks
                                                      if mentions[k][2] and k not in dropped])
            if not again:
                break
            redo_trie = levers.trie(req.text, self.encoder, tuple(sorted(exclude)))
            for k in again:
                mentions[k] = self._mention(head, k, redo_trie)
                res.redecoded_mentions += 1
                if mentions[k][2] and math.exp(mentions[k][1]) < levers.dedupe_min_prob:
                    dropped.add(k)
                    res.redecoded_dropped += 1
        return dropped


class PlainDecoder:
    """``plain_decode`` behind the engines' interface (``decode(requests)``, ``stats``, ``device``): every
    sequence on its own, no KV cache, the whole prompt re-encoded at every step."""

    def __init__(self, model, encoder: PromptEncoder, settings: Optional[DecodeSettings] = None, **changes: Any):
        self.model = model
        self.encoder = encoder
        self.settings = (settings or DecodeSettings()).replace(**changes)
        self.stats = DecoderStats()

    @classmethod
    def like(cls, engine) -> "PlainDecoder":
        """A plain decoder with the same model, prompts and limits as ``engine`` (levers off)."""
        return cls(engine.model, engine.encoder, **limits_of(engine))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        return plain_decode(self.model, self.encoder, requests, self.settings, stats=self.stats)
