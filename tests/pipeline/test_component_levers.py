"""padellm_ner's decoding levers (constrain_mentions, count_bias, dedupe_mentions) and draft_tokens as config
keys: they reach the decoder, bad values are clear errors, and a pipeline with all three levers keeps the
tiny model's memorised entities, also after to_disk / spacy.load. Tests of wiring alone use the untrained
model folder ``tiny_untrained``."""

import json
import logging
import shutil

import pytest
import spacy

import tiny
from tiny import ents, gold, pipeline
from spacy_padellm.pipeline.component import DEFAULT_CONFIG, PaDeLLMNER
from spacy_padellm.decoding.dynamic import TwoStepDecoder
from spacy_padellm.decoding.settings import DecodeSettings
from spacy_padellm.decoding.reference import ReferenceDecoder
from spacy_padellm.decoding.tree import TreeDecoder
from spacy_padellm.loading import ModelFolderError

LEVERS = {"constrain_mentions": True, "count_bias": -1.0, "dedupe_mentions": True}
TEXTS = [t for t, _ in tiny.SENTENCES]


@pytest.fixture(scope="module")
def levers_nlp(tiny_model):
    return pipeline(tiny_model, **LEVERS)


def test_defaults_are_off_unless_the_model_folder_records_them():
    assert {k: DEFAULT_CONFIG[k] for k in (*LEVERS, "draft_tokens")} == {
        "constrain_mentions": None, "count_bias": 0.0, "dedupe_mentions": None, "draft_tokens": 8}
    assert DecodeSettings().levers == [] and DecodeSettings(count_bias={"PER": 0.0}).levers == []
    assert DecodeSettings(constrain_mentions=True, count_bias={"PER": -1}, dedupe_mentions=True).levers == [
        "constrain_mentions", "count_bias", "dedupe_mentions"]


def test_draft_tokens_reach_the_tree_decoder(tiny_untrained):
    for config, expected in (({}, 8), ({"draft_tokens": 0}, 0)):
        decoder = pipeline(tiny_untrained, **config).get_pipe("padellm_ner").decoder
        assert isinstance(decoder, TreeDecoder) and decoder.draft_tokens == expected


def test_inflight_batches_reach_the_tree_decoders(tiny_model, tmp_path):
    assert DEFAULT_CONFIG["inflight_batches"] is None
    assert pipeline(tiny_model).get_pipe("padellm_ner").decoder.inflight_batches == 1  # null: 1 on the CPU
    nlp = pipeline(tiny_model, inflight_batches=3)
    assert nlp.get_pipe("padellm_ner").decoder.inflight_batches == 3
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("padellm_ner").decoder.inflight_batches == 3
    assert [ents(d) for d in loaded.pipe(TEXTS, batch_size=2)] == gold(tiny.SENTENCES)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"\[padellm_ner\] 'inflight_batches'"):
            PaDeLLMNER(spacy.blank("en"), labels=["PER"], inflight_batches=bad)


def test_a_lever_keeps_auto_on_the_static_engine(tiny_untrained):
    decoder = pipeline(tiny_untrained, constrain_mentions=True).get_pipe("padellm_ner").decoder
    assert isinstance(decoder, TreeDecoder)
    levers = decoder.levers
    assert levers.constrain_mentions is True and not levers.count_bias and levers.dedupe_mentions is False


def test_dynamic_engine_gets_the_levers(tiny_untrained):
    nlp = pipeline(tiny_untrained, engine="dynamic", count_bias={"PER": -1}, dedupe_mentions=True, draft_tokens=0)
    decoder = nlp.get_pipe("padellm_ner").decoder
    assert isinstance(decoder, TwoStepDecoder)
    levers = decoder.levers
    assert levers.count_bias == {"PER": -1.0} and levers.dedupe_mentions is True
    assert levers.constrain_mentions is False


def test_static_engine_gets_the_levers(tiny_untrained):
    nlp = pipeline(tiny_untrained, engine="static", count_bias={"PER": -1}, dedupe_mentions=True, dedupe_rounds=3)
    decoder = nlp.get_pipe("padellm_ner").decoder
    assert isinstance(decoder, TreeDecoder)
    levers = decoder.levers
    assert levers.count_bias == {"PER": -1.0} and (levers.dedupe_mentions, levers.dedupe_rounds) == (True, 3)
    assert levers.constrain_mentions is False
    levers = decoder.variant(constrain_mentions=True).levers
    assert (levers.constrain_mentions, levers.count_bias, levers.dedupe_rounds) == (True, {"PER": -1.0}, 3)


def test_invalid_values_are_clear_errors():
    for config, key in (({"draft_tokens": -1}, "draft_tokens"), ({"count_bias": "x"}, "count_bias"),
                        ({"count_bias": {"PER": "x"}}, "count_bias")):
        with pytest.raises(ValueError, match=key):
            spacy.blank("en").add_pipe("padellm_ner", config={"labels": ["PER"], **config})
    nlp = spacy.blank("en")
    for kwargs, key in (({"count_bias": "x"}, "count_bias"), ({"constrain_mentions": 1}, "constrain_mentions"),
                        ({"dedupe_mentions": "yes"}, "dedupe_mentions"), ({"draft_tokens": 2.5}, "draft_tokens")):
        with pytest.raises(ValueError, match=rf"\[padellm_ner\] '{key}'"):
            PaDeLLMNER(nlp, labels=["PER"], **kwargs)


def test_levers_with_reference_decoding_are_ignored_with_one_warning(tiny_model, caplog):
    nlp = pipeline(tiny_model, decoding="reference", constrain_mentions=True)
    ner = nlp.get_pipe("padellm_ner")
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        assert isinstance(ner.decoder, ReferenceDecoder)
        model, tokenizer, _ = ner._runtime
        ner.set_model(model, tokenizer, ner.source)
    assert [r.getMessage() for r in caplog.records].count(
        "[padellm_ner] the decoding levers constrain_mentions apply to decoding 'padellm' only; ignored with "
        "decoding 'reference'") == 1
    assert ents(nlp(TEXTS[0])) == gold(tiny.SENTENCES)[0]


def test_all_levers_keep_the_memorised_entities(levers_nlp):
    decoder = levers_nlp.get_pipe("padellm_ner").decoder
    assert isinstance(decoder, TreeDecoder)
    levers = decoder.levers
    assert (levers.constrain_mentions, levers.count_bias, levers.dedupe_mentions) == (True, -1.0, True)
    assert [ents(d) for d in levers_nlp.pipe(TEXTS)] == gold(tiny.SENTENCES)


def test_levers_survive_save_and_load(levers_nlp, tmp_path):
    levers_nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    config = loaded.config["components"]["padellm_ner"]
    assert {k: config[k] for k in (*LEVERS, "draft_tokens")} == {**LEVERS, "draft_tokens": 8}
    ner = loaded.get_pipe("padellm_ner")
    assert {k: ner.cfg[k] for k in LEVERS} == LEVERS
    decoder = ner.decoder
    assert isinstance(decoder, TreeDecoder)
    levers = decoder.levers
    assert (levers.constrain_mentions, levers.count_bias, levers.dedupe_mentions) == (True, -1.0, True)
    assert [ents(d) for d in loaded.pipe(TEXTS)] == gold(tiny.SENTENCES)


def test_a_model_folder_records_the_levers_it_was_chosen_with(tiny_untrained, tmp_path):
    assert pipeline(tiny_untrained).get_pipe("padellm_ner").levers == []
    folder = tmp_path / "model"
    shutil.copytree(tiny_untrained, folder)
    meta = json.loads((folder / "padellm.json").read_text())
    (folder / "padellm.json").write_text(json.dumps({**meta, "levers": {"constrain_mentions": True,
                                                                        "dedupe_mentions": True}}))
    ner = pipeline(folder).get_pipe("padellm_ner")
    assert ner.levers == ["constrain_mentions", "dedupe_mentions"] and ner.settings.constrain_mentions is None
    levers = ner.decoder.levers
    assert (levers.constrain_mentions, levers.dedupe_mentions) == (True, True)
    ner = pipeline(folder, dedupe_mentions=False).get_pipe("padellm_ner")  # a setting given wins
    assert ner.levers == ["constrain_mentions"] and ner.decoder.levers.dedupe_mentions is False
    (folder / "padellm.json").write_text(json.dumps({**meta, "levers": {"constrain_mentions": "yes"}}))
    with pytest.raises(ModelFolderError, match="'levers'"):  # when the component is built
        pipeline(folder)
