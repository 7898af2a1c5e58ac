"""Host-side (Python) overhead of the static tree engine, measured on the CPU without the model's cost.

The real SmolLM2 tokenizer (shipped with the package) gives prompts and mentions their real token
counts; the model is a tiny random Llama whose forward pass is replaced by a scripted *oracle*: at every
position whose next token is wanted, the oracle returns what a perfect model would write for that
branch (the gold count, the terminator, the gold mention's tokens, EOS). The oracle reads what each
position sees from a shadow copy of the KV cache's token ids and the attention mask, so drafts,
speculated terminators, compaction and row reuse all run exactly as with a real model. The oracle's own
time is measured and subtracted, and so is the time of the KV cache's row compaction
(``KVCache.move_rows``: a copy on the device on a GPU, but a big one on the CPU with this tiny
model): what remains is the host time of the engine (``TreeBatch``,
``TreeDecoder``, ``StaticLM.step``'s padding/copies) and, for ``nlp.pipe``, of the component around it.

    PYTHONPATH=. python benchmarks/host_overhead.py --docs 1024 --batch-size 512 \
        --json benchmarks/results/host_overhead.json [--profile] [--data TEST.jsonl]

(``spacy project run host-overhead`` runs it on the project's data and writes metrics/host_overhead.json.)

Besides the times it counts, per document, the tokens the passes fed and those their projections and MLPs ran on
(padding included), the rows through the LM head (each pass's outputs padded to their bucket), the pass shapes met
(on a GPU, one CUDA graph each), and the key/value blocks of the Triton attention kernel
(``decoding/tree_attention.py``; tiles of ``TILE_TOKENS`` places, blocks of its ``BLOCK_COLS`` columns, per layer):
every block of the (rows x places) layout, and those it reads: for each tile, from the first to the last block some
live token of the tile attends to (every block, in a pass of one row: ``tree_attention.skips_blocks``).

``--forward tiny`` runs the tiny random model instead of the oracle (argmax decoding: garbage outputs,
a different decode pattern). The JSON holds a digest of every prediction so that two versions of the
engine can be checked to give identical results on this workload.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from spacy_padellm.decoding.row_mask import unpack
from spacy_padellm.decoding.tree_attention import BLOCK_COLS, BLOCK_ROWS, skips_blocks

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "spacy_padellm" / "models" / "conll03-smollm2-135m"
DATA = ROOT.parent / "shared" / "data" / "padellm" / "conll03" / "conll03_test.jsonl"  # data_dir of project.yml
LABELS = ["PER", "LOC", "ORG", "MISC"]
# tokens per tile of the Triton attention kernel with the default model's heads (Gemma 3 270M: 4 query heads per KV
# head, each a row of the tile)
TILE_TOKENS = BLOCK_ROWS // 4


def load_data(path: Path, n: int) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """(text, [(label, mention)]) of the first ``n`` sentences; each line is [text, [start, end, mention, label], ...]."""
    out = []
    with path.open(encoding="utf8") as f:
        for line in f:
            rec = json.loads(line)
            out.append((rec[0], [(e[3], e[2]) for e in rec[1:]]))
            if len(out) >= n:
                break
    return out


def tiny_model(vocab: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=eos_id, eos_token_id=eos_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


class Oracle:
    """Stands in for ``StaticLM._forward``: gold-driven next tokens for every wanted position."""

    def __init__(self, lm, enc, data):
        self.lm = lm
        self.enc = enc
        self.eos = enc.eos_id
        self.junk = enc._encode(" the")[0]  # for positions no real branch reads (rejected drafts)
        self.label_ids = {l: tuple(enc.label(l)) for l in LABELS}
        self.gold: Dict[tuple, Dict[str, List[List[int]]]] = {}
        for text, mentions in data:
            by_label: Dict[str, List[List[int]]] = {l: [] for l in LABELS}
            for label, m in mentions:
                by_label[label].append(enc.mention(m))
            self.gold[tuple(enc.prefix(text))] = by_label
        self.count_ids = {n: enc.count(n) for n in range(64)}
        self.shadow = np.zeros((0, 0), dtype=np.int64)
        self.row_gold: Dict[int, tuple] = {}  # cache row -> (gold by label, prefix length)
        self.seconds = 0.0
        self.cache_seconds = 0.0
        self.outputs = 0
        # key/value blocks of the Triton attention kernel (``tree_attention``): [every block of every tile of the
        # layout, the blocks it reads]
        self.kv_blocks = [0, 0]
        # KV-cache cells (a row's column: keys and values of every layer) copied by the batches' compactions
        self.moved_cells = 0
        # rows through the LM head (each pass's outputs' bucket), and every pass shape met (``StaticLM.last_shape``:
        # packed, tokens, rows, places, columns, outputs, the restricted head's rows): on a GPU, the CUDA graphs
        self.head_rows = 0
        self.shapes = set()
        self._move_rows = lm.cache.move_rows
        self.vocab = len(enc.tokenizer)
        lm._forward = self.forward
        lm._pass = self.laid_out
        lm.cache.move_rows = self.move_rows
        lm.logits = self.logits
        lm.pair_logits = self.pair_logits

    COUNTERS = ("seconds", "cache_seconds", "kv_every", "kv_read", "moved_cells", "head_rows")

    def counters(self) -> Dict[str, float]:
        """The running counters (``COUNTERS``) as they are now."""
        every, read = self.kv_blocks
        return {"seconds": self.seconds, "cache_seconds": self.cache_seconds, "kv_every": every, "kv_read": read,
                "moved_cells": self.moved_cells, "head_rows": self.head_rows}

    def since(self, before: Dict[str, float]) -> Dict[str, float]:
        """How much each counter grew since ``before`` (a ``counters()``)."""
        return {k: v - before[k] for k, v in self.counters().items()}

    def logits(self, hidden):
        """The LM head as the decoding levers call it again on a pass's outputs (``Steering``): the oracle's token
        of each output (kept in ``last_hidden``) first, every other token 10 nats below."""
        t0 = time.perf_counter()
        out = torch.full((len(hidden), self.vocab), -10.0)
        out[torch.arange(len(hidden)), hidden[:, 0].long()] = 0.0
        self.seconds += time.perf_counter() - t0
        return out

    def pair_logits(self, hidden, ids):
        """The logits of (output, token) pairs as the levers ask for them (``Steering``), by the same rule."""
        t0 = time.perf_counter()
        out = torch.where(ids == hidden[:, 0].long(), 0.0, -10.0)
        self.seconds += time.perf_counter() - t0
        return out

    def move_rows(self, dst, src, upto_col):
        self.moved_cells += len(src) * upto_col
        t0 = time.perf_counter()
        self.shadow[dst] = self.shadow[src]
        self.row_gold.update({d: self.row_gold.get(s) for d, s in zip(dst, src)})
        self.seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        self._move_rows(dst, src, upto_col)  # the KV cache's own copy: device work on a GPU
        self.cache_seconds += time.perf_counter() - t0

    def laid_out(self, tokens, positions, slots, rows, scatter, gather, bits, out, chains, shape):
        """``StaticLM._pass``: the mask laid out from its upload (device work on a GPU, timed with the oracle), then
        ``forward``."""
        self.head_rows += len(out)
        self.shapes.add(self.lm.last_shape)
        t0 = time.perf_counter()
        mask = unpack(bits, chains, slots, scatter, *shape)
        self._count_kv_blocks(mask.numpy(), None if scatter is None else scatter.numpy())
        self.seconds += time.perf_counter() - t0
        return self.forward(tokens, positions, slots, rows, scatter, gather, mask, out)

    def _count_kv_blocks(self, mask: np.ndarray, scatter) -> None:
        """Add a pass's key/value blocks to ``kv_blocks``: the Triton kernel's tiles are ``TILE_TOKENS`` places of a
        row, its blocks ``BLOCK_COLS`` columns; in a pass the kernel skips in (``skips_blocks``), a tile reads the blocks
        from the first to the last that some live token of it (every place of a dense pass, a packed pass's real tokens)
        attends to, and in any other pass every block."""
        B, T, S = mask.shape
        tiles, blocks = -(-T // TILE_TOKENS), -(-S // BLOCK_COLS)
        live = mask.copy()
        if scatter is not None:
            filled = np.zeros(B * T + 1, dtype=bool)
            filled[scatter] = True
            live &= filled[: B * T].reshape(B, T, 1)
        grid = np.zeros((B, tiles * TILE_TOKENS, blocks * BLOCK_COLS), dtype=bool)
        grid[:, :T, :S] = live
        seen = grid.reshape(B, tiles, TILE_TOKENS, blocks, BLOCK_COLS).any(axis=(2, 4))
        first = seen.argmax(-1)
        last = blocks - seen[..., ::-1].argmax(-1)
        self.kv_blocks[0] += seen.size
        self.kv_blocks[1] += int(np.where(seen.any(-1), last - first, 0).sum()) if skips_blocks(B) else seen.size

    def forward(self, tokens, positions, slots, rows, scatter, gather, mask, out):
        t0 = time.perf_counter()
        arrays = (tokens, positions, slots, scatter, mask, out)
        tokens, positions, slots, scatter, mask, out = (None if x is None else x.numpy() for x in arrays)
        B, T, _ = mask.shape
        # back to the (B, T) layout: token i sits at place i (dense) or scatter[i] (packed; B*T is padding)
        place = np.arange(len(tokens)) if scatter is None else scatter
        keep = place < B * T
        flat = [np.zeros(B * T + 1, dtype=np.int64) for _ in range(2)] + [np.full(B * T + 1, self.lm.cache.trash_col)]
        for dst, src in zip(flat, (tokens, positions, slots)):
            dst[place[keep]] = src[keep]
        tokens, positions, slots = (a[: B * T].reshape(B, T) for a in flat)
        if self.shadow.shape[0] < self.lm.cache.rows or self.shadow.shape[1] < self.lm.cache.cols:
            grown = np.zeros((max(self.lm.cache.rows, self.shadow.shape[0]), max(self.lm.cache.cols, self.shadow.shape[1])),
                             dtype=np.int64)  # never smaller: ``widen`` may keep fewer rows than before
            grown[: self.shadow.shape[0], : self.shadow.shape[1]] = self.shadow
            self.shadow = grown
        for b in range(B):
            if slots[b, 0] == 0 and positions[b, 0] == 0 and mask[b, 0, 0] and mask[b, 0].sum() == 1 and T > 1 \
                    and slots[b, 1] == 1:  # a new batch: this row starts with its document's prefix
                # the prefix is the longest gold prefix the row starts with, followed by the first label
                first = self.label_ids[LABELS[0]]
                row = tokens[b].tolist()
                L = next((n for n in range(T - len(first), 0, -1) if tuple(row[n: n + len(first)]) == first
                          and tuple(row[:n]) in self.gold), 0)
                g = self.gold.get(tuple(row[:L])) if L else None
                self.row_gold[b] = (g, L) if g is not None else None
        real = slots != self.lm.cache.trash_col
        self.shadow[np.nonzero(real)[0], slots[real]] = tokens[real]
        tok = np.full(len(out), self.junk, dtype=np.int64)
        for m, i in enumerate(out.tolist()):
            p = int(place[i])
            if p >= B * T:
                continue
            b, t = divmod(p, T)
            info = self.row_gold.get(b)
            if info is None:
                continue
            g, L = info
            seq = self.shadow[b, np.nonzero(mask[b, t])[0]].tolist()
            tok[m] = self._next(g, seq[L:])
        self.outputs += len(out)
        result = torch.from_numpy(tok), torch.full((len(out),), -0.01, dtype=torch.float32)
        self.lm.last_hidden = result[0].float()[:, None]
        self.lm.last_lse = torch.zeros(len(out))  # the pairs' logits are their log-probs
        self.seconds += time.perf_counter() - t0
        return result

    def _next(self, g, seq):
        for label, ids in self.label_ids.items():
            if tuple(seq[: len(ids)]) == ids:
                break
        else:
            return self.junk
        tail = seq[len(ids):]
        mentions = g[label]
        n = len(mentions)
        c = self.count_ids[min(n, 63)]
        if len(tail) < len(c):
            return c[len(tail)] if tail == c[: len(tail)] else self.junk
        if tail[: len(c)] != c:
            return self.junk
        rest = tail[len(c):]
        for k in range(min(n, 20), 0, -1):  # longest tags first ("<mention 12>" before "<mention 1>")
            tag = self.enc.mention_tag(k)
            if rest[: len(tag)] == tag:
                want = mentions[k - 1] + [self.eos]
                after = rest[len(tag):]
                if after == want[: len(after)] and len(after) < len(want):
                    return want[len(after)]
                return self.junk
        return self.junk


def _tokens(decoder) -> Tuple[int, int]:
    """Real and computed tokens of every pass so far, over the decoder's KV caches (``StaticLM`` counters)."""
    lms = decoder._lms
    return sum(lm.real_tokens for lm in lms), sum(lm.computed_tokens for lm in lms)


def digest(results) -> str:
    h = hashlib.sha256()
    for res in results:
        for p in res.predictions:
            h.update(repr((p.label, p.k, p.text, round(p.prob, 6), p.count, round(p.count_prob, 6))).encode())
        h.update(repr((sorted(res.counts.items()), res.unparsable_counts, res.capped_counts,
                       res.truncated_mentions)).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def doc_digest(docs) -> str:
    h = hashlib.sha256()
    for doc in docs:
        h.update(repr([(e.start_char, e.end_char, e.label_, round(e._.padellm_prob, 6)) for e in doc.ents]).encode())
        h.update(repr(sorted(doc._.padellm.items())).encode())
    return h.hexdigest()[:16]


def top_functions(prof: cProfile.Profile, n: int) -> List[Dict]:
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({name})", "calls": nc, "tottime_s": round(tt, 4),
                     "cumtime_s": round(ct, 4)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help=f"CoNLL03 test set, PaDeLLM JSONL (default {DATA})")
    p.add_argument("--docs", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=512, help="nlp.pipe batch size (docs per decode call)")
    p.add_argument("--max-batch-rows", type=int, default=256, help="documents per TreeBatch")
    p.add_argument("--repeat", type=int, default=3, help="timed runs (the best is reported)")
    p.add_argument("--forward", choices=("oracle", "tiny"), default="oracle")
    p.add_argument("--profile", action="store_true", help="also profile one run of each path with cProfile")
    p.add_argument("--span-drafts", type=int, default=4, help="span drafts per tag (default 4, as on CUDA)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_items",
                   help="a decoding setting (e.g. constrain_mentions=true: the levers' host time); repeatable")
    return p


class Workload:
    """The component on the tiny model (the oracle's forward unless ``--forward tiny``), the data, and its
    two timed paths: ``decode`` (the engine on all requests at once) and ``pipe`` (``ner.pipe``)."""

    def __init__(self, args):
        import spacy
        from transformers import AutoTokenizer

        from spacy_padellm.decoding.types import DocRequest
        from spacy_padellm.pipeline.load import parse_settings
        from spacy_padellm.text.protocol import PromptEncoder

        self.args = args
        torch.set_num_threads(1)
        tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
        enc = PromptEncoder(tok)
        data = load_data(args.data, args.docs)
        model = tiny_model(len(tok), tok.eos_token_id)
        self.nlp = spacy.blank("en")
        self.ner = self.nlp.add_pipe("padellm_ner", config={
            "model": None, "labels": LABELS, "engine": "static", "max_batch_rows": args.max_batch_rows,
            "device": "cpu", "batch_size": args.batch_size, **parse_settings(args.set_items)})
        self.ner.set_model(model, tok)
        self.decoder = self.ner.decoder
        # the GPU's layout, run eagerly: the oracle reads each pass as (B, T) places (scatter), as a graph gets it
        self.decoder.lm.segmented = False
        # decode as on CUDA: count and span drafts for batches of at most draft_max_docs (off by default on the CPU)
        self.decoder.count_drafts, self.decoder.span_drafts = 3, args.span_drafts
        self.oracle = Oracle(self.decoder.lm, enc, data) if args.forward == "oracle" else None
        self.docs_in = [self.nlp.make_doc(text) for text, _ in data]
        self.requests = [DocRequest(text, LABELS) for text, _ in data]
        self.n = len(data)

    def run_decode(self):
        return self.decoder.decode(self.requests)

    def run_pipe(self):
        docs = [self.nlp.make_doc(d.text) for d in self.docs_in]  # fresh docs (not timed: spaCy's tokenizer)
        t0 = time.perf_counter()
        out = list(self.ner.pipe(docs, batch_size=self.args.batch_size))
        return out, time.perf_counter() - t0

    def timed_run(self, path: str) -> Dict:
        """One run of ``path``: wall, model (oracle) and cache-move seconds, host ms per doc, digest, counts."""
        oracle, decoder = self.oracle, self.decoder
        decoder.stats = type(decoder.stats)()
        tokens0 = _tokens(decoder)
        before = oracle.counters() if oracle else None
        if oracle:
            oracle.shapes.clear()
        if path == "decode":
            t0 = time.perf_counter()
            results = self.run_decode()
            wall = time.perf_counter() - t0
            dig = digest(results)
        else:
            docs, wall = self.run_pipe()
            dig = doc_digest(docs)
        real, computed = (now - was for now, was in zip(_tokens(decoder), tokens0))
        spent = oracle.since(before) if oracle else dict.fromkeys(Oracle.COUNTERS, 0.0)
        model_s, cache_s = spent["seconds"], spent["cache_seconds"]
        blocks = [spent["kv_every"] / self.n, spent["kv_read"] / self.n]
        moved, head = spent["moved_cells"] / self.n, spent["head_rows"] / self.n
        return {"wall_s": round(wall, 4), "model_s": round(model_s, 4), "cache_move_s": round(cache_s, 4),
                "host_ms_per_doc": round(1000 * (wall - model_s - cache_s) / self.n, 4), "digest": dig,
                "passes": decoder.stats.forward_passes, "draft_tokens": decoder.stats.draft_tokens,
                "accepted_draft_tokens": decoder.stats.accepted_draft_tokens,
                "generated_tokens": decoder.stats.generated_tokens,
                # per doc: tokens the passes fed, and tokens their projections and MLPs ran on (padding included)
                "real_tokens_per_doc": round(real / self.n, 2), "computed_tokens_per_doc": round(computed / self.n, 2),
                # per doc and layer: the Triton attention's key/value blocks, every one of the layout and those read
                "kv_blocks_per_doc": round(blocks[0], 2), "kv_blocks_read_per_doc": round(blocks[1], 2),
                # per doc: KV-cache cells the compactions copied
                "moved_cells_per_doc": round(moved, 1),
                # per doc: rows through the LM head; and the pass shapes met (on a GPU, each a CUDA graph)
                "head_rows_per_doc": round(head, 2), "pass_shapes": len(oracle.shapes) if oracle else 0}

    def profile(self, path: str, top: int) -> List[Dict]:
        prof = cProfile.Profile()
        prof.enable()
        self.run_decode() if path == "decode" else self.run_pipe()
        prof.disable()
        return top_functions(prof, top)


def _print(report: Dict, args) -> None:
    print(f"host overhead, {report['docs']} CoNLL03 test docs, batch {args.batch_size}, {args.max_batch_rows} docs "
          f"per tree batch, forward={args.forward} {' '.join(args.set_items)} {args.label}")
    print(f"{'path':8} {'wall s':>8} {'model s':>8} {'cache s':>8} {'host ms/doc':>12} {'passes':>7} {'drafts':>7} "
          f"{'accepted':>8} {'tokens/doc':>10} {'computed':>9} {'head rows':>9} {'shapes':>6} {'kv blocks/doc':>13} "
          f"{'read':>7} {'moved/doc':>9}  digest")
    for path, r in report["paths"].items():
        print(f"{path:8} {r['wall_s']:8.3f} {r['model_s']:8.3f} {r['cache_move_s']:8.3f} {r['host_ms_per_doc']:12.3f} "
              f"{r['passes']:7d} {r['draft_tokens']:7d} {r['accepted_draft_tokens']:8d} "
              f"{r['real_tokens_per_doc']:10.1f} {r['computed_tokens_per_doc']:9.1f} "
              f"{r.get('head_rows_per_doc', 0):9.1f} {r.get('pass_shapes', 0):6d} {r['kv_blocks_per_doc']:13.1f} "
              f"{r['kv_blocks_read_per_doc']:7.1f} {r['moved_cells_per_doc']:9.1f}  {r['digest']}")
    for path, r in report["paths"].items():
        if "profile_top" in r:
            print(f"\ncProfile, {path} (tottime; the oracle's own time included):")
            for row in r["profile_top"]:
                print(f"  {row['tottime_s']:8.3f} {row['cumtime_s']:8.3f} {row['calls']:8d}  {row['function']}")


def _save(report: Dict, path: Path) -> None:
    """Add ``report`` to the runs of the JSON at ``path``, replacing a run of the same label in its place (the
    file's other keys, such as a note, kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    old = old if isinstance(old, dict) else {}
    runs = old.get("runs", [])
    at = next((i for i, r in enumerate(runs) if r.get("label") == report["label"]), len(runs))
    runs = runs[:at] + [report] + runs[at + 1:]
    path.write_text(json.dumps({**old, "runs": runs}, indent=1) + "\n")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    work = Workload(args)
    report: Dict = {"label": args.label, "docs": work.n, "batch_size": args.batch_size, "settings": args.set_items,
                    "max_batch_rows": args.max_batch_rows, "forward": args.forward, "paths": {}}
    work.run_decode()  # warm-up (tokenizer caches, allocations)
    for path in ("decode", "pipe"):
        best = None
        for _ in range(args.repeat):
            row = work.timed_run(path)
            if best is None or row["host_ms_per_doc"] < best["host_ms_per_doc"]:
                best = row
        if args.profile:
            best["profile_top"] = work.profile(path, args.top)
        report["paths"][path] = best
    _print(report, args)
    if args.json:
        _save(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
