"""``python -m spacy_padellm tune`` on the tiny model: it writes a pipeline that loads with the chosen
settings, reports the score that evaluating that pipeline on the same docs gives, and chooses the best of
what it measured."""

import json

import pytest
import spacy

import tiny
from spacy_padellm.__main__ import main
from spacy_padellm.cli.evaluate import evaluate
from spacy_padellm.tuning.bias_choice import choose_biases
from spacy_padellm.tuning.search import _describe, candidates, parse_grid, parse_variants

# memorised sentences and new ones the model gets partly wrong, so the settings score differently
DEV = tiny.SENTENCES + [
    ("Werner Blackburn beat Japan in Bonn .", [("Werner Blackburn", "PER"), ("Japan", "LOC"), ("Bonn", "LOC")]),
    ("The Asian Commission met Peter Zwingmann .", [("Asian Commission", "ORG"), ("Peter Zwingmann", "PER")]),
    ("Syria said on Thursday it talked with Amman .", [("Syria", "LOC"), ("Amman", "LOC")]),
]
GRID = "-4,0,3"


@pytest.fixture(scope="module")
def tuned(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    dev = tiny.write_docbin(tmp / "dev.spacy", DEV, tiny.LABELS)
    out = tmp / "tuned"
    code = main(["tune", str(tiny_model), str(dev), "--output", str(out), "--grid", GRID, "--batch-size", "4",
                 "--variants", "plain,constrain_mentions", "--json", str(tmp / "report.json"), "--no-progress"])
    assert code == 0
    return dev, out, json.loads((tmp / "report.json").read_text())


def test_the_saved_pipeline_carries_the_chosen_settings(tuned):
    _, out, report = tuned
    assert json.loads((out / "tune.json").read_text()) == report
    ner = spacy.load(out).get_pipe("padellm_ner")
    best = report["best"]
    assert isinstance(ner.settings.count_bias, dict) and ner.settings.count_bias == best["count_bias"]
    assert set(best["count_bias"]) == set(tiny.LABELS)
    assert ner.settings.constrain_mentions is (best["variant"] == "constrain_mentions")
    assert report["chosen_settings"]["count_bias"] == best["count_bias"]


def test_the_reported_score_is_what_evaluating_the_saved_pipeline_gives(tuned):
    dev, out, report = tuned
    scores = evaluate(str(out), str(dev), batch_size=4, progress=False)
    assert scores["docs"] == report["docs"] == len(DEV)
    assert scores["load_seconds"] > 0 and scores["seconds"] > 0  # the weights' load is timed apart
    best = report["best"]
    assert (scores["ents_p"], scores["ents_r"], scores["ents_f"]) == (best["p"], best["r"], best["f"])
    for label, prf in scores["ents_per_type"].items():
        assert prf["f"] == pytest.approx(best["per_label"][label]["f"], abs=1e-12)


def test_the_choice_is_the_best_measured_decode(tuned):
    _, _, report = tuned
    measured = list(candidates(report["variants"], report["labels"]))
    assert len(measured) == report["decodes"] == 2 * (len(GRID.split(",")) + 1)
    assert report["best"]["f"] == max(row["f"] for *_, row in measured)
    assert len({row["f"] for *_, row in measured}) > 1  # the settings do change the score here
    first = next(row for *_, row in measured if row["f"] == report["best"]["f"])
    assert first["per_label"] == report["best"]["per_label"]


def test_the_per_label_biases_are_chosen_from_the_grid_counts(tuned):
    _, _, report = tuned
    for result in report["variants"].values():
        table = {label: {float(b): (row["per_label"][label]["tp"], row["per_label"][label]["fp"],
                                    row["per_label"][label]["fn"]) for b, row in result["grid"].items()}
                 for label in report["labels"]}
        assert result["per-label"]["count_bias"] == choose_biases(table)


def test_options_are_checked_before_loading():
    off = {"constrain_mentions": False, "dedupe_mentions": False}  # not left to the model folder's record
    assert parse_variants("plain,constrain_mentions+dedupe_mentions,deduplicate") == [
        ("plain", off), ("constrain_mentions+dedupe_mentions", {"constrain_mentions": True, "dedupe_mentions": True}),
        ("deduplicate", {**off, "deduplicate": True})]
    # the progress bar names each variant as it was given, not by the levers it turns off
    assert [_describe(changes) for _, changes in parse_variants("plain,constrain_mentions,deduplicate")] == [
        "plain", "constrain_mentions", "deduplicate"]
    assert parse_grid("-2,-0.5,0") == [-2.0, -0.5, 0.0]
    for bad in ("plain,plain", "constrain_mention", "max_count"):
        with pytest.raises(ValueError):
            parse_variants(bad)
    for bad in ("-1,x", "0,0"):
        with pytest.raises(ValueError):
            parse_grid(bad)
