"""The parallel two-step PaDeLLM decoder (torch and transformers only; no spaCy).

For a batch of documents:

0. every document's shared prefix (``text:\\n{text}\\nentity type:\\n``) is encoded once;
1. its KV cache is repeated for every label, the label part is appended, and the mention counts of all
   labels of all documents are decoded greedily in one batch;
2. each (document, label) row with count n is repeated n times, the ``<mention k>`` tag is appended to
   its step-1 cache (no re-encoding of the prompt) and all mentions are decoded greedily in one batch.

Rows that finish (EOS, or the count terminator in step 1) leave the batch at once: step 1 parks the
rows that step 2 needs and drops the rest, step 2 drops finished rows, so finished sequences cost no
further compute. Rows of different lengths are right-padded with masked columns and carry explicit
position ids, so padding never changes a row's result.

``plain_decode`` is the plain decoder the engine must agree with: every sequence on its own,
no cache, the whole prompt re-encoded at every step.

The decoding levers (``decoder.levers``, a ``levers.Levers``), all off by default (then the output is exactly
the plain greedy one):

* ``constrain_mentions``: a mention can only be a span of the document's text. Each mention step's
  log-probs are masked to the tokens allowed by a prefix trie over the text's candidate spans
  (``constraints.MentionTrie``; ``mention_trie_options`` are its ``build`` arguments). A mention's
  probability stays the model's own (unrenormalised) probability of the tokens chosen.
* ``count_bias``: a float, or a dict label -> float, added to the log-prob of the count token "0" at
  the first count step (negative: fewer zero counts). Only the choice changes; ``count_prob`` stays
  the model's probability of what was chosen.
* ``dedupe_mentions``: after step 2, the mentions of a label that repeat a string more often than the
  text holds it (``constraints.redecode_plan``: the most probable ones keep it) are decoded again, from
  the same step-1 cache, constrained to the text's spans less the strings already claimed; up to
  ``dedupe_rounds`` rounds, each one batched pass over the repeats only. A mention decoded again with a
  probability below ``dedupe_min_prob`` is dropped (forced off its string, the model mostly writes
  fragments such as "Croci , Gianluca" with probabilities near 0).
"""

from __future__ import annotations

import math

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .constraints import redecode_plan
from .counts import count_bias_for, final_logits, read_count, zero_count_token
from .hf_cache import cache_kwargs, returned_cache
from .levers import Levers
from .settings import DecodeSettings
from .types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ..text.protocol import PromptEncoder, parse_mention

__all__ = ["RowState", "TwoStepDecoder"]


# --- KV cache rows -------------------------------------------------------------------------------


def _cache_tensors(cache) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # older transformers


def _make_cache(tensors: Sequence[Tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(tensors):
        cache.update(k, v, i)
    return cache


class RowState:
    """A batch of sequences in flight: KV cache, key mask and next position of each row."""

    def __init__(self, cache, mask: torch.Tensor, next_pos: torch.Tensor):
        self.cache = cache
        self.mask = mask  # (rows, columns) long, 1 for real tokens
        self.next_pos = next_pos  # (rows,) long

    @property
    def n_rows(self) -> int:
        return int(self.mask.shape[0])

    def select(self, idx: torch.Tensor) -> "RowState":
        """A new state with rows ``idx`` (repeats allowed); self is left as it is."""
        tensors = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in _cache_tensors(self.cache)]
        return RowState(_make_cache(tensors), self.mask.index_select(0, idx), self.next_pos.index_select(0, idx))

    @staticmethod
    def concat(states: Sequence["RowState"]) -> "RowState":
        """Rows of several states in one, shorter ones right-padded with masked columns."""
        if len(states) == 1:
            return states[0]
        width = max(s.mask.shape[1] for s in states)
        per_state = [_cache_tensors(s.cache) for s in states]
        tensors = []
        for layer in range(len(per_state[0])):
            ks, vs = [], []
            for s_tensors in per_state:
                k, v = s_tensors[layer]
                pad = width - k.shape[2]
                if pad:
                    k = torch.nn.functional.pad(k, (0, 0, 0, pad))
                    v = torch.nn.functional.pad(v, (0, 0, 0, pad))
                ks.append(k)
                vs.append(v)
            tensors.append((torch.cat(ks), torch.cat(vs)))
        masks = [torch.nn.functional.pad(s.mask, (0, width - s.mask.shape[1])) for s in states]
        return RowState(_make_cache(tensors), torch.cat(masks), torch.cat([s.next_pos for s in states]))


# --- The engine ----------------------------------------------------------------------------------


class TwoStepDecoder:
    """Greedy PaDeLLM decoding with prefix sharing, cache reuse between the steps, and early exit."""

    def __init__(self, model, encoder: PromptEncoder, settings: Optional[DecodeSettings] = None, *,
                 mention_trie_options: Optional[Dict[str, Any]] = None, **changes: Any):
        """``settings`` (default ``DecodeSettings()``) with ``changes`` applied; ``mention_trie_options`` are
        ``constraints.MentionTrie.build``'s options for the constrained mentions."""
        s = (settings or DecodeSettings()).replace(**changes)
        self.settings = s
        self.model = model
        self.encoder = encoder
        self.max_count = s.max_count
        self.max_count_tokens = s.max_count_tokens
        self.max_mention_tokens = s.max_mention_tokens
        self.max_batch_rows = s.max_batch_rows
        self.levers = Levers.of(s, mention_trie_options)  # read at every decode (it may be replaced)
        self.base = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        self.stats = DecoderStats()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- low level --

    def _forward(self, state: Optional[RowState], token_lists: Sequence[Sequence[int]], want_logits: bool = True):
        """Append each row's tokens (lengths may differ) and return the log-probs at each row's last token."""
        device = self.device
        rows = len(token_lists)
        lengths = torch.tensor([len(t) for t in token_lists], device=device)
        width = int(lengths.max())
        ids = torch.full((rows, width), self.encoder.eos_id, dtype=torch.long, device=device)
        for i, toks in enumerate(token_lists):
            ids[i, : len(toks)] = torch.tensor(list(toks), dtype=torch.long, device=device)
        steps = torch.arange(width, device=device)
        new_mask = (steps[None, :] < lengths[:, None]).long()
        if state is None:
            cache, old_mask = None, torch.zeros((rows, 0), dtype=torch.long, device=device)
            start = torch.zeros(rows, dtype=torch.long, device=device)
        else:
            cache, old_mask, start = state.cache, state.mask, state.next_pos
        positions = start[:, None] + torch.minimum(steps[None, :], (lengths - 1)[:, None])
        mask = torch.cat([old_mask, new_mask], dim=1)
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache()
        out = self.base(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                        **cache_kwargs(self.base, cache))
        self.stats.forward_passes += 1
        self.stats.prompt_tokens += int(lengths.sum())
        new_state = RowState(returned_cache(out, cache), mask, start + lengths)
        if not want_logits:
            return new_state, None
        hidden = out.last_hidden_state[torch.arange(rows, device=device), lengths - 1]
        logits = final_logits(self.lm_head(hidden).float(), self.softcap)
        return new_state, torch.log_softmax(logits, dim=-1)

    def _step(self, state: RowState, tokens: torch.Tensor):
        """Feed one generated token per row."""
        state, logp = self._forward(state, tokens.view(-1, 1).tolist())
        rows = state.n_rows
        self.stats.prompt_tokens -= rows  # generated tokens are counted apart
        self.stats.generated_tokens += rows
        return state, logp

    # -- the two steps --

    @torch.inference_mode()
    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        """Decode a batch of documents; results come back in request order."""
        results = [DocResult() for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.labels]
        # Chunk documents so that one chunk's label rows fit the row budget.
        chunk: List[int] = []
        rows = 0
        for i in todo:
            n = len(requests[i].labels)
            if chunk and rows + n > self.max_batch_rows:
                self._decode_chunk([requests[j] for j in chunk], [results[j] for j in chunk])
                chunk, rows = [], 0
            chunk.append(i)
            rows += n
        if chunk:
            self._decode_chunk([requests[j] for j in chunk], [results[j] for j in chunk])
        return results

    def _decode_chunk(self, requests: Sequence[DocRequest], results: Sequence[DocResult]) -> None:
        enc = self.encoder
        # Step 0: shared prefixes, once per document.
        prefix_state, _ = self._forward(None, [enc.prefix(r.text) for r in requests], want_logits=False)
        # Step 1: one row per (document, label).
        branches = [(d, label) for d, r in enumerate(requests) for label in r.labels]
        doc_idx = torch.tensor([d for d, _ in branches], dtype=torch.long, device=self.device)
        state, logp = self._forward(prefix_state.select(doc_idx), [enc.label(label) for _, label in branches])
        del prefix_state
        generated, logprob, parked, parked_rows = self._generate_counts(state, logp, branches)
        del state
        counts = self._read_counts(branches, generated, results)
        if not parked:
            return
        # Step 2: one row per (document, label, k), continuing from the parked step-1 caches.
        step2 = _MentionStep(self, requests, results, branches, RowState.concat(parked), parked_rows, counts)
        del parked
        step2.run()
        for j, (p, row, k) in enumerate(step2.jobs):
            ids, lp, done = step2.outputs[j]
            d, label = branches[row]
            if j in step2.dropped:
                continue
            if not done:
                results[d].truncated_mentions += 1
                continue
            results[d].predictions.append(
                MentionPrediction(label, k, step2.text_of(j), math.exp(lp), counts[row], math.exp(logprob[row])))

    def _generate_counts(self, state: RowState, logp: torch.Tensor, branches):
        """Step 1's greedy count of every (document, label) row: (tokens and log-prob per row, the caches
        of the rows whose count ended with its terminator, parked for step 2, and those rows)."""
        enc = self.encoder
        device = self.device
        active = torch.arange(len(branches), device=device)
        generated: List[List[int]] = [[] for _ in branches]
        logprob = [0.0] * len(branches)
        parked: List[RowState] = []
        parked_rows: List[int] = []
        biases = [count_bias_for(self.levers.count_bias, label) for _, label in branches]
        for step in range(self.max_count_tokens):
            if step == 0 and any(biases):
                scores = logp.clone()
                scores[:, zero_count_token(enc)] += torch.tensor(biases, dtype=logp.dtype, device=device)
                tokens = scores.argmax(dim=-1)
            else:
                tokens = logp.argmax(dim=-1)
            tok_logp = logp.gather(1, tokens[:, None]).squeeze(1)
            keep = []
            finished_for_step2 = []
            for j, (row, tok, lp) in enumerate(zip(active.tolist(), tokens.tolist(), tok_logp.tolist())):
                generated[row].append(tok)
                logprob[row] += lp
                if self.encoder.ends_count(tok) or step == self.max_count_tokens - 1:
                    if tok != enc.eos_id and self.encoder.ends_count(tok):
                        finished_for_step2.append(j)
                else:
                    keep.append(j)
            if not (finished_for_step2 or keep):
                break
            # The finished rows need their terminator token in the cache before step 2.
            order = keep + finished_for_step2
            feed = torch.tensor(order, dtype=torch.long, device=device)
            if order != list(range(state.n_rows)):
                state, tokens = state.select(feed), tokens.index_select(0, feed)
            state, logp = self._step(state, tokens)
            rows_fed = active.index_select(0, feed)
            n_keep = len(keep)
            if finished_for_step2:
                sel = torch.arange(n_keep, n_keep + len(finished_for_step2), device=device)
                parked.append(state.select(sel))
                parked_rows.extend(rows_fed[n_keep:].tolist())
            if not keep:
                break
            sel = torch.arange(n_keep, device=device)
            state, logp, active = state.select(sel), logp.index_select(0, sel), rows_fed[:n_keep]
        return generated, logprob, parked, parked_rows

    def _read_counts(self, branches, generated: List[List[int]], results: Sequence[DocResult]) -> List[int]:
        counts = [0] * len(branches)
        for row, (d, label) in enumerate(branches):
            text = self.encoder.tokenizer.decode(generated[row], skip_special_tokens=True)
            n = read_count(text, self.encoder, self.max_count, results[d])
            counts[row] = n
            results[d].counts[label] = n
        return counts

    def _constrained_argmax(self, logp: torch.Tensor, active: List[int], tries, nodes) -> torch.Tensor:
        """Greedy choice per row among the tokens its trie node allows (EOS where a candidate ends;
        EOS alone where nothing is allowed, e.g. an empty trie)."""
        eos = self.encoder.eos_id
        rows: List[int] = []
        cols: List[int] = []
        for j, row in enumerate(active):
            node = nodes[row]
            ids = tries[row].allowed_ids(node) if node is not None else []
            if not ids:
                ids = [eos]
            rows.extend([j] * len(ids))
            cols.extend(ids)
        mask = torch.full_like(logp, float("-inf"))
        mask[torch.tensor(rows, device=logp.device), torch.tensor(cols, device=logp.device)] = 0.0
        return (logp + mask).argmax(dim=-1)

    def _generate_mentions(self, state: RowState, logp: torch.Tensor, n_rows: int, tries=None):
        eos = self.encoder.eos_id
        device = self.device
        active = torch.arange(n_rows, device=device)
        out_ids: List[List[int]] = [[] for _ in range(n_rows)]
        out_lp = [0.0] * n_rows
        done = [False] * n_rows
        nodes = [t.root for t in tries] if tries is not None else None
        for step in range(self.max_mention_tokens):
            if tries is None:
                tokens = logp.argmax(dim=-1)
            else:
                tokens = self._constrained_argmax(logp, active.tolist(), tries, nodes)
            tok_logp = logp.gather(1, tokens[:, None]).squeeze(1)
            keep = []
            for j, (row, tok, lp) in enumerate(zip(active.tolist(), tokens.tolist(), tok_logp.tolist())):
                out_lp[row] += lp
                if tok == eos:
                    done[row] = True
                else:
                    out_ids[row].append(tok)
                    keep.append(j)
                    if nodes is not None:
                        nodes[row] = tries[row].advance(nodes[row], tok)
            if not keep or step == self.max_mention_tokens - 1:
                break
            sel = torch.tensor(keep, dtype=torch.long, device=device)
            if len(keep) < state.n_rows:
                state = state.select(sel)
                tokens = tokens.index_select(0, sel)
                active = active.index_select(0, sel)
            state, logp = self._step(state, tokens)
        return list(zip(out_ids, out_lp, done))


class _MentionStep:
    """Step 2 of one chunk: every (document, label, k) mention decoded from its parked step-1 cache, then
    (``dedupe_mentions``) the repeats decoded again, constrained away from the strings already taken."""

    def __init__(self, decoder: TwoStepDecoder, requests: Sequence[DocRequest], results: Sequence[DocResult],
                 branches, count_state: RowState, parked_rows: List[int], counts: List[int]):
        self.decoder = decoder
        self.levers = decoder.levers
        self.requests = requests
        self.results = results
        self.branches = branches
        self.count_state = count_state
        self.jobs = [(p, row, k) for p, row in enumerate(parked_rows) for k in range(1, counts[row] + 1)]
        self.tries: Dict[Tuple[int, Tuple[str, ...]], Any] = {}
        self.outputs: List[Any] = [None] * len(self.jobs)  # (ids, log-prob, done) per job
        self.dropped: set = set()

    def trie(self, d: int, exclude: Tuple[str, ...] = ()):
        if (d, exclude) not in self.tries:
            self.tries[(d, exclude)] = self.levers.trie(self.requests[d].text, self.decoder.encoder, exclude)
        return self.tries[(d, exclude)]

    def text_of(self, j: int) -> str:
        return parse_mention(self.decoder.encoder.tokenizer.decode(self.outputs[j][0], skip_special_tokens=True))

    def decode(self, job_ids: List[int], excluded: Optional[Dict[int, Tuple[str, ...]]] = None) -> None:
        dec = self.decoder
        for start in range(0, len(job_ids), dec.max_batch_rows):
            part = job_ids[start : start + dec.max_batch_rows]
            idx = torch.tensor([self.jobs[j][0] for j in part], dtype=torch.long, device=dec.device)
            state, logp = dec._forward(self.count_state.select(idx), [dec.encoder.mention_tag(self.jobs[j][2])
                                                                        for j in part])
            row_tries = None
            if self.levers.constrain_mentions or excluded is not None:
                row_tries = [self.trie(self.branches[self.jobs[j][1]][0], (excluded or {}).get(j, ())) for j in part]
            for j, out in zip(part, dec._generate_mentions(state, logp, len(part), row_tries)):
                self.outputs[j] = out

    def run(self) -> None:
        self.decode(list(range(len(self.jobs))))
        levers = self.levers
        for _ in range(levers.dedupe_rounds if levers.dedupe_mentions else 0):
            redo, excluded = self._repeats()
            if not redo:
                break
            self.decode(sorted(redo), excluded)
            for j in redo:
                if self.outputs[j][2] and math.exp(self.outputs[j][1]) < levers.dedupe_min_prob:
                    self.dropped.add(j)
                    self._result(j).redecoded_dropped += 1

    def _result(self, j: int) -> DocResult:
        return self.results[self.branches[self.jobs[j][1]][0]]

    def _repeats(self) -> Tuple[List[int], Dict[int, Tuple[str, ...]]]:
        """The mentions to decode again (``constraints.redecode_plan``) and the strings each must avoid."""
        groups: Dict[int, List[int]] = {}
        for j, (_, row, _) in enumerate(self.jobs):
            if self.outputs[j][2] and j not in self.dropped:
                groups.setdefault(row, []).append(j)
        redo: List[int] = []
        excluded: Dict[int, Tuple[str, ...]] = {}
        for row, group in groups.items():
            d = self.branches[row][0]
            again, exclude = redecode_plan(self.requests[d].text,
                                           [(j, self.text_of(j), self.outputs[j][1]) for j in group])
            for j in again:
                excluded[j] = tuple(sorted(exclude))
                self._result(j).redecoded_mentions += 1
            redo.extend(again)
        return redo, excluded
