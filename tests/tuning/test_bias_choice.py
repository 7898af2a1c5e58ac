"""choose_biases: one count bias per label from per-label (tp, fp, fn), by micro F1 (no model)."""

import itertools
import random

import pytest

from spacy_padellm.tuning.bias_choice import best_uniform, choose_biases, estimate, micro_f1


def test_micro_f1_sums_the_counts():
    assert micro_f1([]) == 0.0 and micro_f1([(0, 3, 4)]) == 0.0
    assert micro_f1([(1, 0, 0)]) == 1.0
    assert micro_f1([(2, 1, 0), (1, 0, 2)]) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))


def test_each_label_gets_its_own_best_bias():
    # PER under-counts at 0 (many false negatives) and gains from -2; LOC over-predicts below 0.
    table = {"PER": {-2.0: (9, 1, 1), 0.0: (4, 0, 6)}, "LOC": {-2.0: (5, 6, 0), 0.0: (5, 0, 0)}}
    choice = choose_biases(table)
    assert choice == {"PER": -2.0, "LOC": 0.0}
    assert estimate(table, choice) == micro_f1([(9, 1, 1), (5, 0, 0)])
    assert estimate(table, choice) > estimate(table, {label: best_uniform(table) for label in table})


def test_ties_keep_the_bias_nearest_zero():
    table = {"PER": {-1.0: (1, 0, 0), 0.0: (1, 0, 0), 1.0: (1, 0, 0)}, "LOC": {-1.0: (0, 0, 1), 0.0: (0, 0, 1),
                                                                             1.0: (0, 0, 1)}}
    assert best_uniform(table) == 0.0 and choose_biases(table) == {"LOC": 0.0, "PER": 0.0}


def test_labels_need_the_same_biases():
    with pytest.raises(ValueError, match="same biases"):
        choose_biases({"PER": {0.0: (1, 0, 0)}, "LOC": {-1.0: (1, 0, 0)}})
    assert choose_biases({}) == {}


def _random_table(rng, labels, biases):
    return {label: {b: (rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 9)) for b in biases} for label in labels}


def test_choice_beats_uniform_and_no_single_change_improves_it():
    rng = random.Random(0)
    biases = [-2.0, -1.0, -0.5, 0.0]
    for _ in range(200):
        table = _random_table(rng, ["PER", "LOC", "ORG", "MISC"], biases)
        choice = choose_biases(table)
        score = estimate(table, choice)
        assert score >= estimate(table, {label: best_uniform(table) for label in table})
        for label, bias in itertools.product(table, biases):
            assert estimate(table, {**choice, label: bias}) <= score


def test_choice_is_the_exhaustive_best_on_small_tables():
    rng = random.Random(1)
    biases = [-1.0, 0.0, 1.0]
    hits = 0
    for _ in range(100):
        table = _random_table(rng, ["A", "B", "C"], biases)
        best = max(estimate(table, dict(zip(table, combo))) for combo in itertools.product(biases, repeat=3))
        hits += estimate(table, choose_biases(table)) == best
    assert hits >= 95  # coordinate ascent finds the optimum of almost every small table
