"""Choosing a count bias per label from per-label span counts (pure; no model, no spaCy).

``table[label][bias]`` holds the (tp, fp, fn) that ``label`` got when every label was decoded with the count
bias ``bias``. Labels decode independently, so a choice of one bias per label is estimated by summing the
counts each label got at its bias; ``choose_biases`` maximises that micro F1 by coordinate ascent.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Sequence, Tuple

__all__ = ["Counts", "micro_f1", "estimate", "best_uniform", "choose_biases"]

Counts = Tuple[int, int, int]  # (true positives, false positives, false negatives)
Table = Mapping[str, Mapping[float, Counts]]


def micro_f1(counts: Iterable[Counts]) -> float:
    """F1 of the summed counts (0.0 when nothing is right)."""
    tp = fp = fn = 0
    for t, p, n in counts:
        tp, fp, fn = tp + t, fp + p, fn + n
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def estimate(table: Table, choice: Mapping[str, float]) -> float:
    """The micro F1 that ``choice`` (label -> bias) gets by the table's counts."""
    return micro_f1(table[label][choice[label]] for label in table)


def _biases(table: Table) -> Sequence[float]:
    """The biases every label was measured with, the smallest change first (ties go to it)."""
    grids = {frozenset(row) for row in table.values()}
    if len(grids) != 1:
        raise ValueError("every label needs counts for the same biases")
    return sorted(next(iter(grids)), key=lambda b: (abs(b), b))


def best_uniform(table: Table) -> float:
    """The one bias for all labels with the best micro F1 (ties: the one nearest 0)."""
    biases = _biases(table)
    return max(biases, key=lambda b: (estimate(table, {label: b for label in table}), -biases.index(b)))


def choose_biases(table: Table) -> Dict[str, float]:
    """One bias per label maximising micro F1: from the best uniform bias, each label in turn takes the bias
    that raises the estimate most with the others held, until no label's change raises it (it rises with
    every change and the choices are finite, so this ends). Never worse than the best uniform bias."""
    if not table:
        return {}
    biases = _biases(table)
    start = best_uniform(table)
    choice = {label: start for label in sorted(table)}
    improved = True
    while improved:
        improved = False
        for label in choice:
            current = estimate(table, choice)
            best = max(biases, key=lambda b: (estimate(table, {**choice, label: b}), -biases.index(b)))
            if estimate(table, {**choice, label: best}) > current:
                choice[label] = best
                improved = True
    return choice
