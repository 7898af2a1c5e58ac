"""``torchrun -m spacy_padellm train`` with two processes on the CPU (gloo, through accelerate's ``Accelerator``, as
``accelerate launch`` runs it on several GPUs): each process takes every other batch, gradients are averaged, only
the main process evaluates and writes, and the model learns as on one."""

import json
import os
import subprocess
import sys

import pytest

import tiny

pytest.importorskip("accelerate")


def _train(base, data, out, processes: int, batch_size: int):
    argv = ["-m", "spacy_padellm", "train", "configs/conll03.cfg", "--no-progress", "--paths.base_model", str(base),
            "--paths.base_ref", "null", "--paths.train", str(data / "train.padellm.jsonl"),
            "--paths.dev", str(data / "dev.spacy"), "--paths.output", str(out), "--training.device", "cpu",
            "--training.method", "full", "--training.lr", "0.003", "--training.warmup_ratio", "0",
            "--training.max_steps", "400", "--training.batch_size", str(batch_size), "--training.eval_every", "200"]
    if processes > 1:  # torchrun: accelerate launch runs one process on a CPU without an MPI set-up
        argv = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] + argv
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), done.stdout + done.stderr


def test_two_processes_learn_what_one_learns(tiny_base, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tiny.write_examples(data / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    tiny.write_docbin(data / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    one, _ = _train(tiny_base, data, tmp_path / "one", 1, 16)
    two, log = _train(tiny_base, data, tmp_path / "two", 2, 8)  # the same 16 examples a step, 8 on each process
    assert (one["processes"], two["processes"]) == (1, 2) and one["steps"] == two["steps"] == 400
    assert one["best"]["score"] == two["best"]["score"] == 1.0  # the memorised dev set, on one process and two
    assert log.count("step 200: dev") == 1 and log.count("step 400: dev") == 1  # only the main process evaluates
    assert two["tokens_per_second"] > 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
