"""``attention_kernel`` "triton" (``decoding/tree_attention.py``): the kernel against torch's attention and a pass
with it against one without, run by Triton's interpreter in a process of its own (``tree_attention_check.py``); the
setting's wiring and its errors here."""

from pathlib import Path

import pytest

import tiny

from spacy_padellm.decoding import tree_attention, triton_launch
from spacy_padellm.decoding.factory import choose_attention, make_static_lm
from spacy_padellm.decoding.static_lm import StaticLM
from spacy_padellm.decoding.settings import DecodeSettings


def test_kernel_and_passes_in_triton_s_interpreter():
    pytest.importorskip("triton")
    tiny.run_interpreted(Path(__file__).with_name("tree_attention_check.py"))


def test_the_setting_is_for_cuda(tiny_trained):
    model, _ = tiny_trained
    assert DecodeSettings().attention_kernel is None
    with pytest.raises(ValueError, match="attention_kernel"):
        DecodeSettings(attention_kernel="flash")
    assert not make_static_lm(model, attention_kernel="triton").tree_attention  # the CPU keeps its own attention


def test_clear_errors(tiny_trained, monkeypatch):
    model, _ = tiny_trained
    monkeypatch.setattr(triton_launch, "available", lambda: True)
    with pytest.raises(ValueError, match="segmented"):
        StaticLM.from_hf(model).use_tree_attention()  # the CPU's own passes
    lm = StaticLM.from_hf(model)
    lm.segmented = False
    lm.head_dim = 24
    with pytest.raises(ValueError, match="power-of-two head size"):
        lm.use_tree_attention()
    monkeypatch.setattr(triton_launch, "available", lambda: False)
    lm = StaticLM.from_hf(model)
    lm.segmented = False
    with pytest.raises(ValueError, match="needs Triton"):
        lm.use_tree_attention()


class _GPULM:
    """What ``choose_attention`` reads of a StaticLM on a GPU."""
    device, dtype, n_heads, n_kv, head_dim = "cuda:0", "bfloat16", 4, 1, 256

    def __init__(self, graphs: bool):
        self.use_graphs = graphs


def test_null_takes_the_kernels_where_they_run(monkeypatch, caplog):
    asked = []
    monkeypatch.setattr(tree_attention, "runs_on", lambda *a: asked.append(a))
    assert choose_attention(_GPULM(True), None) == "triton"
    assert asked == [("cuda:0", "bfloat16", 4, 1, 256)]
    assert choose_attention(_GPULM(False), None) == "sdpa"  # eager passes
    assert choose_attention(_GPULM(True), "sdpa") == "sdpa"
    assert choose_attention(_GPULM(False), "triton") == "triton"
    assert len(asked) == 1
    monkeypatch.setattr(tree_attention, "runs_on", lambda *a: "RuntimeError: no compiler")
    with caplog.at_level("WARNING", logger="spacy_padellm"):
        assert choose_attention(_GPULM(True), None) == "sdpa"
    assert "no compiler" in caplog.text and "scaled_dot_product_attention" in caplog.text
    caplog.clear()
    odd = _GPULM(True)
    odd.head_dim = 80  # heads the kernels do not take: said at the info level, not warned
    with caplog.at_level("INFO", logger="spacy_padellm"):
        assert choose_attention(odd, None) == "sdpa"
    assert [r.levelname for r in caplog.records] == ["INFO"] and "head size" in caplog.text
