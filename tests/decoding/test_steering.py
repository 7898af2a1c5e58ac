"""Steering.apply against the whole-vocabulary argmax it stands for (ties included)."""

import random

import torch

from spacy_padellm.decoding.tree.steering import Steering


class _LM:
    def __init__(self, weight):
        self.weight = weight

    def logits(self, hidden):
        return hidden @ self.weight


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


def test_apply_is_the_argmax_over_the_allowed_and_biased_log_probs():
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
        steer.apply(_LM(weight), hidden, tokens, logps)
        logp = torch.log_softmax(hidden @ weight, dim=-1)
        want = _reference(logp, allowed, biases)
        steered = sorted(set(allowed) | {i for i, _, _ in biases})
        assert tokens[steered].tolist() == want[steered].tolist(), trial
        assert torch.equal(logps[steered], logp[steered, want[steered]])
