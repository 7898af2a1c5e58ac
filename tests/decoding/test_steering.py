"""Steering.apply against the whole-vocabulary argmax it stands for (ties included), from whole rows of logits and
from the logits of the allowed tokens alone."""

import random

import pytest
import torch

from spacy_padellm.decoding.tree.steering import Steering


class _LM:
    def __init__(self, weight, pairs=True):
        self.weight = weight
        self.gives_pairs = pairs
        self.head_restricted = False
        self.vocab_size = weight.shape[1]
        self.whole_rows = 0  # rows whose logits were computed over the whole vocabulary

    def logits(self, hidden):
        self.whole_rows += len(hidden)
        return hidden @ self.weight

    def pair_logits(self, hidden, ids):
        return (hidden * self.weight.t()[ids]).sum(-1)


def _reference(logp, allowed, biases):
    """The argmax of each row's log-probs, its disallowed tokens at -inf and its biases added."""
    scores = logp.clone()
    for i, ids in allowed.items():
        keep = scores[i, ids].clone()
        scores[i] = float("-inf")
        scores[i, ids] = keep
    for i, tok, value in biases:
        scores[i, tok] += value
    return scores.argmax(dim=-1)


@pytest.mark.parametrize("pairs", [True, False])
def test_apply_is_the_argmax_over_the_allowed_and_biased_log_probs(pairs):
    rng = random.Random(0)
    for trial in range(300):
        vocab, n = rng.choice([7, 40]), rng.randint(1, 8)
        weight = torch.randint(-2, 3, (4, vocab)).float()  # small integers: many ties
        hidden = torch.randint(-2, 3, (n, 4)).float()
        steer, allowed, biases = Steering(), {}, []
        for i in range(n):
            if rng.random() < 0.6:
                allowed[i] = rng.sample(range(vocab), rng.randint(1, 5))
                steer.allow(i, allowed[i])
            if rng.random() < 0.4:
                biases.append((i, rng.randrange(vocab), rng.choice([-2.0, 0.5, 3.0])))
                steer.bias(*biases[-1])
        if not steer:
            continue
        tokens, logps = torch.full((n,), -1), torch.zeros(n)
        lm = _LM(weight, pairs)
        steer.apply(lm, hidden, torch.logsumexp(hidden @ weight, dim=-1), tokens, logps)
        logp = torch.log_softmax(hidden @ weight, dim=-1)
        want = _reference(logp, allowed, biases)
        steered = sorted(set(allowed) | {i for i, _, _ in biases})
        assert tokens[steered].tolist() == want[steered].tolist(), trial
        assert torch.allclose(logps[steered], logp[steered, want[steered]], atol=1e-6)
        assert lm.whole_rows == (len({i for i, _, _ in biases}) if pairs else len(steered))


def test_apply_without_the_pass_denominators_takes_whole_rows():
    weight = torch.randn(4, 30)
    hidden = torch.randn(3, 4)
    steer = Steering()
    steer.allow(0, [3, 7])
    steer.allow(2, [5])
    tokens, logps = torch.full((3,), -1), torch.zeros(3)
    lm = _LM(weight)
    steer.apply(lm, hidden, None, tokens, logps)
    logp = torch.log_softmax(hidden @ weight, dim=-1)
    assert lm.whole_rows == 2
    assert tokens[2] == 5 and tokens[0] == (3 if logp[0, 3] >= logp[0, 7] else 7) and tokens[1] == -1
    assert torch.equal(logps[[0, 2]], logp[[0, 2], tokens[[0, 2]]])


def test_allow_each_is_allow_of_each_pair():
    one, each = Steering(), Steering()
    lists = [[3, 1], [2], [0, 4]]
    for i, ids in zip([5, 7], lists):
        one.allow(i, ids)
    each.allow_each([5, 7], lists)  # as far as the shorter goes
    assert each._allow_out == one._allow_out == [5, 7]
    assert each._allow_ids == one._allow_ids and each._allow_ids[0] is lists[0]
    assert not Steering() and each


def test_a_restricted_heads_steered_log_prob_is_at_most_zero():
    """Under a restricted head the pass's log-sum-exp covers its set alone: an allowed token outside it keeps its
    choice, its log-prob capped at 0."""
    weight = torch.tensor([[0.0, 5.0, 1.0]])
    hidden = torch.ones(1, 1)
    for restricted, want in ((False, 4.0), (True, 0.0)):
        lm = _LM(weight)
        lm.head_restricted = restricted
        steer = Steering()
        steer.allow(0, [1, 2])
        tokens, logps = torch.full((1,), -1), torch.zeros(1)
        steer.apply(lm, hidden, torch.tensor([1.0]), tokens, logps)  # a denominator below token 1's logit
        assert tokens.tolist() == [1] and logps.tolist() == [want]
