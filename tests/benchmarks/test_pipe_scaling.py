"""``python benchmarks/pipe_scaling.py`` on a tiny model folder on the CPU: two batch geometries in one process and one
and two worker processes, ``nlp.pipe`` with one and two processes, their entities equal, and the table, JSON and
plot."""

import json
import queue
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from pipe_scaling import _started, gather, main, parse_geometry, runnable_counts  # noqa: E402


def test_geometries_and_workers(tiny_model, tmp_path, capsys):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "out" / "pipe_scaling.json"
    assert main([str(tiny_model), str(data), "--device", "cpu", "--repeat", "2", "--rounds", "1",
                 "--geometry", "small:pipe=2,max_batch_rows=1", "--geometry", "wide:pipe=8,max_batch_rows=4",
                 "--workers", "2,1", "--n-process", "2,1", "--anchor", "4", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["docs"] == 2 * len(tiny.SENTENCES) and list(report["geometries"]) == ["small", "wide"]
    small, wide = report["geometries"]["small"], report["geometries"]["wide"]
    assert small["settings"] == {"max_batch_rows": 1} and small["pipe_batch"] == 2
    assert small["passes"] > wide["passes"] > 0  # one doc a batch takes more passes than four
    assert small["same_as_first"] == wide["same_as_first"] == 1.0 and small["span_f"] == wide["span_f"]
    counts = report["workers"]["counts"]
    assert list(counts) == ["1", "2"] and report["workers"]["geometry"] == "small"
    assert all(row["same_as_first"] == 1.0 and row["sent_s"] > 0 for row in counts.values())
    assert len(counts["2"]["runs"][0]["worker_s"]) == 2
    assert report["workers"]["reserved_gib"] == [None, None]  # GPU memory: none on the CPU
    anchor = report["anchor"]  # the encoder anchor on the same docs, and each best as a fraction of it
    assert anchor["docs"] == report["docs"] and anchor["best"]["batch_size"] == 4
    frac = report["best_vs_anchor"]
    best = max(row["sent_s"] for row in counts.values())
    encoder = anchor["best"]["sentences_per_second"]
    assert frac["workers"] in (1, 2) and frac["several_processes"] == round(best / encoder, 3)
    assert frac["one_process"] == round(max(small["sent_s"], wide["sent_s"]) / encoder, 3)
    by_pipe = report["n_process"]["counts"]  # nlp.pipe(n_process=k): the same entities from spawned processes
    assert list(by_pipe) == ["1", "2"] and all(row["same_as_first"] == 1.0 for row in by_pipe.values())
    assert all(row["sent_s"] > 0 and row["call_s"] > 0 for row in by_pipe.values())
    partial = json.loads(out.with_suffix(".partial.json").read_text())  # the rows as measured, n_process last
    assert list(partial["geometries"]) == ["small", "wide"] and list(partial["workers"]["counts"]) == ["1", "2"]
    assert list(partial["n_process"]["counts"]) == ["1", "2"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| wide | 8 | max_batch_rows=4 |" in out.with_suffix(".md").read_text()
    assert "| 2 |" in capsys.readouterr().out
    assert "`nlp.pipe(n_process=k)`" in out.with_suffix(".md").read_text()
    assert "Encoder anchor in the same run" in out.with_suffix(".md").read_text()


def test_workers_side_by_side_with_each_geometry(tiny_model, tmp_path):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "ps.json"
    assert main([str(tiny_model), str(data), "--device", "cpu", "--rounds", "1",
                 "--geometry", "small:pipe=2,max_batch_rows=1", "--geometry", "wide:pipe=8,max_batch_rows=4",
                 "--workers", "2", "--workers-geometry", "wide", "--workers-geometry", "small", "--anchor", "4",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    first, (also,) = report["workers"], report["workers_also"]  # in the order asked for
    assert first["geometry"] == "wide" and also["geometry"] == "small"
    assert all(list(w["counts"]) == ["2"] and w["counts"]["2"]["same_as_first"] == 1.0 for w in (first, also))
    frac = report["best_vs_anchor"]  # the best worker count over both geometries
    best = max((first, also), key=lambda w: w["counts"]["2"]["sent_s"])
    assert frac["workers_geometry"] == best["geometry"] and frac["workers"] == 2
    md = out.with_suffix(".md").read_text()
    assert "(wide's settings each" in md and "(small's settings each" in md
    partial = json.loads(out.with_suffix(".partial.json").read_text())
    assert partial["workers"]["geometry"] == "wide" and partial["workers_also"][0]["geometry"] == "small"
    with pytest.raises(SystemExit, match="not a --geometry name"):
        main([str(tiny_model), str(data), "--device", "cpu", "--workers", "1", "--workers-geometry", "nope"])


def test_geometry_parsing():
    assert parse_geometry("base:") == ("base", 1024, {})
    assert parse_geometry("big:pipe=4096,max_batch_rows=1024") == ("big", 4096, {"max_batch_rows": 1024})
    with pytest.raises(ValueError, match="pipe= must be positive"):
        parse_geometry("bad:pipe=0")
    with pytest.raises(ValueError, match="whole number"):
        parse_geometry("bad:pipe=many")
    with pytest.raises(ValueError, match="max_batch_rowz"):
        parse_geometry("bad:max_batch_rowz=3")


def test_counts_that_run_when_workers_fail_to_start():
    started = [(0, None, 18.5), (1, "OutOfMemoryError: CUDA out of memory", None), (2, None, 19.0)]
    alive, errors, counts = runnable_counts(started, [1, 2, 3])
    assert alive == [0, 2] and counts == [1, 2] and errors == {"1": "OutOfMemoryError: CUDA out of memory"}
    assert runnable_counts([(0, None, 1.0)], [1, 2]) == ([0], {}, [1])
    with pytest.raises(RuntimeError, match="no worker could start: boom"):
        runnable_counts([(0, "boom", None)], [1])


class _Proc:
    def __init__(self, alive=True, exitcode=None):
        self.alive, self.exitcode = alive, exitcode

    def is_alive(self):
        return self.alive


def test_a_run_that_fails_is_reported_not_waited_for():
    results = queue.Queue()
    for item in [(1, 0.0, 2.0, [[]]), (0, 0.0, 1.0, [[]])]:
        results.put(item)
    assert gather(results, 2, [_Proc(), _Proc()]) == ([(0, 0.0, 1.0, [[]]), (1, 0.0, 2.0, [[]])], None)
    results.put((0, 0.0, None, "OutOfMemoryError: CUDA out of memory"))  # a worker's exception
    results.put((1, 0.0, 3.0, [[]]))
    assert gather(results, 2, [_Proc(), _Proc()])[1] == "OutOfMemoryError: CUDA out of memory"
    results.put((0, 0.0, 1.0, [[]]))  # one answered, the other was killed: not waited for forever
    got, error = gather(results, 2, [_Proc(), _Proc(alive=False, exitcode=-9)], poll_s=0.01)
    assert got == [(0, 0.0, 1.0, [[]])] and error == "worker 1 died (exit code -9)"


def test_table_names_failed_and_skipped_counts():
    from pipe_scaling import table

    report = {"docs": 8, "device": "cpu", "geometries": {}, "anchor": None,
              "workers": {"geometry": "base", "reserved_gib": [9.4, 9.8, 9.5],
                          "counts": {"1": {"sent_s": 10.0, "same_as_first": 1.0}},
                          "failed": {"workers": 2, "error": "worker 1 died (exit code -9)"},
                          "not_run": {"3": "2 workers failed"}}}
    text = table(report)
    assert "| 1 | **10** | 1.00x | 100.00% |" in text
    assert "GiB reserved by each after its warm-up: 9.4, 9.8, 9.5" in text
    assert "| 2 | failed: worker 1 died (exit code -9) |" in text and "| 3 | not run: 2 workers failed |" in text


def test_a_worker_that_dies_before_it_starts_is_not_waited_for():
    ready = queue.Queue()
    ready.put((1, None, 9.5))
    started = _started(ready, [_Proc(alive=False, exitcode=-9), _Proc()], poll_s=0.01)
    assert started == [(0, "died before it started (exit code -9)", None), (1, None, 9.5)]
    assert runnable_counts(started, [1, 2]) == ([1], {"0": "died before it started (exit code -9)"}, [1])
