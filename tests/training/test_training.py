"""Training: loss falls, memorised sentences come back, LoRA works, resume, reproducibility, bad input."""

import json

import pytest
import spacy

import tiny
from spacy_padellm.__main__ import main
from spacy_padellm.training import TrainConfigError, TrainSettings, load_settings, train


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def gold():
    return [[(t[s:e], l) for s, e, l in tiny.char_spans(t, m)] for t, m in tiny.SENTENCES]


def test_loss_falls_and_model_folder_is_complete(tiny_model):
    history = json.loads((tiny_model.parent / "history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] / 5
    meta = json.loads((tiny_model / "padellm.json").read_text())
    assert meta["labels"] == tiny.LABELS and meta["template"]["prefix"].startswith("text:")
    assert meta["bos"] is False  # the tiny tokenizer adds no BOS: prompts start without one
    assert (tiny_model / "model.safetensors").exists() and (tiny_model / "tokenizer.json").exists()


def test_lora_adapter_trains_saves_and_merges(tiny_base, tmp_path, train_tiny):
    """LoRA on a random tiny base cannot memorise (that is what the full fine-tune tests are for), but its
    loss falls, the adapter is saved small, and the merged model equals the unmerged PEFT model."""
    import torch
    from safetensors.torch import load_file

    from spacy_padellm.loading import load_model, resolve_model

    model_dir, summary = train_tiny(tmp_path, tiny_base, tiny.SENTENCES, tiny.LABELS, steps=60, method="lora",
                                    lr=1e-2, extra={"lora_r": 16, "lora_alpha": 32, "log_every": 1})
    losses = [h["loss"] for h in json.loads((tmp_path / "model" / "history.json").read_text())]
    assert sum(losses[-10:]) < sum(losses[:10])
    weights = load_file(str(model_dir / "adapter" / "adapter_model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert any(float(t.float().abs().max()) > 0 for k, t in weights.items() if "lora_B" in k)
    assert summary["trainable_parameters"] < 60000
    source = resolve_model(model_dir)
    merged, tok = load_model(source)
    unmerged, _ = load_model(source, merge_adapter=False)
    ids = torch.tensor([tok("text:\nJapan beat Syria .\nentity type:\nLOC")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, unmerged(ids).logits, atol=1e-4)


def test_same_seed_same_losses(tiny_base, tmp_path, train_tiny):
    _, a = train_tiny(tmp_path / "a", tiny_base, tiny.SENTENCES[:2], tiny.LABELS, steps=12)
    _, b = train_tiny(tmp_path / "b", tiny_base, tiny.SENTENCES[:2], tiny.LABELS, steps=12)
    ha = [h["loss"] for h in json.loads((tmp_path / "a" / "model" / "history.json").read_text())]
    hb = [h["loss"] for h in json.loads((tmp_path / "b" / "model" / "history.json").read_text())]
    assert ha == pytest.approx(hb, rel=1e-5)


def test_bfloat16_autocast_on_the_cpu(tiny_base, tmp_path, train_tiny):
    """``dtype = bfloat16`` trains under bfloat16 autocast on the CPU too (the default there stays float32): the
    summary says so, the losses differ a little from float32's and fall all the same."""
    _, fp32 = train_tiny(tmp_path / "a", tiny_base, tiny.SENTENCES[:2], tiny.LABELS, steps=12, method="lora",
                         lr=1e-2, extra={"log_every": 1})
    _, bf16 = train_tiny(tmp_path / "b", tiny_base, tiny.SENTENCES[:2], tiny.LABELS, steps=12, method="lora",
                         lr=1e-2, extra={"log_every": 1, "dtype": "bfloat16"})
    assert fp32["autocast"] is None and bf16["autocast"] == "bfloat16"
    ha = [h["loss"] for h in json.loads((tmp_path / "a" / "model" / "history.json").read_text())]
    hb = [h["loss"] for h in json.loads((tmp_path / "b" / "model" / "history.json").read_text())]
    assert ha != hb and hb == pytest.approx(ha, rel=0.05)
    assert sum(hb[-3:]) < sum(hb[:3])


@pytest.mark.parametrize("dtype,decodes_in", [("auto", "torch.float32"), ("bfloat16", "torch.bfloat16")])
def test_lora_dev_evaluation_runs_on_the_static_engine(tiny_base, tmp_path, monkeypatch, dtype, decodes_in):
    """The dev evaluation during LoRA training decodes with the static tree engine (the adapter read into its
    weights, not merged into the model being trained), in bfloat16 when training autocasts to it on the CPU."""
    from spacy_padellm.decoding.tree import TreeDecoder
    from spacy_padellm.training import trainer

    seen = []
    evaluate = trainer.evaluate_pipeline

    def spy(nlp, docs, *args, **kwargs):
        decoder = nlp.get_pipe("padellm_ner").decoder
        seen.append((type(decoder), str(decoder.lm.dtype)))
        return evaluate(nlp, docs, *args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_pipeline", spy)
    summary = train(_settings(tmp_path, tiny_base, method="lora", max_steps=4, eval_every=2, dtype=dtype),
                    progress=False, log=lambda *_: None)
    assert seen == [(TreeDecoder, decodes_in)] * 2 and summary["best"]["scores"] is not None


def _settings(tmp_path, base, **kw):
    tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    values = dict(base_model=str(base), train=str(tmp_path / "train.padellm.jsonl"), dev=str(tmp_path / "dev.spacy"),
                  output=str(tmp_path / "out"), labels=list(tiny.LABELS), method="full", batch_size=8, lr=3e-3,
                  warmup_ratio=0.0, log_every=1, device="cpu", seed=0, eval_every=5)
    values.update(kw)
    return TrainSettings(**values)


def test_dev_evaluation_keeps_best_and_resume_continues(tiny_base, tmp_path):
    first = train(_settings(tmp_path, tiny_base, max_steps=10), progress=False, log=lambda *_: None)
    assert first["best"]["step"] in (5, 10) and first["best"]["scores"]["ents_f"] is not None
    assert (tmp_path / "out" / "checkpoint" / "state.pt").exists()
    logs = []
    second = train(_settings(tmp_path, tiny_base, max_steps=15, resume=True), progress=False, log=logs.append)
    assert any("resumed" in line and "step 10" in line for line in logs)
    assert second["steps"] == 15
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == sorted(steps) and steps[-1] == 15 and len(set(steps)) == len(steps)


def test_pipeline_folder_on_request(tiny_base, tmp_path):
    train(_settings(tmp_path, tiny_base, max_steps=2, dev=None, pipeline=str(tmp_path / "pipe")), progress=False,
          log=lambda *_: None)
    nlp = spacy.load(tmp_path / "pipe")
    assert nlp.pipe_names == ["padellm_ner"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"base_model": "/does/not/exist"}, "base_model"),
        ({"train": "/does/not/exist.jsonl"}, "does not exist"),
        ({"method": "qlora"}, "method must be"),
        ({"labels": ["PER"]}, "not in \\[data\\] labels"),
        ({"text_format": "words"}, "text_format"),
        ({"nonzero_repeat": 0}, "nonzero_repeat"),
        ({"nonzero_repeat": 2, "protocol": "autoreg_aug"}, "nonzero_repeat"),
        ({"dtype": "float16"}, "dtype 'float16' on the CPU"),
    ],
)
def test_bad_settings_fail_before_work(tiny_base, tmp_path, change, message):
    with pytest.raises(TrainConfigError, match=message):
        train(_settings(tmp_path, tiny_base, max_steps=1, **change), progress=False, log=lambda *_: None)


def test_empty_train_file_and_dev_labels(tiny_base, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TrainConfigError, match="empty"):
        train(_settings(tmp_path, tiny_base, train=str(empty)), progress=False, log=lambda *_: None)
    tiny.write_docbin(tmp_path / "dev2.spacy", tiny.SENTENCES, tiny.LABELS)
    with pytest.raises(TrainConfigError, match="dev set has labels"):
        s = _settings(tmp_path, tiny_base, labels=["PER", "LOC", "ORG", "MISC"])
        s.dev = str(tmp_path / "dev2.spacy")
        (tmp_path / "train2.jsonl").write_text("\n".join(
            json.dumps(ex) for ex in [{"text": "Bonn .", "label": "LOC", "count": 1, "k": 1, "mention": "Bonn"}]))
        s.train = str(tmp_path / "train2.jsonl")
        s.labels = []
        train(s, progress=False, log=lambda *_: None)


def test_config_file_misspelt_key_and_cli_error(tmp_path, capsys):
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[training]\nlearning_rate = 0.1\n")
    with pytest.raises(TrainConfigError, match="Unknown key 'learning_rate'"):
        load_settings(str(cfg))
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learning_rate" in err
    settings = load_settings("configs/conll03.cfg", {"training.epochs": 1, "paths.dev": None})
    assert settings.epochs == 1 and settings.dev is None and settings.labels == ["PER", "LOC", "ORG", "MISC"]


def test_cli_convert_then_train_examples(tmp_path):
    col = tmp_path / "mini.txt"
    col.write_text("Japan\tB-LOC\nbeat\tO\nSyria\tB-LOC\n\nPeter\tB-PER\nBlackburn\tI-PER\n")
    assert main(["convert", str(col), str(tmp_path / "out"), "--no-progress"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "mini.padellm.jsonl").read_text().splitlines()]
    assert {"text": "Japan beat Syria", "label": "LOC", "count": 2, "k": 2, "mention": "Syria"} in lines
    assert {"text": "Peter Blackburn", "label": "LOC", "count": 0, "k": 0, "mention": ""} in lines
    assert main(["convert", str(tmp_path / "nope.txt"), str(tmp_path / "out"), "--no-progress"]) == 1


@pytest.mark.parametrize("recorded", [True, False], ids=["bos-recorded", "bos-not-recorded"])
def test_full_fine_tune_of_non_llama_bos_model_reloads_the_same(tmp_path, recorded):
    """A full fine-tune saved by the trainer (save_model_folder) and loaded back by ``evaluate``
    (load_pipeline -> padellm_ner) must be the model the trainer evaluated: the same weights and the same
    prompt ids, so the same logits. Gemma 3 (tied embeddings, sliding-window layers) with a tokenizer that
    adds BOS, as its GGUF file loads: transformers 5 does not save ``add_bos_token``, and prompts built from
    that attribute lost their BOS once reloaded (good dev scores in training, near zero from the folder).
    ``recorded``: padellm.json says whether prompts start with BOS (new folders), or not (older ones)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from spacy_padellm.baselines import AutoRegEncoder
    from spacy_padellm.pipeline.load import load_pipeline
    from spacy_padellm.text.protocol import PromptEncoder, get_template
    from spacy_padellm.training.model_folder import save_model_folder

    tok = tiny.build_tokenizer(None, [t for t, _ in tiny.SENTENCES], add_bos=True)  # in memory, as the trainer's
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              sliding_window=8, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = Gemma3ForCausalLM(config).eval()
    template = get_template("en")
    encoder = PromptEncoder(tok, template)
    assert encoder.bos_ids == [tok.bos_token_id]
    meta = {"labels": list(tiny.LABELS), "template": template.to_dict(), "lang": "en", "protocol": "padellm",
            "text_format": "raw"}
    if recorded:
        meta["bos"] = True
    folder = save_model_folder(model, tok, tmp_path / "best", meta, lora=False, base_ref={})

    ner = load_pipeline(str(folder), lang="en", config={"device": "cpu", "dtype": "float32"}).get_pipe("padellm_ner")
    loaded, loaded_tok, decoder = ner._ensure_loaded()
    assert AutoRegEncoder(loaded_tok, "autoreg_struct", bos=meta.get("bos")).bos_ids == [tok.bos_token_id]
    text = tiny.SENTENCES[1][0]
    ids = encoder.prefix(text) + encoder.label("PER")
    assert decoder.encoder.prefix(text) + decoder.encoder.label("PER") == ids
    assert type(loaded) is type(model) and loaded.config.model_type == model.config.model_type
    with torch.no_grad():
        assert torch.equal(loaded(torch.tensor([ids])).logits, model(torch.tensor([ids])).logits)


def test_saved_tokenizer_json_wins_when_transformers_rebuilds_a_different_tokenizer(tmp_path, monkeypatch):
    """transformers 5.17 rebuilds Gemma 3's tokenizer class from its vocabulary instead of the saved
    tokenizer.json and splits Chinese into characters; the model folder's tokenizer.json is then used."""
    import transformers

    from spacy_padellm.loading import ModelSource, _TOKENIZER_PROBE, load_tokenizer

    folder = tmp_path / "tok"
    saved = tiny.build_tokenizer(folder, [t for t, _ in tiny.SENTENCES])
    other = tiny.build_tokenizer(None, ["completely different words", "zzz yyy xxx"])
    src = ModelSource(location=str(folder), meta={})
    src.tokenizer_dir = folder
    want = saved(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]

    # as loaded normally: transformers' tokenizer is kept (it encodes like tokenizer.json)
    assert load_tokenizer(src)(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"] == want

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: other))
    assert other(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"] != want
    fixed = load_tokenizer(src)
    assert fixed(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"] == want
    assert fixed.decode(want) == saved.decode(want)
    assert (fixed.eos_token_id, fixed.pad_token_id, fixed.bos_token_id) == \
        (saved.eos_token_id, saved.pad_token_id, saved.bos_token_id)


def test_nonzero_repeat_repeats_only_examples_with_mentions():
    from spacy_padellm.text.protocol import PromptEncoder, TrainingExample, get_template
    from spacy_padellm.training.data import tokenize_examples

    encoder = PromptEncoder(tiny.build_tokenizer(None, [t for t, _ in tiny.SENTENCES]), get_template("en"))
    examples = [TrainingExample("Ann met Bob.", "PER", 2, 1, "Ann"), TrainingExample("Ann met Bob.", "LOC", 0, 0, "")]
    once = tokenize_examples(encoder, examples)
    thrice = tokenize_examples(encoder, examples, nonzero_repeat=3)
    assert len(once) == 2 and thrice == [once[0]] * 3 + [once[1]]


def test_learning_rate_warms_up_and_decays_to_zero_within_the_time_limit(monkeypatch):
    from types import SimpleNamespace

    from spacy_padellm.training import trainer
    from spacy_padellm.training.trainer import lr_factor

    # By steps alone: warm-up over 30 steps, half-way down at the middle of the decay, zero at the end.
    assert lr_factor(0, 30, 1000) == pytest.approx(1 / 30) and lr_factor(29, 30, 1000) == 1.0
    assert lr_factor(515, 30, 1000) == pytest.approx(0.5) and lr_factor(1000, 30, 1000) == 0.0
    # A time limit far shorter than the epochs: warm-up ends after 3% of the time, not 3% of the steps,
    # at half the time the rate is about half (a little above: warm-up took 3%), and at the limit zero.
    assert lr_factor(10, 300, 10000, time_fraction=0.03) == 1.0
    assert lr_factor(10, 300, 10000, time_fraction=0.5) == pytest.approx(0.5, abs=0.03)
    assert lr_factor(10, 300, 10000, time_fraction=1.0) == 0.0
    assert lr_factor(10, 300, 10000, time_fraction=0.01) == pytest.approx(101 / 300)

    clock = [1000.0]
    monkeypatch.setattr(trainer.time, "time", lambda: clock[0])
    state = SimpleNamespace(settings=SimpleNamespace(max_minutes=10.0), t0=1000.0)
    clock[0] += 300.0
    assert trainer._time_fraction(state) == pytest.approx(0.5)
    state.settings.max_minutes = None
    assert trainer._time_fraction(state) == 0.0


def test_lora_training_from_a_lora_model_folder_continues_its_adapter(tiny_base, tmp_path, train_tiny):
    """Training LoRA from a LoRA model folder trains that folder's adapter further (its rank wins over [lora]'s)
    and saves the whole of it: with a learning rate of 0 the saved adapter equals the one it started from, and
    with a positive one it moves away from it."""
    import torch
    from safetensors.torch import load_file

    first, _ = train_tiny(tmp_path / "a", tiny_base, tiny.SENTENCES, tiny.LABELS, steps=20, method="lora", lr=1e-2)
    kept, _ = train_tiny(tmp_path / "b", first, tiny.SENTENCES, tiny.LABELS, steps=3, method="lora", lr=0.0,
                         extra={"lora_r": 4})
    moved, _ = train_tiny(tmp_path / "c", first, tiny.SENTENCES, tiny.LABELS, steps=3, method="lora", lr=1e-2)
    start, same, other = (load_file(str(m / "adapter" / "adapter_model.safetensors")) for m in (first, kept, moved))
    assert set(start) == set(same) == set(other)
    assert all(torch.equal(start[k], same[k]) for k in start)
    assert any(not torch.equal(start[k], other[k]) for k in start)
    assert json.loads((kept / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert json.loads((kept / "padellm.json").read_text())["base"] == json.loads((first / "padellm.json").read_text())["base"]


def test_full_fine_tuning_from_a_lora_model_folder_merges_it_and_keeps_full_targets(tiny_base, tmp_path, train_tiny):
    """Full fine-tuning from a LoRA model folder starts from its merged weights, and ``full_targets`` "linear" still
    trains the decoder's linear layers alone, as from a bare base."""
    first, _ = train_tiny(tmp_path / "a", tiny_base, tiny.SENTENCES, tiny.LABELS, steps=5, method="lora", lr=1e-2)
    linear = {"full_targets": "linear"}
    _, bare = train_tiny(tmp_path / "b", tiny_base, tiny.SENTENCES, tiny.LABELS, steps=1, extra=linear)
    _, merged = train_tiny(tmp_path / "c", first, tiny.SENTENCES, tiny.LABELS, steps=1, extra=linear)
    _, whole = train_tiny(tmp_path / "d", first, tiny.SENTENCES, tiny.LABELS, steps=1)
    assert merged["trainable_parameters"] == bare["trainable_parameters"] < whole["trainable_parameters"]
