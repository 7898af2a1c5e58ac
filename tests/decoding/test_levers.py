"""``Levers``: the decoding levers of ``DecodeSettings`` in one frozen object, as every engine reads them."""

import dataclasses

import pytest

from spacy_padellm.decoding.levers import Levers
from spacy_padellm.decoding.settings import DecodeSettings, SettingsError


def test_levers_are_the_settings_of_their_names():
    settings = DecodeSettings(constrain_mentions=True, count_bias={"PER": -1}, dedupe_rounds=3)
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
