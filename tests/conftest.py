import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def gguf_cache_folder(tmp_path_factory):
    """De-quantised GGUF weights are cached in a folder of the test run, not in the user's cache."""
    from spacy_padellm.gguf_cache import CACHE_ENV

    if CACHE_ENV in os.environ:
        yield Path(os.environ[CACHE_ENV])
        return
    folder = tmp_path_factory.mktemp("gguf_cache")
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    del os.environ[CACHE_ENV]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    corpus = [t for t, _ in tiny.SENTENCES] + [t for t, _ in tiny.NESTED]
    return tiny.build_base_model(tmp_path_factory.mktemp("tiny_base"), corpus)


def _train(tmp: Path, base: Path, data, labels, steps: int, spans_key=None, method="full", lr=3e-3, extra=None):
    from spacy_padellm.training import TrainSettings, train

    tmp.mkdir(parents=True, exist_ok=True)
    train_path = tiny.write_examples(tmp / "train.padellm.jsonl", data, labels)
    values = dict(base_model=str(base), train=str(train_path), output=str(tmp / "model"), labels=list(labels),
                  method=method, max_steps=steps, batch_size=16, lr=lr, warmup_ratio=0.0, eval_every=10**9,
                  log_every=10, device="cpu", seed=0, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    values.update(extra or {})
    settings = TrainSettings(**values)
    summary = train(settings, progress=False, log=lambda *_: None)
    return Path(summary["model"]), summary


@pytest.fixture(scope="module")
def tiny_untrained(tiny_base, tmp_path_factory) -> Path:
    """A model folder recording tiny.LABELS around the untrained tiny base: built in a second, no training.
    For tests of wiring (configuration, errors, serialisation, counters); its output is noise."""
    return tiny.build_untrained_model(tmp_path_factory.mktemp("tiny_untrained") / "model", tiny_base, tiny.LABELS)


@pytest.fixture(scope="session")
def tiny_model(tiny_base, tmp_path_factory) -> Path:
    """A model folder that has memorised tiny.SENTENCES (full fine-tuning)."""
    model, _ = _train(tmp_path_factory.mktemp("tiny_ft"), tiny_base, tiny.SENTENCES, tiny.LABELS, steps=400)
    return model


@pytest.fixture(scope="module")
def tiny_trained(tiny_model):
    """``tiny_model`` loaded on the CPU for decoders: (the model in eval mode, its ``PromptEncoder``)."""
    return tiny.load_for_decoding(tiny_model)


@pytest.fixture(scope="module")
def wiring_nlp(tiny_untrained):
    """A pipeline on ``tiny_untrained`` (mentions of at most 4 tokens): for tests of wiring, not output."""
    return tiny.pipeline(tiny_untrained, max_mention_tokens=4)


@pytest.fixture(scope="session")
def tiny_nested_model(tiny_base, tmp_path_factory) -> Path:
    model, _ = _train(tmp_path_factory.mktemp("tiny_nested"), tiny_base, tiny.NESTED, tiny.NESTED_LABELS, steps=200)
    return model


@pytest.fixture(scope="session")
def train_tiny():
    return _train


# --- Nested (GENIA-style) and Chinese data through convert -> train -> padellm_ner -------------


@pytest.fixture(scope="session")
def nested_zh_data():
    """Records in the PaDeLLM JSONL format: nested English with token offsets, end exclusive (as GENIA), and
    Chinese with character offsets, end inclusive (as Weibo/Resume): repeated strings, a span nested in a
    span of another label, the same string twice under one label, full-width punctuation, ASCII inside
    Chinese. ``nested_dup`` holds one span gold under two labels (what de-duplication cannot keep)."""
    nested = [
        ["IL-2 gene expression requires NF-kappa B .",
         [0, 1, "IL-2", "protein"], [0, 2, "IL-2 gene", "DNA"], [4, 6, "NF-kappa B", "protein"]],
        ["The CD28 promoter binds NF-AT in T cells .",
         [1, 2, "CD28", "protein"], [1, 3, "CD28 promoter", "DNA"], [4, 5, "NF-AT", "protein"],
         [6, 8, "T cells", "cell_type"]],
        ["Jurkat T cells express IL-2 and IL-2 receptor .",
         [0, 3, "Jurkat T cells", "cell_line"], [1, 3, "T cells", "cell_type"], [4, 5, "IL-2", "protein"],
         [6, 7, "IL-2", "protein"], [6, 8, "IL-2 receptor", "protein"]],
        ["No entity here .", ],
    ]
    nested_dup = [["Ets-1 binds the Ets-1 site .", [0, 1, "Ets-1", "protein"], [0, 1, "Ets-1", "DNA"],
                   [3, 5, "Ets-1 site", "DNA"]]]
    zh = [
        ["李开复在北京说：北京很好。", [0, 2, "李开复", "PER"], [4, 5, "北京", "LOC"], [8, 9, "北京", "LOC"]],
        ["（新华社）张三在ABC公司工作，ABC公司在上海。", [1, 3, "新华社", "ORG"], [5, 6, "张三", "PER"],
         [8, 12, "ABC公司", "ORG"], [16, 20, "ABC公司", "ORG"], [22, 23, "上海", "LOC"]],
        ["王五说：“我在上海！”", [0, 1, "王五", "PER"], [7, 8, "上海", "LOC"]],
        ["今天天气很好。"],
    ]
    return {"nested": nested, "nested_dup": nested_dup, "nested_labels": ["DNA", "cell_line", "cell_type", "protein"],
            "zh": zh, "zh_labels": ["LOC", "ORG", "PER"]}


@pytest.fixture(scope="session")
def nested_zh_base(nested_zh_data, tmp_path_factory) -> Path:
    corpus = [r[0] for key in ("nested", "nested_dup", "zh") for r in nested_zh_data[key]]
    return tiny.build_base_model(tmp_path_factory.mktemp("nested_zh_base"), corpus)


def _convert_and_train(tmp: Path, base: Path, records, lang: str, steps: int, spans_key=None):
    """records -> JSONL -> `convert` -> a model trained on the converted examples; (model, DocBin, report)."""
    import json

    from spacy_padellm.training import TrainSettings, convert, train

    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "data.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    report = convert(src, tmp / "corpus", lang=lang, spans_key=spans_key, show_progress=False)
    settings = TrainSettings(base_model=str(base), train=str(report.outputs[1]), output=str(tmp / "model"),
                             labels=list(report.labels), lang=lang, method="full", max_steps=steps, batch_size=16,
                             lr=3e-3, warmup_ratio=0.0, eval_every=10**9, log_every=10, device="cpu", seed=0)
    summary = train(settings, progress=False, log=lambda *_: None)
    return Path(summary["model"]), report.outputs[0], report


@pytest.fixture(scope="session")
def nested_model(nested_zh_data, nested_zh_base, tmp_path_factory):
    """A tiny model trained on the nested records (and the one with a span under two labels) after `convert`."""
    records = nested_zh_data["nested"] + nested_zh_data["nested_dup"]
    return _convert_and_train(tmp_path_factory.mktemp("nested_model"), nested_zh_base, records, "en", steps=300)


@pytest.fixture(scope="session")
def zh_model(nested_zh_data, nested_zh_base, tmp_path_factory):
    """A tiny model trained on the Chinese records through `convert --lang zh` and the zh template."""
    return _convert_and_train(tmp_path_factory.mktemp("zh_model"), nested_zh_base, nested_zh_data["zh"], "zh", steps=300)
