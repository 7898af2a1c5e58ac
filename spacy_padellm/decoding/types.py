"""What a decoder is given and what it returns (no torch, no spaCy): shared by every decoding engine,
the baselines and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

__all__ = ["DocRequest", "MentionPrediction", "DocResult", "DecoderStats"]


@dataclass
class DocRequest:
    """One document (or window of one) to decode: its text and the labels to ask for."""

    text: str
    labels: Sequence[str]


@dataclass
class MentionPrediction:
    label: str
    k: int
    text: str
    prob: float  # probability of the mention tokens (EOS included) under greedy decoding
    count: int
    count_prob: float


@dataclass
class DocResult:
    predictions: List[MentionPrediction] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)
    unparsable_counts: int = 0  # count outputs that were not a number (taken as 0)
    capped_counts: int = 0  # counts above max_count (clipped to it)
    truncated_mentions: int = 0  # mentions that hit max_mention_tokens without EOS (dropped)
    redecoded_mentions: int = 0  # repeats decoded again with the claimed strings excluded (dedupe_mentions)
    redecoded_dropped: int = 0  # of those, dropped: probability below dedupe_min_prob


@dataclass
class DecoderStats:
    """What a decode cost: sequential forward passes and tokens fed to the model."""

    forward_passes: int = 0
    prompt_tokens: int = 0  # tokens of prompts and forced tags fed to the model
    generated_tokens: int = 0
    draft_tokens: int = 0  # tokens fed as drafts copied from the text (tree engine), verified in the same pass
    accepted_draft_tokens: int = 0  # drafted tokens that were the model's own greedy choice

    def add(self, other: "DecoderStats") -> None:
        self.forward_passes += other.forward_passes
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens
        self.draft_tokens += other.draft_tokens
        self.accepted_draft_tokens += other.accepted_draft_tokens
