"""``python benchmarks/gpu_time.py`` on a tiny model folder (on the CPU: the times, without kernel figures): both
variants of the levers, their host waits and batch-1 passes, and the table, JSON and plot; kernels sorted into kinds."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from gpu_time import kind_of, main  # noqa: E402


def test_time_split_for_both_variants(tiny_model, tmp_path, capsys):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "out" / "gpu_time.json"
    assert main([str(tiny_model), str(data), "--device", "cpu", "--batch-size", "2", "--rounds", "1",
                 "--warm-docs", "1", "--latency-docs", "2", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["recorded", "off"] and report["docs"] == len(tiny.SENTENCES)
    for row in report["rows"].values():
        pipe = row["pipe"]
        assert pipe["passes"] > 0 and pipe["wait_s"] == 0  # on the CPU a pass's result comes with its launch
        assert abs(pipe["host_s"] + pipe["wait_s"] - pipe["wall_s"]) < 1e-2
        assert row["batch1"]["docs"] == 2 and row["batch1"]["passes_mean"] >= 1
        assert row["pipe_kernels"]["kernels"] == 0  # no device kernels on the CPU
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| recorded |" in out.with_suffix(".md").read_text() and "| off |" in capsys.readouterr().out


def test_variants_of_other_settings(tiny_model, tmp_path):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "gpu_time.json"
    assert main([str(tiny_model), str(data), "--device", "cpu", "--batch-size", "2", "--rounds", "1", "--warm-docs",
                 "1", "--latency-docs", "1", "--variant", "hv:head_vocab=text", "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["recorded", "off", "hv"] and rows["hv"]["changes"] == {"head_vocab": "text"}
    with pytest.raises(SystemExit):
        main([str(tiny_model), str(data), "--variant", "off:head_vocab=text"])  # a fixed variant's name


def test_too_few_docs_for_batch_one_is_an_error(tiny_model, tmp_path):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    with pytest.raises(SystemExit, match="--warm-docs"):
        main([str(tiny_model), str(data), "--device", "cpu", "--warm-docs", str(len(tiny.SENTENCES))])


def test_kernels_sorted_into_kinds():
    assert kind_of("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert kind_of("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT") == "matrix products"
    assert kind_of("triton_red_fused__to_copy_logsumexp_2") == "LM head softmax"
    assert kind_of("head_blocks") == kind_of("head_combine") == kind_of("choose_among") == "LM head (Triton kernels)"
    assert kind_of("triton_red_fused__to_copy_exp_log_max_sub_sum_0") == "LM head softmax"
    assert kind_of("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0") == "residual + norm"
    assert kind_of("triton_red_fused__to_copy_mean_mul_pow_rsqrt_0") == "query/key norm"
    assert kind_of("void at::native::index_elementwise_kernel<128, 4>") == "cache writes, gathers"
    assert kind_of("void at::native::elementwise_kernel<128, 4>") == "strided copies"
    assert kind_of("Memset (Unknown)") == "other"
    assert kind_of("tree_attention") == "attention"
    assert kind_of("rope_cache") == "query/key norm, RoPE, cache writes (one Triton kernel)"
