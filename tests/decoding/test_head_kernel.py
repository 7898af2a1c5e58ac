"""``head_kernel`` "triton" (``decoding/head_kernel.py``): the kernels against ``fused.greedy`` and the steering's torch
path, and a pass and a steered decode with them against ones without, run by Triton's interpreter in a process of its
own (``head_kernel_check.py``); the setting's wiring and its errors here."""

from pathlib import Path

import pytest

import tiny

from spacy_padellm.decoding import head_kernel, triton_launch
from spacy_padellm.decoding.factory import choose_head, make_static_lm
from spacy_padellm.decoding.settings import DecodeSettings
from spacy_padellm.decoding.static_lm import StaticLM


def test_kernels_passes_and_decoding_in_triton_s_interpreter(tiny_model):
    pytest.importorskip("triton")
    tiny.run_interpreted(Path(__file__).with_name("head_kernel_check.py"), str(tiny_model))


def test_the_setting_is_for_cuda(tiny_trained):
    model, _ = tiny_trained
    assert DecodeSettings().head_kernel is None
    with pytest.raises(ValueError, match="head_kernel"):
        DecodeSettings(head_kernel="cublas")
    assert not make_static_lm(model, head_kernel="triton").head_kernel  # the CPU keeps torch's head


def test_clear_errors(tiny_trained, monkeypatch):
    model, _ = tiny_trained
    with pytest.raises(ValueError, match="segmented"):
        StaticLM.from_hf(model).use_head_kernel()  # the CPU's own passes
    monkeypatch.setattr(triton_launch, "available", lambda: False)
    lm = StaticLM.from_hf(model)
    lm.segmented = False
    with pytest.raises(ValueError, match="needs Triton"):
        lm.use_head_kernel()


class _Head:
    shape = (262144, 640)


class _GPULM:
    """What ``choose_head`` reads of a StaticLM on a GPU."""
    device, dtype, lm_head = "cuda:0", "bfloat16", _Head()

    def __init__(self, graphs: bool, float_head: bool = True):
        self.use_graphs, self.gives_pairs = graphs, float_head


def test_null_takes_the_kernels_where_they_run(monkeypatch, caplog):
    asked = []
    monkeypatch.setattr(head_kernel, "runs_on", lambda *a: asked.append(a))
    assert choose_head(_GPULM(True), None) == "triton"
    assert asked == [("cuda:0", "bfloat16", 640)]
    assert choose_head(_GPULM(False), None) == "torch"  # eager passes
    assert choose_head(_GPULM(True, float_head=False), None) == "torch"  # a quantized head
    assert choose_head(_GPULM(True), "torch") == "torch"
    assert choose_head(_GPULM(False), "triton") == "triton"
    assert len(asked) == 1
    monkeypatch.setattr(head_kernel, "runs_on", lambda *a: "RuntimeError: no compiler")
    with caplog.at_level("WARNING", logger="spacy_padellm"):
        assert choose_head(_GPULM(True), None) == "torch"
    assert "no compiler" in caplog.text and "head_kernel" in caplog.text
