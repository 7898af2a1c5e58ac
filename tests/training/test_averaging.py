"""The moving average of the trainable weights: its arithmetic, the swap in and out, the checkpoint, and a training
whose saved model and dev scores come from the average."""

import json

import pytest
import torch
from safetensors.torch import load_file

import tiny
from spacy_padellm.training import TrainConfigError, TrainSettings, train
from spacy_padellm.training.averaging import WeightAverage


def _param(*values):
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))


def test_average_follows_the_weights_with_a_ramped_decay():
    w = _param(0.0, 0.0)
    avg = WeightAverage([("w", w)], decay=0.99)
    expected = torch.zeros(2)
    for step in range(1, 30):
        with torch.no_grad():
            w.fill_(float(step))
        d = min(0.99, (1 + avg.updates) / (10 + avg.updates))
        expected = d * expected + (1 - d) * w.detach()
        avg.update()
        assert torch.allclose(avg.average[0], expected)
    assert avg.current_decay() == pytest.approx(min(0.99, 30 / 39))
    assert 0 < float(avg.average[0][0]) < 29  # behind the weights, ahead of where they started


def test_applied_swaps_the_average_in_and_the_weights_back_even_on_error():
    w = _param(1.0, 2.0)
    avg = WeightAverage([("w", w)], decay=0.5)
    with torch.no_grad():
        w.copy_(torch.tensor([5.0, 6.0]))
    avg.update()
    inside = avg.average[0].clone()
    with avg.applied():
        assert torch.equal(w.detach(), inside)
    assert torch.equal(w.detach(), torch.tensor([5.0, 6.0]))
    with pytest.raises(RuntimeError):
        with avg.applied():
            raise RuntimeError("decoding failed")
    assert torch.equal(w.detach(), torch.tensor([5.0, 6.0]))


def test_state_dict_round_trip_and_a_missing_parameter():
    a, b = _param(1.0), _param(2.0)
    avg = WeightAverage([("a", a), ("b", b)], decay=0.9)
    avg.update()
    other = WeightAverage([("a", _param(0.0)), ("b", _param(0.0))], decay=0.9)
    other.load_state_dict(avg.state_dict(), avg.updates)
    assert all(torch.equal(x, y) for x, y in zip(avg.average, other.average)) and other.updates == 1
    with pytest.raises(ValueError, match="lacks 1 parameters"):
        other.load_state_dict({"a": torch.zeros(1)}, 1)


@pytest.mark.parametrize("decay", [1.0, -0.1, "0.9", True])
def test_bad_decay_is_refused(decay):
    with pytest.raises(ValueError, match="up to but not including 1"):
        WeightAverage([("w", _param(0.0))], decay)


def _settings(tmp_path, base, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    values = dict(base_model=str(base), train=str(tmp_path / "train.padellm.jsonl"), dev=str(tmp_path / "dev.spacy"),
                  output=str(tmp_path / "out"), labels=list(tiny.LABELS), method="lora", batch_size=8, lr=1e-2,
                  warmup_ratio=0.0, log_every=1, device="cpu", seed=0, eval_every=4, lora_r=4, lora_alpha=8,
                  lora_dropout=0.0)
    values.update(kw)
    return TrainSettings(**values)


def _adapter(folder):
    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def test_training_saves_and_evaluates_the_average_and_resumes_it(tiny_base, tmp_path):
    """With ``ema_decay`` the best model folder holds the averaged weights (the checkpoint's average, not its raw
    weights), padellm.json records the decay, and a resumed training carries the average on."""
    plain = train(_settings(tmp_path / "a", tiny_base, max_steps=8, eval_every=8), progress=False,
                  log=lambda *_: None)
    summary = train(_settings(tmp_path / "b", tiny_base, max_steps=8, eval_every=8, ema_decay=0.9), progress=False,
                    log=lambda *_: None)
    ckpt = tmp_path / "b" / "out" / "checkpoint"
    raw, average = load_file(str(ckpt / "trainable.safetensors")), load_file(str(ckpt / "average.safetensors"))
    assert raw.keys() == average.keys() and any(not torch.equal(raw[k], average[k]) for k in raw)
    plain_raw = load_file(str(tmp_path / "a" / "out" / "checkpoint" / "trainable.safetensors"))
    assert all(torch.equal(raw[k], plain_raw[k]) for k in raw)  # the raw weights train as without an average
    assert summary["best"]["step"] == 8  # one evaluation: the saved adapter is the average at step 8
    saved = _adapter(tmp_path / "b" / "out" / "best")
    assert all(torch.equal(saved[k.replace(".default", "")], average[k].to(torch.bfloat16)) for k in average)
    meta = json.loads((tmp_path / "b" / "out" / "best" / "padellm.json").read_text())
    assert meta["training"]["ema_decay"] == 0.9
    assert "ema_decay" not in json.loads((tmp_path / "a" / "out" / "best" / "padellm.json").read_text())["training"]
    assert plain["best"]["scores"] is not None and summary["best"]["scores"] is not None
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["average_updates"] == 8
    train(_settings(tmp_path / "b", tiny_base, max_steps=12, ema_decay=0.9, resume=True), progress=False,
          log=lambda *_: None)
    assert torch.load(ckpt / "state.pt", weights_only=True)["average_updates"] == 12


def test_bad_ema_decay_fails_before_work(tiny_base, tmp_path):
    with pytest.raises(TrainConfigError, match="ema_decay must be a number"):
        train(_settings(tmp_path, tiny_base, max_steps=1, ema_decay=1.0), progress=False, log=lambda *_: None)
