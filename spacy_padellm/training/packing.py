"""Shared prompts: a text's PaDeLLM training examples as one sequence holding their prompt once.

Every example of a text repeats the text's prompt (template and text) before its own label part and target, so
a text with four labels and two mentions is six examples that encode the same prompt six times. With
``[data] shared_prompts`` the examples of a text become one sequence: the prompt tokens they all share once, then
each example's remaining tokens as a branch that attends to the shared part and to itself only, at the positions
it has in its own example. Each example's loss is what it is alone (up to float rounding; a test checks it); the
static inference engine shares a text's prompt the same way. On CoNLL03's training set a text's examples take
2.3 times fewer tokens so.

Targets are aligned with the positions that predict them (position j is trained to predict ``targets[j]``), since
in a packed sequence the token before a branch's first token belongs to another branch. ``data.packed_items``
groups a training file's examples by text and packs each group (``pack``); ``collate_packed`` lays a batch out with
the mask of what each token sees, and ``model_mask`` hands that mask to the model as its attention implementation
takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

__all__ = ["PackedItem", "pack", "collate_packed", "model_mask"]


@dataclass
class PackedItem:
    """One text's examples as one sequence."""

    ids: List[int]
    targets: List[int]  # the token each position is trained to predict (-100: none)
    positions: List[int]  # each token's position in its own example
    branches: List[int]  # 0: the shared prompt tokens; i > 0: the i-th example's own tokens
    examples: int

    @property
    def unpacked_tokens(self) -> int:
        """The tokens of its examples one by one: each repeats the shared part."""
        shared = self.branches.count(0)
        return len(self.ids) + shared * (self.examples - 1)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def pack(pairs: Sequence[Tuple[List[int], List[int]]]) -> PackedItem:
    """The (prompt, target) token lists of one text's examples as one sequence. The shared part is the prompts'
    common prefix less at least the last token of each prompt, so that each example predicts its first target
    token from a position of its own branch."""
    if not pairs:
        raise ValueError("pack: no examples")
    first = pairs[0][0]
    shared = min(len(prompt) for prompt, _ in pairs) - 1
    for prompt, _ in pairs[1:]:
        shared = min(shared, _common_prefix(first, prompt))
    shared = max(shared, 0)
    ids, positions = list(first[:shared]), list(range(shared))
    branches, targets = [0] * shared, [-100] * shared
    for i, (prompt, target) in enumerate(pairs, 1):
        own = list(prompt[shared:]) + list(target)
        ids += own
        positions += range(shared, shared + len(own))
        branches += [i] * len(own)
        # the branch's position j predicts own[j + 1]; the target's tokens are predicted from the last prompt token on
        targets += [-100] * (len(prompt) - shared - 1) + list(target) + [-100]
    return PackedItem(ids, targets, positions, branches, len(pairs))


def collate_packed(items: Sequence[PackedItem], pad_id: int):
    """(input ids, mask, positions, targets, real tokens) of a batch of packed items: in the (B, 1, T, T) boolean
    mask each token attends to the earlier tokens of its branch and of the shared part (branch 0), a padding
    token to itself alone (its output is not trained)."""
    import torch

    width = max(len(item.ids) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    targets = torch.full((len(items), width), -100, dtype=torch.long)
    positions = torch.zeros((len(items), width), dtype=torch.long)
    branches = torch.full((len(items), width), -1, dtype=torch.long)
    for i, item in enumerate(items):
        n = len(item.ids)
        input_ids[i, :n] = torch.tensor(item.ids)
        targets[i, :n] = torch.tensor(item.targets)
        positions[i, :n] = torch.tensor(item.positions)
        branches[i, :n] = torch.tensor(item.branches)
    q, k = branches[:, :, None], branches[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    mask = causal & (q >= 0) & (k >= 0) & ((k == 0) | (k == q))
    mask |= torch.eye(width, dtype=torch.bool)  # padding rows: themselves (no row without a column)
    return input_ids, mask[:, None], positions, targets, int((branches >= 0).sum())


def model_mask(model, batch):
    """A batch's mask (``data.Batch``) as the model's attention takes it. A (B, T) padding mask as it is. A packed
    batch's (B, 1, T, T) boolean mask: for a model with sliding-window layers (Gemma 3), a mask per kind of layer,
    the sliding one limited to the keys fewer than ``sliding_window`` positions back (transformers builds no
    window into a mask it is given); additive for the eager implementation (which adds it to the scores)."""
    mask = batch.mask
    if mask.dim() != 4:
        return mask
    config = getattr(model, "config", None) or model.module.config
    eager = getattr(config, "_attn_implementation", "sdpa") == "eager"
    if "sliding_attention" not in (getattr(config, "layer_types", None) or ()):
        return _additive(model, mask) if eager else mask
    pos = batch.positions
    near = (pos[:, :, None] - pos[:, None, :]) < config.sliding_window
    masks = {"full_attention": mask, "sliding_attention": mask & near[:, None]}
    return {kind: _additive(model, m) if eager else m for kind, m in masks.items()}


def _additive(model, mask):
    import torch

    dtype = torch.get_autocast_dtype(mask.device.type) if torch.is_autocast_enabled(mask.device.type) \
        else next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
