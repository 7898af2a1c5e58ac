"""``Levers``: the decoding levers of ``DecodeSettings`` in one frozen object, as every engine reads them."""

import dataclasses

import pytest

from spacy_padellm.decoding.levers import RECORDED, Levers, recorded_levers
from spacy_padellm.decoding.settings import DecodeSettings, SettingsError


def test_levers_are_the_settings_of_their_names():
    settings = DecodeSettings(constrain_mentions=True, count_bias={"PER": -1}, dedupe_mentions=False, dedupe_rounds=3)
    levers = Levers.of(settings, {"max_words": 5})
    assert levers.settings() == {"constrain_mentions": True, "count_bias": {"PER": -1.0}, "dedupe_mentions": False,
                                 "dedupe_rounds": 3, "dedupe_min_prob": 0.005}
    assert settings.replace(**levers.settings()) == settings
    assert levers.trie_options == {"max_words": 5} and Levers.of(settings).trie_options == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        levers.count_bias = 0.0


def test_on_is_what_the_settings_report():
    for changes in ({}, {"count_bias": {"PER": 0.0}}, {"count_bias": -1, "dedupe_mentions": True},
                    {"constrain_mentions": True, "count_bias": {"PER": 0.0, "LOC": 2.0}, "dedupe_mentions": True}):
        settings = DecodeSettings(**changes)
        assert Levers.of(settings).on == settings.levers
    assert DecodeSettings(constrain_mentions=True, count_bias=-1, dedupe_mentions=True).levers == [
        "constrain_mentions", "count_bias", "dedupe_mentions"]


def test_replace_checks_like_settings_and_keeps_the_trie_options():
    levers = Levers.of(DecodeSettings(), {"max_words": 5})
    changed = levers.replace(constrain_mentions=True, count_bias=-2)
    assert (changed.constrain_mentions, changed.count_bias, changed.trie_options) == (True, -2.0, {"max_words": 5})
    assert levers.constrain_mentions is False
    with pytest.raises(SettingsError, match="'count_bias' must be a number"):
        levers.replace(count_bias="x")
    with pytest.raises(SettingsError, match="'max_count' is not a decoding lever"):
        levers.replace(max_count=3)


def test_a_lever_left_null_is_off_unless_the_model_folder_records_it():
    assert DecodeSettings().constrain_mentions is None and DecodeSettings().dedupe_mentions is None
    assert Levers.of(DecodeSettings()).on == [] and DecodeSettings().levers == []
    assert recorded_levers({}, DecodeSettings()) == dict.fromkeys(RECORDED, False)
    meta = {"levers": {"constrain_mentions": True, "dedupe_mentions": True}}
    assert recorded_levers(meta, DecodeSettings()) == {"constrain_mentions": True, "dedupe_mentions": True}
    # a lever the settings give stays as given
    assert recorded_levers(meta, DecodeSettings(dedupe_mentions=False)) == {"constrain_mentions": True}
    assert recorded_levers({"levers": {"dedupe_mentions": True}}, DecodeSettings()) == {
        "constrain_mentions": False, "dedupe_mentions": True}


@pytest.mark.parametrize("record", [["constrain_mentions"], {"constrain_mention": True},
                                    {"constrain_mentions": 1}, {"count_bias": -1.0}])
def test_a_record_that_is_not_levers_and_booleans_is_an_error(record):
    with pytest.raises(ValueError, match="'levers'"):
        recorded_levers({"levers": record}, DecodeSettings())
