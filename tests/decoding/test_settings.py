"""DecodeSettings: one object for every decoding setting, its checks, and the config/README built from it."""

import re
from pathlib import Path

import pytest
import spacy

from spacy_padellm.decoding.settings import DecodeSettings, SettingsError, settings_table
from spacy_padellm.pipeline.config import COMPONENT_KEYS, DEFAULT_CONFIG, config_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_round_trip_through_config():
    settings = DecodeSettings()
    assert DecodeSettings.from_config(settings.to_config()) == settings
    changed = settings.replace(max_count=7, count_bias={"PER": -1})
    assert changed.max_count == 7 and changed.count_bias == {"PER": -1.0}
    assert DecodeSettings.from_config(changed.to_config()) == changed
    assert settings.max_count == 20  # replace() leaves the original as it was


@pytest.mark.parametrize("key,value,message", [
    ("max_count", 0, "'max_count' must be a positive integer, got 0"),
    ("max_count", True, "'max_count' must be a positive integer, got True"),
    ("draft_tokens", -1, "'draft_tokens' must be a non-negative integer, got -1"),
    ("inflight_batches", 0, "'inflight_batches' must be null (4 on CUDA, 1 on the CPU) or a positive integer"),
    ("engine", "fast", "'engine' must be one of auto, static, dynamic, got 'fast'"),
    ("decoding", "beam", "'decoding' must be null or one of padellm, reference, autoreg_struct, autoreg_aug"),
    ("count_bias", "low", "'count_bias' must be a number or a dict of label -> number"),
    ("count_bias", {"PER": float("nan")}, "'count_bias' must be a number or a dict"),
    ("constrain_mentions", 1, "'constrain_mentions' must be null (the model's) or true or false, got 1"),
    ("dedupe_min_prob", 1.5, "'dedupe_min_prob' must be a number from 0 to 1"),
    ("span_source", "nouns", "'span_source' must be one of runs, words, got 'nouns'"),
])
def test_a_bad_value_is_one_error_naming_the_setting(key, value, message):
    with pytest.raises(SettingsError) as err:
        DecodeSettings(**{key: value})
    assert str(err.value).startswith(message)


def test_a_misspelt_setting_names_the_closest_one():
    with pytest.raises(SettingsError, match=r"unknown setting 'max_cout'; did you mean 'max_count'\?"):
        DecodeSettings.from_config({"max_cout": 3})
    with pytest.raises(SettingsError, match="unknown setting 'enigne'; did you mean 'engine'"):
        DecodeSettings().replace(enigne="static")


def test_levers():
    assert DecodeSettings().levers == []
    assert DecodeSettings(count_bias={"PER": 0.0}).levers == []
    assert DecodeSettings(constrain_mentions=True, count_bias=-1, dedupe_mentions=True).levers == [
        "constrain_mentions", "count_bias", "dedupe_mentions"]


def test_the_component_config_is_the_settings_plus_its_own_keys():
    own = [key for key, _, _, _ in COMPONENT_KEYS]
    assert list(DEFAULT_CONFIG) == own + list(DecodeSettings.keys()) + ["scorer"]
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"max_count": 9, "engine": "dynamic", "labels": ["PER"]})
    assert ner.settings == DecodeSettings(max_count=9, engine="dynamic")
    assert nlp.config["components"]["padellm_ner"]["max_count"] == 9


def test_the_component_refuses_bad_settings_at_add_pipe():
    nlp = spacy.blank("en")
    with pytest.raises(SettingsError, match=r"\[padellm_ner\] 'max_count_tokens' must be a positive integer"):
        nlp.add_pipe("padellm_ner", config={"max_count_tokens": 0})
    with pytest.raises(Exception, match="max_cout"):
        nlp.add_pipe("padellm_ner", config={"max_cout": 3})
    with pytest.raises(SettingsError, match=r"\[padellm_ner\] device must be"):
        nlp.add_pipe("padellm_ner", config={"device": "gpu0"})


def test_the_readme_table_is_the_generated_one():
    table = config_table()
    assert table.startswith(settings_table().splitlines()[0])
    for key in list(DecodeSettings.keys()) + [key for key, _, _, _ in COMPONENT_KEYS]:
        assert re.search(rf"^\| `{key}` \|", table, re.M), key
    assert table in README.read_text(encoding="utf8"), \
        "README's configuration table differs from `python -m spacy_padellm settings`: paste its output"
