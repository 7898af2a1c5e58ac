"""Reading and steering the count step, and the logits every engine ends with: shared by the decoders."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from .types import DocResult
from ..text.protocol import PromptEncoder, parse_count

__all__ = ["CountBias", "count_bias_for", "zero_count_token", "build_trie", "read_count", "final_logits"]


def final_logits(logits, softcap: Optional[float]):
    """Apply a model's final logit soft-capping (Gemma-style), if it has one (``logits``: a torch tensor)."""
    return (logits / softcap).tanh() * softcap if softcap else logits


CountBias = Union[float, Dict[str, float], None]


def count_bias_for(count_bias: CountBias, label: str) -> float:
    """The bias for the count "0" of ``label`` (a float applies to every label; missing labels get 0)."""
    if not count_bias:
        return 0.0
    if isinstance(count_bias, dict):
        return float(count_bias.get(label, 0.0))
    return float(count_bias)


def zero_count_token(encoder: PromptEncoder) -> int:
    """The first token of the count "0" (what the count step writes first for no mentions)."""
    return encoder.count(0)[0]


def build_trie(text: str, encoder: PromptEncoder, options: Optional[Dict[str, Any]]):
    from .constraints import MentionTrie

    return MentionTrie.build(text, encoder, **(options or {}))


def read_count(text: str, encoder: PromptEncoder, max_count: int, result: DocResult) -> int:
    """The count written in a count step's output: unparsable counts as 0, above ``max_count`` is
    clipped; both are counted in ``result``."""
    n = parse_count(text, encoder.template)
    if n is None:
        result.unparsable_counts += 1
        return 0
    if n > max_count:
        result.capped_counts += 1
        return max_count
    return n
