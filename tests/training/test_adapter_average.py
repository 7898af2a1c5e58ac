"""Checkpoint averaging of LoRA model folders: the exact mode is the average of the merged models, the factors mode
the average of the factors, the output loads and decodes through ``padellm_ner``, and what cannot be averaged is
refused with the reason."""

import json

import pytest
import torch
from safetensors.torch import load_file

import tiny
from spacy_padellm.__main__ import main
from spacy_padellm.loading import load_model, resolve_model
from spacy_padellm.training.adapter_average import average_adapters, average_models, normalised


@pytest.fixture(scope="module")
def two_adapters(tiny_base, tmp_path_factory, train_tiny):
    """A LoRA model (rank 8, alpha 16) and the same adapter trained further, float32 adapters."""
    tmp = tmp_path_factory.mktemp("avg")
    extra = {"adapter_dtype": "float32"}
    first, _ = train_tiny(tmp / "a", tiny_base, tiny.SENTENCES, tiny.LABELS, steps=15, method="lora", lr=1e-2,
                          extra=extra)
    second, _ = train_tiny(tmp / "b", first, tiny.SENTENCES, tiny.LABELS, steps=10, method="lora", lr=1e-2,
                           extra=extra)
    return first, second


def _linear_weights(folder):
    model, _ = load_model(resolve_model(str(folder)), dtype="float32")
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def test_weights_are_normalised_and_checked():
    assert normalised([1, 3], 2) == [0.25, 0.75]
    assert normalised([], 4) == [0.25] * 4
    with pytest.raises(ValueError, match="3 weights for 2 models"):
        normalised([1, 1, 1], 2)
    with pytest.raises(ValueError, match=">= 0"):
        normalised([1, -1], 2)


def test_exact_mode_is_the_weighted_average_of_the_merged_models(two_adapters, tmp_path):
    first, second = two_adapters
    out = average_models([str(first), str(second)], str(tmp_path / "avg"), [1, 3])
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 16  # the ranks stacked, at scale 1
    w1, w2, avg = _linear_weights(first), _linear_weights(second), _linear_weights(out)
    changed = [n for n in avg if not torch.allclose(w1[n], w2[n])]
    assert changed  # the second model moved away from the first
    for name in avg:
        assert torch.allclose(avg[name], 0.25 * w1[name] + 0.75 * w2[name], atol=1e-5), name
    meta = json.loads((out / "padellm.json").read_text())
    assert [m["weight"] for m in meta["averaged"]["models"]] == [0.25, 0.75]
    assert "dev_scores" not in meta and meta["labels"] == list(tiny.LABELS)


def test_factors_mode_averages_the_factors_at_the_same_rank(two_adapters, tmp_path):
    first, second = two_adapters
    out = average_models([str(first), str(second)], str(tmp_path / "avg"), [1, 1], mode="factors")
    a, b, avg = (load_file(str(f / "adapter" / "adapter_model.safetensors")) for f in (first, second, out))
    assert set(avg) == set(a)
    assert all(torch.allclose(avg[k], 0.5 * a[k] + 0.5 * b[k]) for k in avg)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8


def test_the_average_decodes_through_the_pipeline_and_the_command_line(two_adapters, tmp_path):
    first, second = two_adapters
    out = tmp_path / "cli"
    assert main(["average", str(first), str(second), "--weights", "0,1", "--output", str(out)]) == 0
    text, _ = tiny.SENTENCES[0]
    # weight 0 on the first model: the second model's entities exactly
    assert tiny.ents(tiny.pipeline(str(out))(text)) == tiny.ents(tiny.pipeline(str(second))(text))
    with pytest.raises(ValueError, match="exists"):
        average_models([str(first), str(second)], str(out))


def test_what_cannot_be_averaged_is_refused(two_adapters, tmp_path, tiny_model):
    first, second = two_adapters
    with pytest.raises(ValueError, match="at least two"):
        average_models([str(first)], str(tmp_path / "one"))
    with pytest.raises(ValueError, match="not a LoRA model folder"):
        average_models([str(first), str(tiny_model)], str(tmp_path / "full"))
    other = tmp_path / "other_labels"
    import shutil
    shutil.copytree(second, other)
    meta = json.loads((other / "padellm.json").read_text())
    (other / "padellm.json").write_text(json.dumps({**meta, "labels": ["X"]}))
    with pytest.raises(ValueError, match="differ in 'labels'"):
        average_models([str(first), str(other)], str(tmp_path / "labels"))
    state = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    config = json.loads((first / "adapter" / "adapter_config.json").read_text())
    fewer = dict(list(state.items())[2:])
    with pytest.raises(ValueError, match="same layers"):
        average_adapters([state, fewer], [config, config], [0.5, 0.5])
    with pytest.raises(ValueError, match="one rank and scale"):
        average_adapters([state, state], [config, {**config, "lora_alpha": 8}], [0.5, 0.5], mode="factors")
    with pytest.raises(ValueError, match="DoRA"):
        average_adapters([state, state], [config, {**config, "use_dora": True}], [0.5, 0.5])
