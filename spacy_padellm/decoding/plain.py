"""Plain greedy PaDeLLM decoding, every sequence on its own and without a cache: the ground truth the
engines are tested against, and the cost model of re-encoding the prompt at every step."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .constraints import dedupe_plan
from .counts import CountBias, build_trie, count_bias_for, final_logits, read_count, zero_count_token
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
        logits = model(input_ids=torch.tensor([ids + out], device=device), use_cache=False).logits[0, -1].float()
        logits = final_logits(logits, getattr(model.config, "final_logit_softcapping", None))
        logp = torch.log_softmax(logits, dim=-1)
        tok = int(logp.argmax()) if scores is None else int(scores(out, logp).argmax())
        lp += float(logp[tok])
        out.append(tok)
        if stop(tok):
            return out, lp, True, len(out)
    return out, lp, False, len(out)


def plain_decode(
    model,
    encoder: PromptEncoder,
    requests: Sequence[DocRequest],
    *,
    max_count: int = 20,
    max_count_tokens: int = 4,
    max_mention_tokens: int = 40,
    stats: Optional[DecoderStats] = None,
    constrain_mentions: bool = False,
    count_bias: CountBias = 0.0,
    mention_trie_options: Optional[Dict[str, Any]] = None,
    dedupe_mentions: bool = False,
    dedupe_rounds: int = 20,
    dedupe_min_prob: float = 0.005,
) -> List[DocResult]:
    """Greedy PaDeLLM decoding of every sequence on its own, without any cache.

    Slow by design: it is the ground truth for the engine's tests and the reference implementation's
    cost model (the whole prompt is re-encoded for every mention and at every step).
    ``constrain_mentions``, ``count_bias`` and ``dedupe_mentions`` are the engine's options, applied the
    same way.
    """
    stats = stats if stats is not None else DecoderStats()
    eos = encoder.eos_id
    ends_count = encoder.ends_count

    def count_scores(bias: float):
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

    def mention_scores(trie):
        if trie is None:
            return None

        def scores(out: List[int], logp: torch.Tensor) -> torch.Tensor:
            node = trie.walk(out)
            ids = trie.allowed_ids(node) if node is not None else []
            mask = torch.full_like(logp, float("-inf"))
            mask[torch.tensor(ids or [eos], device=logp.device)] = 0.0
            return logp + mask

        return scores

    results = []
    for req in requests:
        res = DocResult()
        prefix = encoder.prefix(req.text)
        trie = build_trie(req.text, encoder, mention_trie_options) if constrain_mentions else None
        for label in req.labels:
            prompt = prefix + encoder.label(label)
            count_ids, count_lp, _, steps = _greedy_no_cache(model, prompt, max_count_tokens, ends_count,
                                                             count_scores(count_bias_for(count_bias, label)))
            stats.forward_passes += steps
            stats.prompt_tokens += len(prompt) * steps
            stats.generated_tokens += steps
            n = read_count(encoder.tokenizer.decode(count_ids, skip_special_tokens=True), encoder, max_count, res)
            res.counts[label] = n
            # Mentions follow only a count that ended with its terminator (as in the engine).
            ended = ends_count(count_ids[-1]) and count_ids[-1] != eos

            def mention(k: int, mention_trie) -> Tuple[str, float, bool]:
                ids = prompt + count_ids + encoder.mention_tag(k)
                m_ids, m_lp, done, steps = _greedy_no_cache(model, ids, max_mention_tokens, lambda t: t == eos,
                                                            mention_scores(mention_trie))
                stats.forward_passes += steps
                stats.prompt_tokens += len(ids) * steps
                stats.generated_tokens += steps
                text = parse_mention(encoder.tokenizer.decode(m_ids[:-1] if done else m_ids, skip_special_tokens=True))
                return text, m_lp, done

            ks = range(1, (n if ended else 0) + 1)
            mentions = {k: mention(k, trie) for k in ks}
            dropped = set()
            for _ in range(dedupe_rounds if dedupe_mentions else 0):
                again, exclude = dedupe_plan(req.text, [(k, mentions[k][0], mentions[k][1]) for k in ks
                                                        if mentions[k][2] and k not in dropped])
                if not again:
                    break
                options = dict(mention_trie_options or {}, exclude=tuple(sorted(exclude)))
                redo_trie = build_trie(req.text, encoder, options)
                for k in again:
                    mentions[k] = mention(k, redo_trie)
                    res.redecoded_mentions += 1
                    if mentions[k][2] and math.exp(mentions[k][1]) < dedupe_min_prob:
                        dropped.add(k)
                        res.redecoded_dropped += 1
            for k in ks:
                text, m_lp, done = mentions[k]
                if k in dropped:
                    continue
                if not done:
                    res.truncated_mentions += 1
                    continue
                res.predictions.append(MentionPrediction(label, k, text, math.exp(m_lp), n, math.exp(count_lp)))
        results.append(res)
    return results


class PlainDecoder:
    """``plain_decode`` behind the engines' interface (``decode(requests)``, ``stats``, ``device``): every
    sequence on its own, no KV cache, the whole prompt re-encoded at every step."""

    def __init__(self, model, encoder: PromptEncoder, *, max_count: int = 20, max_count_tokens: int = 4,
                 max_mention_tokens: int = 40):
        self.model = model
        self.encoder = encoder
        self.max_count = max_count
        self.max_count_tokens = max_count_tokens
        self.max_mention_tokens = max_mention_tokens
        self.stats = DecoderStats()

    @classmethod
    def like(cls, engine) -> "PlainDecoder":
        """A plain decoder with the same model, prompts and limits as ``engine``."""
        return cls(engine.model, engine.encoder, max_count=engine.max_count,
                   max_count_tokens=engine.max_count_tokens, max_mention_tokens=engine.max_mention_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        return plain_decode(self.model, self.encoder, requests, max_count=self.max_count,
                            max_count_tokens=self.max_count_tokens, max_mention_tokens=self.max_mention_tokens,
                            stats=self.stats)
