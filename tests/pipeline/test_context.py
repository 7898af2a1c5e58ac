"""pipeline/context.py without a model: a window's length counts its prompt and the longest output, and
``max_context_tokens`` must fit the model's positions and leave room for text."""

import pytest

import tiny
from spacy_padellm.decoding.settings import DecodeSettings, SettingsError
from spacy_padellm.pipeline.context import check_context, model_positions, window_budget
from spacy_padellm.text.protocol import TEMPLATES, PromptEncoder

TEXT = "Japan beat Syria in the Asian Cup ."


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(tiny.build_tokenizer(None, [t for t, _ in tiny.SENTENCES]), TEMPLATES["en"])


def test_padellm_length_is_the_prompt_and_the_longest_branch(encoder):
    settings = DecodeSettings()
    budget = window_budget("padellm", encoder, tiny.LABELS, settings)
    branch = (max(len(encoder.label(label)) for label in tiny.LABELS) + settings.max_count_tokens
              + max(len(encoder.mention_tag(k)) for k in range(21)) + settings.max_mention_tokens + 1)
    assert budget.length(TEXT) == len(encoder.prefix(TEXT)) + branch
    assert budget.overhead == budget.length("") and budget.max_tokens == 512 and budget.max_sentences == 1
    longer = window_budget("padellm", encoder, tiny.LABELS, settings.replace(max_mention_tokens=50))
    assert longer.length(TEXT) == budget.length(TEXT) + 10
    long_label = window_budget("padellm", encoder, tiny.LABELS + ["A_VERY_LONG_LABEL_NAME"], settings)
    assert long_label.length(TEXT) > budget.length(TEXT)


def test_measure_skips_the_tokenizer_only_for_texts_that_surely_fit(encoder):
    budget = window_budget("padellm", encoder, tiny.LABELS, DecodeSettings(max_context_tokens=120))
    assert budget.overhead + len(TEXT) + 4 <= 120  # the prompt and output of an empty text, the text, a margin
    assert budget.measure(TEXT) == 0 and budget.length(TEXT) <= 120
    long = TEXT * 10
    assert budget.measure(long) == budget.length(long) > 120
    cjk = "東京" * 20  # 120 bytes in 40 characters
    assert not budget.surely_fits(cjk) and budget.measure(cjk) == budget.length(cjk)


def test_autoregressive_lengths_add_the_output_budget():
    class Prompting:
        def prompt(self, text):
            return [0] * (3 + len(text.split()))

        def text_length(self, text):
            return len(text.split())

    settings = DecodeSettings(max_new_tokens=100)
    struct = window_budget("autoreg_struct", None, tiny.LABELS, settings, Prompting())
    aug = window_budget("autoreg_aug", None, tiny.LABELS, settings, Prompting())
    assert struct.length("a b c") == 3 + 3 + 100
    assert aug.length("a b c") == 3 + 3 + 3 + 100  # its output copies the text


def test_check_context(encoder):
    budget = window_budget("padellm", encoder, tiny.LABELS, DecodeSettings())
    check_context(budget, 512)
    check_context(budget, None)
    with pytest.raises(SettingsError, match="more than the 256 positions the model has; set it to 256 or less"):
        check_context(budget, 256)
    small = window_budget("padellm", encoder, tiny.LABELS, DecodeSettings(max_context_tokens=budget.overhead))
    with pytest.raises(SettingsError, match=f"take {budget.overhead} tokens without any text"):
        check_context(small, 512)


def test_model_positions():
    class Config:
        max_position_embeddings = 8192

    class Model:
        config = Config()

    assert model_positions(Model()) == 8192
    assert model_positions(object()) is None
