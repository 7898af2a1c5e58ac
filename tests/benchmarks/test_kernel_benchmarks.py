"""The kernel benchmarks (``attention_speed.py``, ``head_speed.py``) time CUDA kernels: on a machine without a GPU
they stop with a usage error that says so, after parsing their shared options (``timing.kernel_options``)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

import attention_speed  # noqa: E402
import head_speed  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the benchmark would run")
@pytest.mark.parametrize("script", [attention_speed, head_speed])
def test_without_a_gpu_a_usage_error(script, capsys):
    with pytest.raises(SystemExit) as stop:
        script.main(["--repeat", "2", "--rounds", "3"])
    assert stop.value.code == 2 and "no GPU here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--rounds", "many"])  # the shared options are checked
