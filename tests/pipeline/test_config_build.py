"""``building_from_config``: true for a component built from a whole config (``spacy.load``,
``load_model_from_config``), false for one built by ``add_pipe`` (also on a pipeline from ``spacy.blank``)."""

import spacy
from spacy.language import Language

from spacy_padellm.pipeline.config_build import building_from_config

SEEN = []


@Language.factory("config_build_probe")
def make_probe(nlp, name):
    """A component that records, when built, whether it was built from a config."""
    SEEN.append(building_from_config())
    return lambda doc: doc


def built_from_config(make_pipeline) -> bool:
    """Whether the probe that ``make_pipeline()`` builds (as its last component) saw a config build."""
    SEEN.clear()
    make_pipeline()
    return SEEN[-1]


def test_add_pipe_is_not_a_config_build():
    assert not building_from_config()
    assert not built_from_config(lambda: spacy.blank("en").add_pipe("config_build_probe"))


def test_load_and_load_from_config_are_config_builds(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("config_build_probe")
    nlp.to_disk(tmp_path / "pipeline")
    assert built_from_config(lambda: spacy.load(tmp_path / "pipeline"))
    assert built_from_config(lambda: spacy.util.load_model_from_config(nlp.config))
