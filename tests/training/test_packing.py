"""Shared prompts (``[data] shared_prompts``): a text's examples packed into one sequence train exactly what they
train one by one."""

import random

import pytest
import torch

import tiny
from spacy_padellm.text.protocol import PromptEncoder, build_examples
from spacy_padellm.training import TrainSettings, train
from spacy_padellm.training.data import (collate, item_examples, item_targets, length_bucketed_batches,
                                         packed_items, tokenize_examples)
from spacy_padellm.training.packing import pack
from spacy_padellm.training.settings import TrainConfigError, check_inputs
from spacy_padellm.training.trainer import _target_loss


def test_pack_shares_the_common_prompt_and_keeps_each_target():
    item = pack([([1, 2, 3, 4], [7, 8]), ([1, 2, 3, 5, 6], [9]), ([1, 2, 3, 4], [8])])
    # the shared part stops before the shortest prompt's last token, so each branch predicts its first target
    assert item.ids == [1, 2, 3, 4, 7, 8, 5, 6, 9, 4, 8]
    assert item.branches == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert item.positions == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4]
    assert item.targets == [-100, -100, -100, 7, 8, -100, -100, 9, -100, 8, -100]
    assert item.examples == 3 and item_examples(item) == 3 and item_targets(item) == 4
    assert item.unpacked_tokens == 6 + 6 + 5  # the three examples one by one
    assert pack([([5], [6])]).ids == [5, 6] and pack([([5], [6])]).targets == [6, -100]
    with pytest.raises(ValueError):
        pack([])


def test_packed_mask_sees_the_shared_part_and_its_own_branch():
    batch = collate([pack([([1, 2, 3], [7]), ([1, 2, 4], [8])]), pack([([5, 6], [9])])], pad_id=0)
    m = batch.mask[:, 0]
    assert batch.tokens == 9 and m.shape == (2, 6, 6)
    # first item: shared [1, 2], branch 1 [3, 7], branch 2 [4, 8]
    assert m[0, 4].tolist() == [True, True, False, False, True, False]  # branch 2's first token
    assert m[0, 3].tolist() == [True, True, True, True, False, False]  # branch 1's last token
    assert m[1, 5].tolist() == [False] * 5 + [True]  # padding: itself alone


def _examples(data):
    """The (label, k) examples of ``data``, text by text (as the converter writes them)."""
    return [ex for text, mentions in data for ex in build_examples(text, [(l, m) for m, l in mentions], tiny.LABELS)]


@pytest.fixture(scope="module", params=["llama", "gemma3", "gemma3-eager"])
def tiny_lm(request, tiny_base, tmp_path_factory):
    """The tiny Llama, and a tiny Gemma 3 (sliding windows shorter than every prompt) with SDPA and with the eager
    attention (which adds the mask to the scores)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_base if request.param == "llama" else tiny.build_gemma_base_model(
        tmp_path_factory.mktemp("gemma_base"), [t for t, _ in tiny.SENTENCES])
    attention = "eager" if request.param.endswith("eager") else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, attn_implementation=attention)
    assert model.config._attn_implementation == attention
    return model, AutoTokenizer.from_pretrained(str(base))


@pytest.mark.parametrize("distributed", [False, True])
def test_packed_loss_and_gradients_equal_the_examples_one_by_one(tiny_lm, distributed):
    model, tokenizer = tiny_lm
    encoder = PromptEncoder(tokenizer)
    examples = _examples(tiny.SENTENCES[:4])
    flat = tokenize_examples(encoder, examples, nonzero_repeat=2)
    packed = packed_items(encoder, examples, nonzero_repeat=2)
    assert len(packed) == 4 and sum(item_examples(i) for i in packed) == len(flat)
    shuffled = random.Random(0).sample(examples, len(examples))  # a text's examples apart: still one sequence
    assert sorted(len(i.ids) for i in packed_items(encoder, shuffled, nonzero_repeat=2)) == \
        sorted(len(i.ids) for i in packed)
    twice = packed_items(encoder, examples + examples)  # a text that comes twice: packed twice, alike
    assert [i.ids for i in twice] == [i.ids for i in packed_items(encoder, examples)] * 2
    assert sum(item_targets(i) for i in packed) == sum(item_targets(i) for i in flat)
    assert sum(len(i.ids) for i in packed) < 0.6 * sum(len(ids) for ids, _ in flat)  # the prompts once
    assert sum(i.unpacked_tokens for i in packed) == sum(len(ids) for ids, _ in flat)
    model.zero_grad()
    a = _target_loss(model, collate(flat, tokenizer.pad_token_id), distributed)
    a.backward()
    grads_a = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    b = _target_loss(model, collate(packed, tokenizer.pad_token_id), distributed)
    b.backward()
    grads_b = [p.grad.clone() for p in model.parameters()]
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)
    for ga, gb in zip(grads_a, grads_b):
        assert (ga - gb).abs().max() <= 1e-5 * ga.abs().max() + 1e-6  # float rounding only


def test_batches_hold_about_the_batch_size_in_examples():
    rng = random.Random(0)
    sizes = [rng.randint(1, 17) for _ in range(2000)]
    batches = length_bucketed_batches([rng.randint(5, 50) for _ in sizes], 32, random.Random(0), sizes=sizes)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    counts = [sum(sizes[i] for i in b) for b in batches]
    assert abs(sum(counts) / len(counts) - 32) < 2  # on average the batch size
    assert max(counts) <= 32 + 17 // 2  # past it by at most half an item
    assert sum(1 for c in counts if c < 32 - 17) <= 2  # short of it by more than an item: a mega-batch's last only
    assert length_bucketed_batches([3, 1, 2], 2, random.Random(0)) == \
        length_bucketed_batches([3, 1, 2], 2, random.Random(0), sizes=[1, 1, 1])
    # one example an item: batch_size items of similar length a batch
    assert sorted(sorted(b) for b in length_bucketed_batches([3, 1, 2], 2, random.Random(0))) == [[0], [1, 2]]


def test_training_with_shared_prompts_learns_the_tiny_data(tiny_base, tmp_path):
    data = tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    settings = TrainSettings(base_model=str(tiny_base), train=str(data), output=str(tmp_path / "model"),
                             labels=list(tiny.LABELS), method="full", max_steps=400, batch_size=16, lr=3e-3,
                             warmup_ratio=0.0, eval_every=10**9, device="cpu", seed=0, shared_prompts=True)
    summary = train(settings, progress=False, log=lambda *_: None)
    nlp = tiny.pipeline(summary["model"])
    assert summary["examples"] == len(_examples(tiny.SENTENCES))
    assert [tiny.ents(doc) for doc in nlp.pipe([t for t, _ in tiny.SENTENCES])] == tiny.gold(tiny.SENTENCES)


def test_shared_prompts_are_for_the_padellm_protocol(tiny_base, tmp_path):
    data = tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    for change in ({"protocol": "autoreg_struct", "shared_prompts": True}, {"shared_prompts": "yes"}):
        with pytest.raises(TrainConfigError, match="shared_prompts"):
            check_inputs(TrainSettings(base_model=str(tiny_base), train=str(data), **change))
