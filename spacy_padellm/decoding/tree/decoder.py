"""The tree decoder: greedy PaDeLLM decoding of a call's documents on a ``StaticLM`` (torch only; no spaCy).

Each document of a batch is one row of a ``TreeBatch``: its text prefix on the root, every label a branch of
it, every (label, k) mention a branch of its label's count. All branches of all documents advance together,
one forward pass per step, and a branch that has finished (EOS, or the end of its count) stops feeding
tokens; rows of finished documents are compacted away, so the batch shrinks. So:

* **step 2 continues step 1's cache**: a mention branch sees its label's prompt and count in place;
* **fewer sequential passes**: the prefix and all label prompts go in one pass (pass 1, which yields every
  count's first token); the count's terminator and every ``<mention k>`` tag go in the next (pass 2, which
  yields every mention's first token) -- the terminator is *speculated* after the count digit and verified
  against the model's own prediction in the same pass, so greedy output is exactly what plain decoding gives;
  then one pass per mention token, fewer with drafts (``drafts.py``: counts and mentions confirmed in pass 1,
  mentions copied from the text).

Host-side work is kept small, since the model's passes are short: the prefixes of a call are encoded in one
tokenizer call (with its span drafts' sources), and decoded counts are cached. ``TreeDecoder.decode``
returns the same ``DocResult`` objects as ``dynamic.TwoStepDecoder`` and ``plain.plain_decode``; the tests
check that all three agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..constraints import MentionTrie
from ..counts import read_count
from ..gc_pause import gc_paused
from ..heap import trim_heap
from ..levers import Levers
from ..pass_layout import bucket
from ..settings import DecodeSettings
from ..static_lm import StaticLM
from ..types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ...text.protocol import PromptEncoder, parse_mention
from ...text.vocab import batch_vocabulary
from .batch import TreeBatch, _Subtree
from .drafts import (MentionDrafter, count_chains, count_draft_cols, count_subtree, feed_count_draft,
                     feed_count_drafts, span_drafts_of, span_starts, within_budget)
from .generate import GenerateMixin
from .levers import BatchLevers
from .scheduler import chunks, drive

# ``head_vocab`` null: "text" on the CPU for an LM head of at least this many rows (Gemma 3: 262,144, where the head is
# more parameters than the rest of the model; SmolLM2's 49,152 keep the whole head)
HEAD_VOCAB_MIN_ROWS = 65536

__all__ = ["TreeDecoder"]


@dataclass
class _Count:
    doc: int
    label: str
    branch: int
    gen: List[int] = field(default_factory=list)
    lp: float = 0.0
    handle: Optional[int] = None
    spec: Optional[List[Tuple[int, int, int]]] = None  # speculative children: (k, branch, handle)
    # count drafts fed with the label prompt: (n, chain, branch, handles after chain[:-1], tags), where tags()
    # gives each tag as (k, branch, handle, its length, span drafts after it) (built only for a confirmed count)
    hyps: Optional[List[Tuple[int, List[int], int, List[int], Callable[[], List[Tuple]]]]] = None


@dataclass
class _Mention:
    doc: int
    label: str
    k: int
    count: _Count
    branch: int
    handle: int  # the prediction after the last confirmed token
    ids: List[int] = field(default_factory=list)
    lp: float = 0.0
    # drafts fed after the last confirmed token, each on a child branch: (branch, ids, handles)
    drafts: List[Tuple[int, List[int], List[int]]] = field(default_factory=list)
    next_tok: Optional[int] = None  # the confirmed token to feed in the next pass
    trie: Optional[Any] = None  # the MentionTrie it is held to (levers.py; None: unconstrained)
    node: Optional[int] = None  # its trie node after ``ids``


class TreeDecoder(GenerateMixin):
    """Greedy PaDeLLM decoding on a StaticLM: the same results as TwoStepDecoder, in fewer passes."""

    def __init__(self, lm: StaticLM, encoder: PromptEncoder, settings: Optional[DecodeSettings] = None, *,
                 model=None, mention_trie_options: Optional[Dict[str, Any]] = None, **changes):
        """``settings`` (default ``DecodeSettings()``) with ``changes`` applied; ``model``: the transformers
        model whose weights ``lm`` uses (for other decoders, e.g. the benchmark's plain one);
        ``mention_trie_options``: ``constraints.MentionTrie.build``'s options for the constrained mentions. The
        settings are copied to plain attributes and the levers to ``levers`` (a ``Levers``), which may be changed
        on a live decoder."""
        s = (settings or DecodeSettings()).replace(**changes)
        self.settings = s
        self.lm = lm
        self.model = model  # the transformers model whose weights ``lm`` uses (for other decoders)
        self.encoder = encoder
        self.max_count = s.max_count
        self.max_count_tokens = s.max_count_tokens
        self.max_mention_tokens = s.max_mention_tokens
        self.max_batch_docs = s.max_batch_rows  # a document is one cache row
        self.max_batch_tokens = s.max_batch_tokens
        self.levers = Levers.of(s, mention_trie_options)  # the decoding levers (levers.py), read at every decode
        self.draft_tokens = s.draft_tokens
        self.max_drafts = s.max_drafts
        # Drafts cut sequential passes (latency) but make every pass wider (more tokens, more mask columns),
        # which slows wide calls (nlp.pipe) down. So a batch of more than ``draft_max_docs`` documents decodes
        # without drafts (same output either way). Measurements: docs/results-speed.md.
        self.draft_max_docs = s.draft_max_docs
        # Count drafts (drafts.py): the counts 0 .. count_drafts - 1 (with their mention tags) are fed after every
        # label prompt in the first pass, so a verified count yields its mentions' first tokens in that same pass.
        # Part of drafting: off with draft_tokens=0 and for batches of more than draft_max_docs documents.
        # None: on CUDA only, where a pass costs about the same at any width; on the CPU a wider pass costs more.
        gpu = lm.device.type == "cuda"
        count_drafts = (3 if gpu else 0) if s.count_drafts is None else s.count_drafts
        # 4 span drafts per tag, not 8: a narrower first pass is faster overall, though a few more sentences then
        # take a second pass
        span_drafts = (4 if gpu else 0) if s.span_drafts is None else s.span_drafts
        self.count_drafts = count_drafts if self.draft_tokens else 0
        # Span drafts (drafts.py): after each drafted mention tag, up to ``span_drafts`` candidate mentions copied
        # from the text (``span_source``: "runs" of capitalised words and numbers, or the next "words" of each
        # such word; at most ``span_draft_tokens`` tokens each), so a mention that starts there can be confirmed
        # in pass 1 too. Runs decode more sentences in one pass than words, with as many tokens in pass 1.
        self.span_drafts = span_drafts if self.count_drafts else 0
        self.span_draft_tokens = s.span_draft_tokens
        self.span_source = s.span_source  # where span drafts come from (see drafts.span_starts)
        # at most this many span-draft tokens in a batch's first pass (every one asks for a prediction, so a
        # batch of many documents and labels would otherwise make that pass very wide)
        self.span_draft_budget = s.span_draft_budget
        # Batches in flight (scheduler.py): with 2 or more, one batch's pass runs on the device while the host
        # lays out the others' (each has its own KV cache, a StaticLM ``twin``). It helps only when a call has
        # several batches (nlp.pipe) and the device runs passes asynchronously. None: 4 on CUDA, 1 elsewhere.
        # A batch's first pass is long on the device and its later ones short, so with two batches the device
        # or the host often waits; more keep both busy.
        self.inflight_batches = s.inflight_batches if s.inflight_batches is not None else (4 if gpu else 1)
        # MiB of KV cache per batch in flight (None: no cap): what bounds a call's memory, whatever its number of
        # documents (see ``_fits`` and ``_drive``). The CPU's default leaves most of a laptop's memory free.
        self.max_cache_mb = s.max_cache_mb if s.max_cache_mb is not None else (None if gpu else 1024)
        # KV caches: ``lm`` and its twins (batches in flight). With CUDA graphs, calls that draft (at most
        # draft_max_docs documents: nlp(text)) and wide calls (nlp.pipe) keep caches of their own: a drafting
        # batch wants few rows but many columns, a wide one many rows and fewer columns, and a cache grown for
        # one forgets every graph captured for the other (the graphs then have to be captured again in use).
        self._pools: Dict[str, List[StaticLM]] = {"draft": [lm]}
        self._pools["wide"] = [] if lm.use_graphs else self._pools["draft"]
        self.stats = DecoderStats()
        # Host-side caches (pure functions of their keys): count readings, count-draft subtree shapes, and per
        # drafting pass the decoded mentions-so-far and the encoded draft sources (``MentionDrafter``).
        self._count_readings: Dict[Tuple[int, ...], Tuple[int, int, int]] = {}
        self._subtrees: Dict[tuple, _Subtree] = {}  # count-draft subtree shapes (see drafts.count_subtree)
        self._drafter = MentionDrafter(encoder)
        self.speculate = s.speculate
        # "text": the LM head over a batch's own tokens (text/vocab.py), or "all" of it. By default "text" on the CPU
        # for a large vocabulary, where the head's rows are much of a pass's work; the whole head on CUDA.
        self.head_vocab = s.head_vocab or ("text" if not gpu and lm.vocab_size >= HEAD_VOCAB_MIN_ROWS else "all")
        term = encoder._encode(encoder.template.count_terminator)
        # Speculate the terminator only when it is one token that ends a count by itself.
        self._term = term[0] if s.speculate and len(term) == 1 and self.encoder.ends_count(term[0]) else None

    @property
    def device(self):
        return self.lm.device

    # attribute -> the setting it comes from
    _SETTINGS = {"max_count": "max_count", "max_count_tokens": "max_count_tokens",
                 "max_mention_tokens": "max_mention_tokens", "max_batch_docs": "max_batch_rows",
                 "max_batch_tokens": "max_batch_tokens", "draft_tokens": "draft_tokens", "max_drafts": "max_drafts",
                 "draft_max_docs": "draft_max_docs", "count_drafts": "count_drafts", "span_drafts": "span_drafts",
                 "span_draft_tokens": "span_draft_tokens", "span_draft_budget": "span_draft_budget",
                 "span_source": "span_source", "inflight_batches": "inflight_batches", "speculate": "speculate",
                 "max_cache_mb": "max_cache_mb", "head_vocab": "head_vocab"}

    def current_settings(self) -> DecodeSettings:
        """This decoder's settings as its attributes and levers are now."""
        return self.settings.replace(**{key: getattr(self, attr) for attr, key in self._SETTINGS.items()},
                                     **self.levers.settings())

    def variant(self, **changes) -> "TreeDecoder":
        """A decoder with this one's settings (as its attributes are now) but ``changes`` (settings keys), on the
        same weights and the same KV caches (so a variant costs no GPU memory of its own; the two must not decode
        at the same time)."""
        other = TreeDecoder(self.lm, self.encoder, self.current_settings().replace(**changes), model=self.model,
                            mention_trie_options=self.levers.trie_options)
        other._pools = self._pools
        return other

    # -- batches and KV caches --

    def _chunks(self, items: Sequence[int], sizes: Sequence[int], n_labels: int = 0) -> List[List[int]]:
        """``items`` cut into batches by ``max_batch_docs``, ``max_batch_tokens`` and ``max_cache_mb``
        (``scheduler.chunks``; ``n_labels``: the most labels of a document, whose drafts widen a drafting batch)."""
        fits = None if self._max_cells is None else (lambda n, widest: self._fits(n, widest, n_labels))
        return chunks(items, sizes, self.max_batch_docs, self.max_batch_tokens, fits)

    @property
    def _max_cells(self) -> Optional[int]:
        """KV-cache cells (rows x columns) that ``max_cache_mb`` holds, or None without a cap."""
        return None if self.max_cache_mb is None else self.max_cache_mb * 2 ** 20 // self.lm.cache.cell_bytes

    def _fits(self, n_docs: int, widest: int, n_labels: int) -> bool:
        """Whether a batch of ``n_docs`` documents, the widest ``widest`` columns before drafts, gets a KV cache
        within ``max_cache_mb`` (its rows and columns rounded as ``KVCache.reserve`` rounds them) with room to
        double its columns: documents often decode more mentions than estimated, and a cache is widened by
        doubling, for every row still decoding (at the mention tags, every row)."""
        if n_labels and n_docs <= self.draft_max_docs:
            widest += self._draft_cols(n_labels, n_docs)
        return 2 * bucket(n_docs) * bucket(widest + 1, 64) <= self._max_cells

    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        """Greedy PaDeLLM results of ``requests``, one per request in order (predictions in label order, then k)."""
        results = [DocResult() for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.labels]
        enc = self.encoder
        texts = [requests[i].text for i in todo]
        spans: Dict[int, List[List[int]]] = {}
        if todo and self._span_drafting(len(todo)):
            # every batch (of at most as many docs) drafts: span candidates go in the prefixes' tokenizer call
            starts = [self._span_starts(t) for t in texts]
            encoded, found = enc.prefixes_and_mentions(texts, [s for st in starts for s in st])
            spans = dict(zip(todo, self._span_drafts_of(starts, found)))
        else:
            encoded = enc.prefixes(texts)
        prefixes = dict(zip(todo, encoded))
        sizes = {i: self._estimate(prefixes[i], requests[i].labels) for i in todo}
        # Documents of like size decode together: a pass is as wide as its widest row, so a batch sorted by
        # size wastes less of every pass on padding (results go back to their documents either way). Largest
        # first, so that the first chunk sizes the KV cache, is slower: more CUDA-graph captures in warm runs.
        todo.sort(key=lambda i: sizes[i])

        def job(chunk):
            return lambda lm: self._decode_chunk(lm, [requests[i] for i in chunk], [prefixes[i] for i in chunk],
                                                 [results[i] for i in chunk], max(sizes[i] for i in chunk),
                                                 [spans[i] for i in chunk] if spans else None)

        with gc_paused():
            n_labels = max((len(requests[i].labels) for i in todo), default=0)
            self._drive((job(chunk) for chunk in self._chunks(todo, [sizes[i] for i in todo], n_labels)),
                        self._pool(len(todo)))
        return results

    def _span_drafting(self, n_docs: int) -> bool:
        """Whether a batch of ``n_docs`` documents feeds span drafts (after its drafted counts' tags)."""
        return n_docs <= self.draft_max_docs and bool(self.span_drafts) and bool(self._count_chains())

    def _lm(self, i: int, pool: str = "draft") -> StaticLM:
        """The i-th KV cache of the batches in flight of a drafting or a wide call (``pool``; "draft" 0 is
        ``self.lm``, the others are twins made on first use)."""
        lms = self._pools[pool]
        while len(lms) <= i:
            lms.append(self.lm.twin())
        lms[i].cache.max_cells = self._max_cells
        return lms[i]

    def _pool(self, n_docs: int) -> str:
        """The caches a call of ``n_docs`` documents (or prompts) runs on."""
        return "draft" if n_docs <= self.draft_max_docs else "wide"

    @property
    def _lms(self) -> List[StaticLM]:
        """Every KV cache of the decoder, once each."""
        return list({id(lm): lm for pool in self._pools.values() for lm in pool}.values())

    def _drive(self, jobs, pool: str = "draft") -> None:
        """Run batch jobs ``inflight_batches`` at a time on the caches of ``pool`` (``scheduler.drive``); then free
        the caches a batch widened past ``max_cache_mb``, so that no more than it is kept between calls."""
        try:
            drive(jobs, lambda i: self._lm(i, pool), self.inflight_batches, self.stats)
        finally:
            cap = self._max_cells
            wide = [lm for lm in self._lms if cap is not None and lm.cache.rows * lm.cache.cols > cap]
            for lm in wide:
                lm.cache.release()
            if wide:
                trim_heap()

    def _estimate(self, prefix: List[int], labels: Sequence[str]) -> int:
        """Columns a document will likely use without drafts: prefix, label prompts, counts, a few short
        mentions (what batches are cut by)."""
        enc = self.encoder
        return len(prefix) + sum(len(enc.label(l)) + 2 for l in labels) + 2 * (len(enc.mention_tag(1)) + 8)

    def _draft_cols(self, n_labels: int, n_docs: int = 1) -> int:
        """Columns a document's drafts may add when its batch drafts: count drafts with their tags, span
        drafts after each tag, a few mention drafts (so the cache is not grown mid-batch)."""
        cols = 2 * self.max_drafts * self.draft_tokens if self.draft_tokens and self.max_drafts else 0
        if self.count_drafts:
            tags = sum(n for n, _ in self._count_chains())
            spans = min(n_labels * tags * self.span_drafts * self.span_draft_tokens,
                        self.span_draft_budget // max(1, n_docs))
            cols += n_labels * self._count_draft_cols() + spans
        return cols

    def _count_chains(self) -> List[Tuple[int, List[int]]]:
        """(n, the count's tokens) for each drafted count n (``drafts.count_chains``, cached per setting)."""
        key = (self.count_drafts, self.max_count_tokens)
        if getattr(self, "_chains_key", None) != key:
            self._chains = count_chains(self.encoder, self.count_drafts, self.max_count_tokens)
            self._chains_key = key
        return self._chains

    def _count_draft_cols(self) -> int:
        return count_draft_cols(self.encoder, self._count_chains())

    # -- one batch --

    def _decode_chunk(self, lm: StaticLM, requests, prefixes, results, cols_hint: int, spans=None):
        """Decode one batch on ``lm`` (a generator for ``_drive``: yields the TreeBatch for each pass); ``spans``:
        each document's span drafts when already found (``_span_candidates``)."""
        drafting = len(requests) <= self.draft_max_docs
        texts = [req.text for req in requests]
        lm.restrict_head(batch_vocabulary(self.encoder, [(req.text, req.labels) for req in requests], prefixes,
                                          self.max_count) if self.head_vocab == "text" else None)
        tb, counts = self._first_pass(lm, requests, prefixes, cols_hint, texts, spans, drafting)
        out = yield tb
        dedupe = tb.levers is not None and tb.levers.levers.dedupe_mentions
        mentions: List[_Mention] = []
        while True:
            next_counts: List[_Count] = []
            waiting: List[_Mention] = []  # tags fed in this round: their first token comes next pass
            for c in counts:
                self._advance_count(tb, c, out, results, mentions, waiting, next_counts)
            counts = next_counts
            next_mentions: List[_Mention] = []
            finished: List[_Mention] = []
            for m in mentions:
                self._advance_mention(tb, m, out, results, next_mentions, finished)
            if dedupe:
                waiting += self._dedupe(tb, finished, results)
            else:
                self._record_mentions(finished, results)
            self._feed_mentions(tb, next_mentions, texts, drafting)
            mentions = next_mentions + waiting
            if not counts and not mentions:
                break
            out = yield tb
        for req, res in zip(requests, results):  # in label order, then k
            order = {label: i for i, label in enumerate(req.labels)}
            res.predictions.sort(key=lambda p: (order[p.label], p.k))
        lm.restrict_head(None)

    def _first_pass(self, lm: StaticLM, requests, prefixes, cols_hint: int, texts, spans, drafting: bool
                    ) -> Tuple[TreeBatch, List[_Count]]:
        """A batch's TreeBatch with its first pass queued: every prefix, every label prompt and, when the batch
        drafts, every label's count drafts (with span drafts after their tags); the labels' counts."""
        enc = self.encoder
        if drafting:
            cols_hint += self._draft_cols(max(len(req.labels) for req in requests), len(requests))
        chains = self._count_chains() if drafting else []
        spans = self._batch_spans(requests, texts, spans, chains)
        lev = BatchLevers(self, texts) if self.levers.on else None
        if lev is not None and lev.levers.constrain_mentions:
            # a span draft's part that leaves the trie could never be confirmed
            spans = [[d for d in (lev.cut(lev.trie(i), MentionTrie.root, s) for s in found) if d]
                     for i, found in enumerate(spans)]
        # branches of pass 1 and a few more: a root and a branch per label, with each label's count drafts
        drafted = sum(n for n, _ in chains) * (1 + max(map(len, spans), default=0)) + len(chains)
        tb = TreeBatch(lm, len(requests), cols_hint, sum(1 + len(r.labels) * (2 + drafted) for r in requests))
        tb.levers = lev
        stats = self.stats
        counts: List[_Count] = []
        for d, (req, prefix) in enumerate(zip(requests, prefixes)):
            root = tb.root(d)
            tb.feed(root, prefix)
            stats.prompt_tokens += len(prefix)
            sub = self._count_subtree(chains, spans[d]) if chains else None
            for label in req.labels:
                branch = tb.fork(root)
                ids = enc.label(label)
                (h,) = tb.feed(branch, ids, outputs=[len(ids) - 1])
                stats.prompt_tokens += len(ids)
                c = _Count(d, label, branch, handle=h)
                if chains:
                    c.hyps = self._feed_count_drafts(tb, branch, sub, chains, spans[d])
                if lev is not None:
                    lev.steer_count(tb, h, label)
                    for hyp in c.hyps or ():
                        lev.steer_tags(tb, d, hyp[4]())
                counts.append(c)
        return tb, counts

    def _batch_spans(self, requests, texts, spans, chains) -> List[List[List[int]]]:
        """Each document's span drafts in a batch (none when it does not feed them), within the batch's
        budget of span-draft tokens, shared by its tags."""
        if not self._span_drafting(len(requests)):
            return [[] for _ in requests]
        if spans is None:
            spans = self._span_candidates(texts)
        n_tags = sum(n for n, _ in chains) * sum(len(req.labels) for req in requests)
        per_tag = self.span_draft_budget // max(1, n_tags)
        return [within_budget(found, per_tag) for found in spans]

    # -- drafts (drafts.py) with this decoder's settings, read at each call (settings may be changed on a decoder);
    # methods, so that tests and diagnosis scripts can replace or time them --

    def _count_subtree(self, chains, spans: Sequence[List[int]]) -> Tuple[_Subtree, List[int]]:
        return count_subtree(self.encoder, chains, spans, self._subtrees)

    def _feed_count_drafts(self, tb, branch: int, subtree: Tuple[_Subtree, List[int]], chains,
                           spans: Sequence[List[int]]):
        return feed_count_drafts(tb, self.encoder, branch, subtree, chains, spans, self.stats)

    def _feed_count_draft(self, tb, branch: int, n: int, chain: List[int], spans: Sequence[List[int]] = ()):
        return feed_count_draft(tb, self.encoder, branch, n, chain, spans, self.stats)

    def _span_candidates(self, texts: Sequence[str]) -> List[List[List[int]]]:
        """Per text, up to ``span_drafts`` token sequences (``span_draft_tokens`` each, different first tokens)
        that a mention would start with if it began at a capitalised word or a number of the text."""
        starts = [self._span_starts(text) for text in texts]
        flat = [s for found in starts for s in found]
        return self._span_drafts_of(starts, self.encoder.mentions(flat) if flat else [])

    def _span_starts(self, text: str) -> List[str]:
        return span_starts(text, self.span_source, self.span_drafts, self.span_draft_tokens)

    def _span_drafts_of(self, starts: Sequence[List[str]], encoded: Sequence[List[int]]) -> List[List[List[int]]]:
        room = max(1, min(self.span_draft_tokens, self.max_mention_tokens - 1))
        return span_drafts_of(starts, encoded, self.span_drafts, room)

    def _mention_drafts(self, text: str, ids: List[int]) -> List[List[int]]:
        return self._drafter.drafts(text, ids, self.max_drafts, self.draft_tokens)

    # -- counts --

    def _advance_count(self, tb, c: _Count, out, results, mentions, waiting, next_counts) -> None:
        """Take the count's predictions of the last pass: the count drafts it confirms, if any (a confirmed count
        whose mentions started this pass puts them in ``mentions``), then its next token (``_count_token``)."""
        tok, lp = out[c.handle]
        if c.hyps is not None:
            hyps, c.hyps = c.hyps, None
            # the drafted count whose tokens the model confirms furthest (counts may share a first token)
            best, confirmed = None, 0
            for hyp in hyps:
                chain, handles = hyp[1], hyp[3]
                i = 0
                while i < len(chain) and chain[i] == (tok if i == 0 else out[handles[i - 1]][0]):
                    i += 1
                if i > confirmed:
                    best, confirmed = hyp, i
            if best is not None:
                n, chain, child, handles, tags = best
                # chain[:confirmed] is the model's own output: take it with its log-probs
                c.gen.extend(chain[:confirmed])
                c.lp += lp
                for h in handles[: confirmed - 1]:
                    c.lp += out[h][1]
                self.stats.accepted_draft_tokens += confirmed
                if confirmed == len(chain):  # the whole count, terminator included: its mentions started this pass
                    m = self._finish_count(c, results)
                    self.stats.generated_tokens += len(chain) - (0 if m > 0 else 1)  # as if fed one by one
                    for k, g, h, n_tag, drafts in tags():
                        if k <= m:
                            mentions.append(self._open(tb, c, k, g, h, child, drafts))
                            self.stats.accepted_draft_tokens += n_tag
                    return
                # The count goes on past the draft (a longer number): continue on the draft's branch with the
                # model's token after the confirmed part.
                c.branch = child
                tb.forget(child, len(chain) - confirmed)
                self.stats.generated_tokens += confirmed
                tok, lp = out[handles[confirmed - 1]]
        self._count_token(tb, c, tok, lp, results, mentions, waiting, next_counts)

    def _count_token(self, tb, c: _Count, tok: int, lp: float, results, mentions, waiting, next_counts) -> None:
        """Take the count's next token ``tok`` (predicted after everything its branch has been fed)."""
        enc = self.encoder
        if c.spec is not None:
            spec, c.spec = c.spec, None
            if tok == self._term:  # the speculated terminator was right: its children are real
                c.gen.append(tok)
                c.lp += lp
                n = self._finish_count(c, results)
                for k, branch, handle in spec:
                    if k <= n:
                        mentions.append(self._open(tb, c, k, branch, handle, c.branch))
                return
            tb.forget(c.branch, 1)
            self.stats.generated_tokens -= 1
        c.gen.append(tok)
        c.lp += lp
        ends = enc.ends_count(tok)
        if ends or len(c.gen) >= self.max_count_tokens:
            n = self._finish_count(c, results)
            if ends and tok != enc.eos_id and n > 0:
                # Feed the terminator and open every mention branch in the next pass.
                self._feed_generated(tb, c.branch, [tok], ())
                tags = [enc.mention_tag(k) for k in range(1, n + 1)]
                for k, (child, (h,)) in enumerate(tb.fork_feed(c.branch, tags), 1):
                    waiting.append(self._open(tb, c, k, child, h, c.branch))
                    if tb.levers is not None:
                        self._steer_first(tb, c, h)
                self.stats.prompt_tokens += sum(len(tag) for tag in tags)
            return
        # The count goes on: feed its last token, and if the terminator can be speculated, the
        # terminator and the mention tags of the count it would complete.
        n_spec = self._speculated_count(c.gen) if self._term is not None else None
        if n_spec is None:
            (c.handle,) = self._feed_generated(tb, c.branch, [tok], outputs=[0])
        else:
            (c.handle,) = self._feed_generated(tb, c.branch, [tok, self._term], outputs=[0])
            tags = [enc.mention_tag(k) for k in range(1, n_spec + 1)]
            c.spec = [(k, child, h) for k, (child, (h,)) in enumerate(tb.fork_feed(c.branch, tags), 1)]
            if tb.levers is not None:
                for _, _, h in c.spec:
                    self._steer_first(tb, c, h)
            self.stats.prompt_tokens += sum(len(tag) for tag in tags)
        next_counts.append(c)

    def _count_reading(self, ids: Sequence[int]) -> Tuple[int, int, int]:
        """(count, unparsable, capped) of a count output ``ids`` as ``counts.read_count`` reads it, cached (counts are a
        few short token sequences): one decode and one parse per distinct output, not per label."""
        key = (self.max_count, *ids)
        reading = self._count_readings.get(key)
        if reading is None:
            if len(self._count_readings) >= 4096:
                self._count_readings.clear()
            probe = DocResult()
            n = read_count(self.encoder.decode(ids), self.encoder, self.max_count, probe)
            reading = self._count_readings[key] = (n, probe.unparsable_counts, probe.capped_counts)
        return reading

    def _speculated_count(self, gen: List[int]) -> Optional[int]:
        """The count ``gen`` would be if the terminator came next, when it is a number above 0 (else None)."""
        n, unparsable, _ = self._count_reading(gen + [self._term])
        return None if unparsable or not n else n

    def _finish_count(self, c: _Count, results) -> int:
        res = results[c.doc]
        n, unparsable, capped = self._count_reading(c.gen)
        res.unparsable_counts += unparsable
        res.capped_counts += capped
        res.counts[c.label] = n
        return n

    def _feed_generated(self, tb, branch, ids, outputs):
        self.stats.generated_tokens += len(ids)
        return tb.feed(branch, ids, outputs)

    # -- mentions --

    def _advance_mention(self, tb, m: _Mention, out, results, next_mentions, finished) -> None:
        """Take the mention's predictions of the last pass; a mention that ended (EOS) goes to ``finished``."""
        enc = self.encoder
        tok, lp = out[m.handle]
        draft, handles = [], []
        for child, d, hs in m.drafts:  # the draft (if any) that starts with the model's choice
            if d[0] == tok:
                m.branch, draft, handles = child, d, hs
                break
        m.drafts = []
        i = 0  # (tok, lp) follows the confirmed tokens and the first i tokens of the draft
        while True:
            m.lp += lp
            if tok == enc.eos_id:
                finished.append(m)
                return
            m.ids.append(tok)
            if m.trie is not None:
                m.node = m.trie.advance(m.node, tok)
            self.stats.generated_tokens += 1
            if len(m.ids) >= self.max_mention_tokens:
                results[m.doc].truncated_mentions += 1
                if tb.levers is not None:
                    tb.levers.ended(m, False)
                return
            if i < len(draft) and draft[i] == tok:  # the drafted token was the model's choice: already fed
                self.stats.accepted_draft_tokens += 1
                tok, lp = out[handles[i]]
                i += 1
                continue
            break
        if i < len(draft):
            tb.forget(m.branch, len(draft) - i)  # the rejected rest of the draft
        m.next_tok = tok  # fed by _feed_mentions, with the drafts after it
        next_mentions.append(m)

    def _record_mentions(self, finished: List[_Mention], results, texts: Optional[Sequence[str]] = None) -> None:
        """The predictions of the mentions that ended in a pass (``texts``: their strings, if decoded already;
        else decoded in one call)."""
        for m, text in zip(finished, texts if texts is not None else self.mention_texts(finished)):
            res = results[m.doc]
            res.predictions.append(MentionPrediction(m.label, m.k, text, math.exp(m.lp),
                                                     res.counts[m.label], math.exp(m.count.lp)))

    def mention_texts(self, mentions: Sequence[_Mention]) -> List[str]:
        """The mention strings of ``mentions`` (decoded in one call)."""
        return [parse_mention(text) for text in self.encoder.decode_many([m.ids for m in mentions])]

    # -- the levers (levers.py) --

    def _open(self, tb, c: _Count, k: int, branch: int, handle: int, parent: Optional[int], drafts=None,
              trie=None) -> _Mention:
        """The mention k of count ``c`` on ``branch`` (its tag forked from ``parent``; None for a mention decoded
        again), its first token
        predicted at ``handle``; held to ``trie`` (default: the batch's mention trie of its document, if any)."""
        m = _Mention(c.doc, c.label, k, c, branch, handle, drafts=drafts if drafts is not None else [])
        if tb.levers is not None:
            tb.levers.opened(m, parent, trie if trie is not None else tb.levers.mention_trie(c.doc))
        return m

    def _steer_first(self, tb, c: _Count, handle: int) -> None:
        """Hold a mention's first token (predicted at ``handle``, after its tag) to its document's trie."""
        trie = tb.levers.mention_trie(c.doc)
        tb.levers.steer_mention(tb, handle, trie, trie.root if trie is not None else None)

    def _dedupe(self, tb, finished: List[_Mention], results) -> List[_Mention]:
        """De-duplication: the mentions that ended with EOS in a pass are handed to the batch's levers; the
        repeats they decode again start (their tags are queued)."""
        for m in finished:
            tb.levers.ended(m, True)
        return [self._open(tb, c, k, branch, h, None, trie=trie) for c, k, branch, trie, h in tb.levers.settle(tb, results)]

    def _feed_mentions(self, tb, mentions: List[_Mention], texts: Sequence[str], drafting: bool) -> None:
        """Feed each going-on mention's confirmed token and, when the batch drafts, its drafts (in the order
        of ``mentions``; ``texts``: the batch's document texts)."""
        drafting = drafting and bool(self.draft_tokens and self.max_drafts)  # the only check: callees trust it
        lev = tb.levers
        if not drafting:
            for m in mentions:
                (m.handle,) = tb.feed(m.branch, [m.next_tok], outputs=[0])
                if lev is not None:
                    lev.steer_mention(tb, m.handle, m.trie, m.node)
            return
        self._drafter.prefetch([(texts[m.doc], m.ids) for m in mentions], self.max_drafts, self.draft_tokens)
        for m in mentions:
            (m.handle,) = tb.feed(m.branch, [m.next_tok], outputs=[0])
            room = max(0, self.max_mention_tokens - len(m.ids) - 1)
            drafts = [d[:room] for d in self._mention_drafts(texts[m.doc], m.ids) if d[:room]]
            if lev is not None:
                lev.steer_mention(tb, m.handle, m.trie, m.node)
                drafts = [d for d in (lev.cut(m.trie, m.node, d) for d in drafts) if d]
            # each draft on a branch of its own: the one the model agrees with replaces the mention's
            m.drafts = tb.feed_children(m.branch, drafts)
            self.stats.draft_tokens += sum(len(d) for _, d, _ in m.drafts)
            if lev is not None:
                for _, d, hs in m.drafts:
                    lev.steer_draft(tb, hs, m.trie, m.node, d)
