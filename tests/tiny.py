"""A tiny causal LM and tokenizer built inside the test suite (no download), and data to memorise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from spacy_padellm.text.protocol import TEMPLATES, build_examples

LABELS = ["PER", "LOC", "ORG", "MISC"]

# (text, [(start_char, end_char, label), ...]) in reading order; text is CoNLL-style (tokens joined by spaces).
SENTENCES: List[Tuple[str, List[Tuple[str, str]]]] = [
    ("Japan beat Syria in the Asian Cup .", [("Japan", "LOC"), ("Syria", "LOC"), ("Asian Cup", "MISC")]),
    ("Peter Blackburn met Jordan in Amman .", [("Peter Blackburn", "PER"), ("Jordan", "PER"), ("Amman", "LOC")]),
    ("The European Commission said on Thursday it disagreed .", [("European Commission", "ORG")]),
    ("Germany and Britain talked with Werner Zwingmann in Bonn .",
     [("Germany", "LOC"), ("Britain", "LOC"), ("Werner Zwingmann", "PER"), ("Bonn", "LOC")]),
    ("Nadim Ladki reported from Jordan and Jordan again .",
     [("Nadim Ladki", "PER"), ("Jordan", "LOC"), ("Jordan", "LOC")]),
    ("It rained all day .", []),
]

NESTED_LABELS = ["protein", "DNA"]
NESTED: List[Tuple[str, List[Tuple[str, str]]]] = [
    ("IL-2 gene expression requires NF-kappa B .", [("IL-2", "protein"), ("IL-2 gene", "DNA"), ("NF-kappa B", "protein")]),
    ("The CD28 promoter binds NF-AT .", [("CD28", "protein"), ("CD28 promoter", "DNA"), ("NF-AT", "protein")]),
]


def char_spans(text: str, mentions: Sequence[Tuple[str, str]]) -> List[Tuple[int, int, str]]:
    """Character spans of mentions listed in reading order (repeats take the next occurrence)."""
    spans = []
    taken: Dict[Tuple[str, str], int] = {}
    for mention, label in mentions:
        start = text.index(mention, taken.get((mention, label), 0))
        while start > 0 and text[start - 1] != " " or (start + len(mention) < len(text) and text[start + len(mention)] != " "):
            start = text.index(mention, start + 1)
        taken[(mention, label)] = start + len(mention)
        spans.append((start, start + len(mention), label))
    return spans


def build_tokenizer(folder: Optional[Path], corpus: Sequence[str], add_bos: bool = False):
    """A byte-level BPE tokenizer, saved in ``folder`` (None: not saved). ``add_bos``: it puts BOS before
    every text (post-processor and ``add_bos_token=True``), as Gemma's tokenizer loaded from a GGUF file."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    template_text = [t.prefix + t.label + t.count + t.mention for t in TEMPLATES.values()]
    bpe.train_from_iterator(list(corpus) * 3 + template_text * 5, vocab_size=600, min_frequency=1,
                            special_tokens=["<pad>", "<s>", "</s>"])
    kwargs = {}
    if add_bos:
        bpe._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
        kwargs["add_bos_token"] = True
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", **kwargs)
    if folder is not None:
        tok.save_pretrained(folder)
    return tok


def build_base_model(folder: Path, corpus: Sequence[str], seed: int = 0) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer, saved as a Hugging Face folder (safetensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder, corpus)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def build_gemma_base_model(folder: Path, corpus: Sequence[str], seed: int = 0, final_softcap: float = 30.0) -> Path:
    """A 3-layer Gemma 3 text model (sliding, full, sliding; a sliding window of 8 tokens, shorter than every
    prompt; local and global RoPE bases apart, linear RoPE scaling on the global layers; an attention scale
    that is not head_dim ** -0.5; final logit soft-capping) with a byte-level BPE tokenizer, saved as a
    Hugging Face folder (safetensors). The RoPE settings go in the keyword arguments every transformers
    version reads (``rope_theta``, ``rope_local_base_freq``, ``rope_scaling``)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(folder, corpus)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                              max_position_embeddings=512, sliding_window=8,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                              rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
                              rope_scaling={"rope_type": "linear", "factor": 2.0},
                              final_logit_softcapping=final_softcap, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():  # Gemma's norm weights start at 0 (a scale of 1): give them some spread to test
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


# the tiny Llama's tensors under llama.cpp's names (per layer: blk.N.*)
_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def build_gguf(path: Path, base: Path) -> Path:
    """The tiny Llama of ``base`` (``build_base_model``) as a GGUF file, its matrices quantised to Q8_0 and
    its q/k rows permuted as llama.cpp's converter does (transformers undoes both on load)."""
    import gguf
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or 10000.0))
    writer.add_vocab_size(cfg.vocab_size)
    weights = {k: v.float().numpy() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    for i in range(cfg.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{name}.weight" for hf, name in _GGUF_NAMES.items()})
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
    for hf, name in names.items():
        w = weights[hf]
        n = heads.get(name.split(".")[-2])
        if n:  # llama.cpp's rotary layout
            w = w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        if w.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def build_untrained_model(folder: Path, base: Path, labels: Sequence[str]) -> Path:
    """A model folder as the trainer writes one after full fine-tuning (weights and tokenizer in the folder,
    ``padellm.json`` with ``base: null``), holding the untrained ``base``: for tests of wiring, not output."""
    import shutil

    from spacy_padellm.loading import META_FILE
    from spacy_padellm.text.protocol import tokenizer_bos_ids
    from transformers import AutoTokenizer

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(base, folder)
    bos = bool(tokenizer_bos_ids(AutoTokenizer.from_pretrained(str(folder))))
    meta = {"format": "padellm-model", "version": 1, "labels": list(labels), "template": TEMPLATES["en"].to_dict(),
            "lang": "en", "protocol": "padellm", "text_format": "raw", "bos": bos, "base": None, "adapter": None}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf8")
    return folder


def load_for_decoding(folder: Path, device: str = "cpu"):
    """The model of ``folder`` in eval mode on ``device`` and its ``PromptEncoder``: what a decoder is built on."""
    from spacy_padellm.loading import load_model, resolve_model
    from spacy_padellm.text.protocol import PromptEncoder

    model, tokenizer = load_model(resolve_model(str(folder)), device=device)
    return model.eval(), PromptEncoder(tokenizer)


def whole_and_in_blocks(model, enc, requests, key, **limits):
    """For each CPU layout of the static engine (the full one, then segments), ``key`` of every result decoded with
    whole passes and with each pass's projections and MLPs in blocks of 3 tokens (``StaticLM.row_block``)."""
    from spacy_padellm.decoding.static_lm import StaticLM
    from spacy_padellm.decoding.tree import TreeDecoder

    out = []
    for segmented in (False, True):
        results = []
        for rows in (None, 3):
            lm = StaticLM.from_hf(model)
            lm.segmented, lm.row_block = segmented, rows
            results.append([key(r) for r in TreeDecoder(lm, enc, **limits).decode(requests)])
        out.append(tuple(results))
    return out


def dense_pass(lm, rows):
    """One ``StaticLM`` pass over ``rows`` (token id lists, each causal from column 0) laid out as the GPU lays them
    out (buckets, no segments): (tokens, log-probs)."""
    import numpy as np

    B, T = len(rows), max(len(r) for r in rows)
    tokens = np.zeros((B, T), dtype=np.int64)
    for b, r in enumerate(rows):
        tokens[b, : len(r)] = r
    slots = np.tile(np.arange(T), (B, 1))
    mask = np.tile(np.tril(np.ones((T, T), dtype=bool)), (B, 1, 1))
    lm.cache.reserve(B, T)
    return lm.step(tokens, slots, slots, mask, slots)


def write_examples(path: Path, data, labels) -> Path:
    with path.open("w", encoding="utf8") as f:
        for text, mentions in data:
            for ex in build_examples(text, [(label, m) for m, label in mentions], labels):
                f.write(json.dumps(ex.to_dict()) + "\n")
    return path


def pipeline(model, **config):
    """A blank English pipeline with ``padellm_ner`` on the model folder ``model`` and the other ``config`` keys."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(model), **config})
    return nlp


def ents(doc):
    """A doc's entities as (text, label), in order."""
    return [(e.text, e.label_) for e in doc.ents]


def gold(data):
    """What ``ents`` gives for each sentence of ``data`` when every gold mention is found."""
    return [[(text[s:e], label) for s, e, label in char_spans(text, mentions)] for text, mentions in data]


def gold_doc(nlp, text, mentions, spans_key=None):
    """A doc of ``text`` with the gold ``mentions`` as ``doc.ents`` (or as the span group ``spans_key``)."""
    doc = nlp.make_doc(text)
    spans = [doc.char_span(s, e, label=l) for s, e, l in char_spans(text, mentions)]
    if spans_key:
        doc.spans[spans_key] = spans
    else:
        doc.ents = spans
    return doc


def gold_examples(nlp, data=SENTENCES, spans_key=None):
    """spaCy Examples of ``data``: unannotated predicted docs, references with the gold ``doc.ents`` (or the
    span group ``spans_key``)."""
    from spacy.training import Example

    return [Example(nlp.make_doc(text), gold_doc(nlp, text, mentions, spans_key)) for text, mentions in data]


def write_docbin(path: Path, data, labels, spans_key=None) -> Path:
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    db = DocBin(store_user_data=True)
    for text, mentions in data:
        db.add(gold_doc(nlp, text, mentions, spans_key))
    db.to_disk(path)
    return path


def run_interpreted(script: Path, *args: str) -> None:
    """Run the check script ``script`` (with ``args``) in a process of its own under Triton's interpreter
    (``TRITON_INTERPRET=1``, set before Triton is imported); an AssertionError with its output unless it ends well
    (exit 0, "every check passed" printed)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every check passed" in done.stdout
