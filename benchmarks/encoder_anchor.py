"""An encoder to measure against: transformers' RoBERTa-base token classifier, with random weights.

NER with an encoder is one forward pass per batch and an argmax per token: its speed does not depend on its
weights, so random ones time it as a trained one would run (its tags are meaningless: no F1). ``EncoderAnchor.tag``
tokenises the texts, sorts them by length within the call (similar lengths share a batch: the encoder's best case,
little padding), runs ``RobertaForTokenClassification`` in batches and returns each text's tag ids.

No RoBERTa tokenizer can be downloaded here, so the texts are tokenised with the pipeline's own tokenizer unless
another is given: SmolLM2's is a byte-level BPE of 49,152 pieces as RoBERTa's is of 50,265 (GPT-2's), so a sentence
gets about as many tokens. The model's embedding table is sized to that tokenizer; the rest is RoBERTa-base.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from timing import latency_summary

__all__ = ["ROBERTA_BASE", "EncoderAnchor", "time_anchor"]

ROBERTA_BASE: Dict[str, int] = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1}
CONLL_TAGS = 9  # B- and I- of four types, and O


class EncoderAnchor:
    """A RoBERTa-shaped token classifier (``shape``: RoBERTa-base unless given) on ``device`` in ``dtype``."""

    def __init__(self, tokenizer, device: str = "cpu", dtype: str = "float32",
                 shape: Optional[Dict[str, int]] = None, max_length: int = 512):
        import torch
        from transformers import RobertaConfig, RobertaForTokenClassification

        self.torch, self.tokenizer, self.device = torch, tokenizer, torch.device(device)
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        shape = dict(ROBERTA_BASE if shape is None else shape)
        self.max_length = min(max_length, shape["max_position_embeddings"] - 2)
        config = RobertaConfig(vocab_size=len(tokenizer), num_labels=CONLL_TAGS, pad_token_id=self.pad_id, **shape)
        torch.manual_seed(0)
        self.model = RobertaForTokenClassification(config).to(self.device, self.dtype).eval()
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.description = (f"RobertaForTokenClassification, {shape['num_hidden_layers']} layers of "
                            f"{shape['hidden_size']}, random weights")

    def tag(self, texts: Sequence[str], batch_size: int) -> List[List[int]]:
        """Each text's tag ids (argmax per token), in input order."""
        torch = self.torch
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: List[List[int]] = [[] for _ in ids]
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start: start + batch_size]
                width = max(1, max(len(ids[i]) for i in batch))
                tokens = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[row, : len(ids[i])] = 1
                logits = self.model(input_ids=tokens.to(self.device), attention_mask=mask.to(self.device)).logits
                tags = logits.argmax(-1).cpu().tolist()
                for row, i in enumerate(batch):
                    out[i] = tags[row][: len(ids[i])]
        return out


def time_anchor(anchor: EncoderAnchor, texts: Sequence[str], batch_sizes: Sequence[int], latency_docs: int,
                now: Callable[[], float] = time.perf_counter, rounds: int = 2) -> Dict[str, Any]:
    """Sentences/s of ``anchor.tag`` over all ``texts`` at each batch size (the best kept), and the median and p90
    milliseconds of one text at a time over the first ``latency_docs``; ``now`` is a clock that waits for the
    device. Each batch size runs once over all the texts untimed (every batch shape met once, as the pipeline's
    warm-up runs do), then ``rounds`` times timed, the fastest kept (every run's seconds in ``runs_s``)."""
    rows = {}
    for bs in batch_sizes:
        anchor.tag(texts, bs)
        runs = []
        for _ in range(max(1, rounds)):
            start = now()
            anchor.tag(texts, bs)
            runs.append(now() - start)
        seconds = min(runs)
        rows[str(bs)] = {"seconds": round(seconds, 4), "sentences_per_second": round(len(texts) / seconds, 1),
                         "runs_s": [round(r, 4) for r in runs]}
    best = max(rows, key=lambda b: rows[b]["sentences_per_second"])
    ms = []
    for text in texts[: latency_docs]:
        start = now()
        anchor.tag([text], 1)
        ms.append(1000 * (now() - start))
    return {"model": anchor.description,
            "parameters": anchor.parameters, "dtype": str(anchor.dtype).replace("torch.", ""),
            "tokenizer": getattr(anchor.tokenizer, "name_or_path", ""), "docs": len(texts), "batch_sizes": rows,
            "best": {"batch_size": int(best), "sentences_per_second": rows[best]["sentences_per_second"]},
            "latency_ms": latency_summary(ms)}
