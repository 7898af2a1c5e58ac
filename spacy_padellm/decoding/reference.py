"""PaDeLLM decoding the way the paper's reference implementation does it: ``model.generate`` per step.

For each document, step 1 calls ``model.generate`` on the whole prompt ``prefix(text) + label_part``
of every label (one batch) to write the mention counts; step 2 calls ``model.generate`` again on the
whole prompt ``prefix + label_part + count + <mention k>`` of every (label, k) (one batch) to write the
mentions. The prompt is re-encoded for every mention; the KV cache lives only inside one ``generate``
call and nothing is shared between sequences. This is the baseline the engines in ``dynamic.py`` and ``tree/``
improves on (prefix sharing, cache reuse between the steps, early exit).

Decoding is greedy (``do_sample=False``, one beam, no logits processors: the model's own generation
config is set aside for the call). Batches are left-padded, as ``generate`` needs, and a sequence's
greedy output equals decoding it alone. The results are the ``DocResult`` objects of ``types.py``
and agree with ``plain.plain_decode`` (every sequence alone, no cache at all).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from transformers import StoppingCriteria

from .settings import DecodeSettings
from .types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ..text.protocol import PromptEncoder, parse_count, parse_mention

__all__ = ["ReferenceDecoder"]


@contextmanager
def _plain_generation_config(model):
    """Set the model's generation config aside, so no sampling default or logits processor it names
    (repetition penalty, suppressed tokens, ...) changes the greedy result."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


class _StopRows(StoppingCriteria):
    """Stopping criterion: per row, stop once its last token ends the step."""

    def __init__(self, stop: Callable[[int], bool]):
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        return torch.tensor([self.stop(t) for t in last], dtype=torch.bool, device=input_ids.device)


class ReferenceDecoder:
    """Greedy PaDeLLM decoding with ``model.generate``, batched per document (over labels, then over
    mentions), without reusing any cache across sequences or steps."""

    def __init__(self, model, encoder: PromptEncoder, settings: Optional[DecodeSettings] = None, **changes: Any):
        s = (settings or DecodeSettings()).replace(**changes)
        self.settings = s
        self.model = model
        self.encoder = encoder
        self.max_count = s.max_count
        self.max_count_tokens = s.max_count_tokens
        self.max_mention_tokens = s.max_mention_tokens
        self.max_batch_rows = s.max_batch_rows
        tok = encoder.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else encoder.eos_id
        self.stats = DecoderStats()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _generate(self, prompts: Sequence[List[int]], max_new_tokens: int,
                  stop: Callable[[int], bool]) -> List[Tuple[List[int], float, bool]]:
        """``model.generate`` on left-padded prompts; per prompt (ids up to and including the stop token,
        sum of their log-probs, whether a stop token came)."""
        out: List[Tuple[List[int], float, bool]] = []
        for start in range(0, len(prompts), self.max_batch_rows):
            out.extend(self._generate_batch(prompts[start : start + self.max_batch_rows], max_new_tokens, stop))
        return out

    def _generate_batch(self, prompts: Sequence[List[int]], max_new_tokens: int, stop: Callable[[int], bool]):
        from transformers import GenerationConfig, StoppingCriteriaList

        device = self.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
            mask[i, width - len(p):] = 1
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                  eos_token_id=self.encoder.eos_id, pad_token_id=self.pad_id,
                                  return_dict_in_generate=True, output_logits=True)
        with _plain_generation_config(self.model):
            gen = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([_StopRows(stop)]))
        new = gen.sequences[:, width:].tolist()
        logp = torch.log_softmax(torch.stack(gen.logits, dim=1).float(), dim=-1)  # (rows, steps, vocab)
        results = []
        for i, row in enumerate(new):
            toks: List[int] = []
            lp = 0.0
            done = False
            for t, tok in enumerate(row):
                toks.append(tok)
                lp += float(logp[i, t, tok])
                if stop(tok):
                    done = True
                    break
            results.append((toks, lp, done))
        self.stats.forward_passes += len(gen.logits)
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        self.stats.generated_tokens += sum(len(t) for t, _, _ in results)
        return results

    def _read_count(self, text: str, result: DocResult) -> int:
        n = parse_count(text, self.encoder.template)
        if n is None:
            result.unparsable_counts += 1
            return 0
        if n > self.max_count:
            result.capped_counts += 1
            return self.max_count
        return n

    @torch.inference_mode()
    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        """Decode documents one at a time; results come back in request order."""
        return [self._decode_doc(r) for r in requests]

    def _decode_doc(self, req: DocRequest) -> DocResult:
        enc = self.encoder
        eos = enc.eos_id
        res = DocResult()
        labels = list(req.labels)
        if not labels:
            return res
        prefix = enc.prefix(req.text)
        prompts = [prefix + enc.label(label) for label in labels]
        counts = self._generate(prompts, self.max_count_tokens, self.encoder.ends_count)
        jobs = []  # (label index, k, ids)
        count_info = []
        for li, (label, prompt, (count_ids, count_lp, _)) in enumerate(zip(labels, prompts, counts)):
            n = self._read_count(enc.tokenizer.decode(count_ids, skip_special_tokens=True), res)
            res.counts[label] = n
            count_info.append((n, count_lp))
            # Mentions follow only a count that ended with its terminator (as in the engine).
            ended = bool(count_ids) and self.encoder.ends_count(count_ids[-1]) and count_ids[-1] != eos
            for k in range(1, (n if ended else 0) + 1):
                jobs.append((li, k, prompt + count_ids + enc.mention_tag(k)))
        if not jobs:
            return res
        mentions = self._generate([ids for _, _, ids in jobs], self.max_mention_tokens, lambda t: t == eos)
        for (li, k, _), (m_ids, m_lp, done) in zip(jobs, mentions):
            n, count_lp = count_info[li]
            if not done:
                res.truncated_mentions += 1
                continue
            text = parse_mention(enc.tokenizer.decode(m_ids[:-1], skip_special_tokens=True))
            res.predictions.append(MentionPrediction(labels[li], k, text, math.exp(m_lp), n, math.exp(count_lp)))
        return res
