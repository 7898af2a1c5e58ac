"""SmoothQuant (``smoothing.py``) is exact in float32; its activation ranges come from decoding (``calibration.py``)."""

import shutil

import pytest
import torch

import tiny
from spacy_padellm.decoding.calibration import load_ranges, recording, recording_decoder, save_ranges
from spacy_padellm.decoding.factory import build_decoder
from spacy_padellm.decoding.settings import DecodeSettings
from spacy_padellm.decoding.quantize import Int8Weight, quantize_layers
from spacy_padellm.decoding.smoothing import smooth_layer, smooth_scales
from spacy_padellm.decoding.static_lm import StaticLM
from spacy_padellm.decoding.types import DocRequest
from spacy_padellm.loading import RANGES_FILE, export_model_folder, load_model, resolve_model
from spacy_padellm.text.protocol import PromptEncoder


@pytest.fixture(scope="module")
def trained(tiny_model):
    model, tokenizer = load_model(resolve_model(str(tiny_model)), device="cpu")
    return model.eval(), PromptEncoder(tokenizer)


def _decode(decoder, requests):
    results = decoder.decode(requests)
    return [sorted((p.label, p.text, p.prob) for p in r.predictions) for r in results], decoder.lm.last_hidden


def test_smooth_scales_follow_the_formula():
    act, w = torch.tensor([4.0, 1.0, 0.25]), torch.tensor([[1.0, -2.0, 0.5], [0.5, 1.0, -4.0]])
    s = smooth_scales(act, w, 0.5)
    assert torch.allclose(s, torch.tensor([2.0, 1.0 / 2 ** 0.5, 0.25]))
    assert torch.equal(smooth_scales(act, w, 1.0), act)


def test_calibration_records_and_smoothing_is_exact_in_float32(trained):
    model, enc = trained
    requests = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES]
    decoder = build_decoder(model, enc, DecodeSettings(max_count=5, max_mention_tokens=8), "padellm")
    base = decoder.lm.layers
    want, hidden = _decode(decoder, requests)
    with recording(decoder.lm) as ranges:
        assert _decode(decoder, requests)[0] == want  # recording does not change the results
    assert decoder.lm.layers is base
    assert len(ranges) == len(base) and all(a.max.shape == (l.wqkv.shape[1],) and b.max.shape == (l.wgu.shape[1],)
                                            for (a, b), l in zip(ranges, base))
    assert all(bool((a.max > 0).all()) and bool((b.max > 0).all()) for a, b in ranges)
    decoder.lm.layers = [smooth_layer(l, a.max, b.max, 0.5) for l, (a, b) in zip(base, ranges)]
    assert not torch.equal(decoder.lm.layers[0].ln1, base[0].ln1)
    got, got_hidden = _decode(decoder, requests)
    assert [[(l, t) for l, t, _ in r] for r in got] == [[(l, t) for l, t, _ in r] for r in want]
    assert all(abs(p - q) < 1e-5 for r, s in zip(got, want) for (_, _, p), (_, _, q) in zip(r, s))
    assert torch.allclose(got_hidden, hidden, atol=1e-5, rtol=0)
    model.padellm_int8_ranges = [(a.max, b.max) for a, b in ranges]  # int8, smoothed: the same entities
    try:
        decoder = build_decoder(model, enc, DecodeSettings(max_count=5, max_mention_tokens=8, quantize="int8"),
                                "padellm")
        assert isinstance(decoder.lm.layers[0].wqkv, Int8Weight)
        assert [[(l, t) for l, t, _ in r] for r in _decode(decoder, requests)[0]] == \
            [[(l, t) for l, t, _ in r] for r in want]
    finally:
        del model.padellm_int8_ranges


def test_recording_decoder_gives_every_cache_its_layers_back_even_on_an_error(trained):
    model, enc = trained
    settings = DecodeSettings(max_count=5, max_mention_tokens=8, inflight_batches=2, max_batch_rows=2)
    decoder = build_decoder(model, enc, settings, "padellm")
    decoder.decode([DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES])  # batches on two caches
    assert len(decoder._lms) == 2
    base = decoder.lm.layers
    with pytest.raises(RuntimeError, match="stop"):
        with recording_decoder(decoder):
            assert all(cache.layers is decoder.lm.layers is not base for cache in decoder._lms)
            raise RuntimeError("stop")
    assert all(cache.layers is base for cache in decoder._lms) and decoder.lm.layers is base


def test_quantize_layers_smooths_by_the_ranges():
    lm = StaticLM.random(hidden=32, layers=2, n_heads=2, n_kv_heads=1, intermediate=64, vocab=50, device="cpu",
                         dtype=torch.float32)
    ranges = [(torch.rand(32) * 10 + 0.1, torch.rand(32) * 10 + 0.1) for _ in lm.layers]
    layers = quantize_layers(lm.layers, "int8", ranges)
    assert all(isinstance(l.wgu, Int8Weight) and not torch.equal(l.ln1, m.ln1) and not torch.equal(l.ln2, m.ln2)
               for l, m in zip(layers, lm.layers))
    with pytest.raises(ValueError, match="ranges for 1 layers"):
        quantize_layers(lm.layers, "int8", ranges[:1])


def test_ranges_travel_with_the_model_folder(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    assert resolve_model(str(folder)).int8_ranges is None
    ranges = [(torch.tensor([1.0, 3.0001]), torch.tensor([0.5, 70000.0]))] * 2
    save_ranges(ranges, folder / RANGES_FILE)
    loaded = load_ranges(folder / RANGES_FILE)
    assert all(bool((y >= x).all()) and bool((y <= x * 1.01).all()) for p, q in zip(ranges, loaded) for x, y in zip(p, q))
    source = resolve_model(str(folder))
    assert source.int8_ranges == folder / RANGES_FILE
    model, _ = load_model(source, device="cpu")
    assert len(model.padellm_int8_ranges) == 2
    out = export_model_folder(source, tmp_path / "out", source.meta)
    assert (out / RANGES_FILE).read_bytes() == (folder / RANGES_FILE).read_bytes()


def test_calibrate_command_writes_the_ranges_a_pipeline_then_smooths_by(tiny_model, tmp_path):
    """``python -m spacy_padellm calibrate FOLDER TRAIN.jsonl``: ranges measured on the training texts, written
    into the folder; a pipeline on that folder loads them, and int8 then gives the float32 entities."""
    import json

    import spacy

    from spacy_padellm.__main__ import main
    from spacy_padellm.cli.calibrate import training_texts

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "entities": []}) + "\n" for t, _ in tiny.SENTENCES))
    assert training_texts(str(train), 3) == [t for t, _ in tiny.SENTENCES][::2][:3]
    assert main(["calibrate", str(folder), str(train), "--no-progress"]) == 0
    ranges = load_ranges(folder / RANGES_FILE)
    assert ranges and all(bool((a > 0).all()) and bool((b > 0).all()) for a, b in ranges)

    def ents(quantize):
        nlp = spacy.blank("en")
        nlp.add_pipe("padellm_ner", config={"model": str(folder), "device": "cpu", "dtype": "float32",
                                            "quantize": quantize})
        return [[(e.text, e.label_) for e in doc.ents] for doc in nlp.pipe([t for t, _ in tiny.SENTENCES])]

    assert ents("int8") == ents(None)
    assert resolve_model(str(folder)).int8_ranges == folder / RANGES_FILE
    assert main(["calibrate", str(tmp_path), str(train)]) == 1  # not a model folder: an error line, no file
    assert not (tmp_path / RANGES_FILE).exists()


def test_training_texts_reads_the_padellm_ner_data_lines_too(tmp_path):
    """``calibrate`` also takes the PaDeLLM-NER data files ``convert`` reads ([text, [start, end, mention, label],
    ...] per line); any other line is an error naming it."""
    import json

    from spacy_padellm.cli.calibrate import training_texts

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps([t, [0, 1, t[:1], "X"]]) + "\n" for t, _ in tiny.SENTENCES))
    assert training_texts(str(raw), 3) == [t for t, _ in tiny.SENTENCES][::2][:3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"sentence": "no"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl, line 2: expected"):
        training_texts(str(bad), 3)
