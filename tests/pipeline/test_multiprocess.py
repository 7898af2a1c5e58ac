"""padellm_ner in other processes: a pickled component leaves its loaded model behind and loads it again, so
``nlp.pipe(n_process=...)`` works under the "spawn" start method (the one CUDA allows) with the same entities."""

import multiprocessing
import pickle

import pytest
import spacy

import tiny
from tiny import ents, pipeline


@pytest.fixture(scope="module")
def nlp(tiny_model):
    return pipeline(tiny_model)


def test_a_pickled_component_loads_its_model_again(nlp):
    texts = [t for t, _ in tiny.SENTENCES]
    want = [ents(d) for d in nlp.pipe(texts)]
    ner = nlp.get_pipe("padellm_ner")
    assert ner._runtime is not None
    copy = pickle.loads(pickle.dumps(nlp))
    assert copy.get_pipe("padellm_ner")._runtime is None
    assert [ents(d) for d in copy.pipe(texts)] == want
    assert copy.get_pipe("padellm_ner")._runtime is not None


def test_a_model_set_in_memory_cannot_go_to_another_process(nlp):
    ner = nlp.get_pipe("padellm_ner")
    model, tokenizer, _ = ner._ensure_loaded()
    fresh = spacy.blank("en").add_pipe("padellm_ner", config={"labels": list(tiny.LABELS), "device": "cpu"})
    fresh.set_model(model, tokenizer)
    with pytest.raises(TypeError, match="set in memory"):
        pickle.dumps(fresh)


def test_pipe_with_spawned_processes_gives_the_same_entities(nlp):
    texts = [t for t, _ in tiny.SENTENCES] * 2
    want = [ents(d) for d in nlp.pipe(texts, batch_size=2)]
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        got = [ents(d) for d in nlp.pipe(texts, batch_size=2, n_process=2)]
    finally:
        multiprocessing.set_start_method(before, force=True)
    assert got == want


def test_a_copy_loads_onto_the_device_of_its_original(nlp):
    ner = nlp.get_pipe("padellm_ner")
    copy = pickle.loads(pickle.dumps(ner))
    assert copy._device_of_original == str(ner._ensure_loaded()[0].device) == "cpu"
    assert str(copy._device_for_loading()) == "cpu"


def test_a_copy_whose_original_device_is_missing_here_resolves_its_own(nlp, caplog):
    copy = pickle.loads(pickle.dumps(nlp.get_pipe("padellm_ner")))
    copy._device_of_original = "cuda:7"  # as from a parent on a GPU this process cannot see
    with caplog.at_level("WARNING", logger="spacy_padellm"):
        device = copy._device_for_loading()
    assert str(device) == "cpu"
    assert "cuda:7" in caplog.text


def test_a_configured_device_is_not_resolved_for_a_copy(tiny_model):
    nlp = pipeline(tiny_model, device="cpu")
    copy = pickle.loads(pickle.dumps(nlp.get_pipe("padellm_ner")))
    assert copy._device_of_original is None and str(copy._device_for_loading()) == "cpu"
