import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@pytest.fixture(scope="session")
def tiny_model(tiny_base, tmp_path_factory) -> Path:
    """A model folder that has memorised tiny.SENTENCES (full fine-tuning)."""
    model, _ = _train(tmp_path_factory.mktemp("tiny_ft"), tiny_base, tiny.SENTENCES, tiny.LABELS, steps=400)
    return model


@pytest.fixture(scope="session")
def tiny_nested_model(tiny_base, tmp_path_factory) -> Path:
    model, _ = _train(tmp_path_factory.mktemp("tiny_nested"), tiny_base, tiny.NESTED, tiny.NESTED_LABELS, steps=200)
    return model


@pytest.fixture(scope="session")
def train_tiny():
    return _train
