"""``python -m spacy_padellm annotate``: bulk annotation, locally and on Ray Data (CPU), with the tiny model.

The Ray tests share one module-scoped ``ray.init(num_cpus=2)`` and are skipped when Ray is not installed.
"""

import json
import sys
from pathlib import Path

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import DocBin

import tiny
from spacy_padellm.annotate.shards import InputError, find_shards
from spacy_padellm.cli import annotate as annotate_command
from spacy_padellm.__main__ import main

TEXTS = [t for t, _ in tiny.SENTENCES]

# Input shards: name -> texts, in order (empty and whitespace docs included).
JSONL_TEXTS = TEXTS[:3] + [""]
TEXT_TEXTS = TEXTS[3:] + ["", "  "]
DOCBIN_TEXTS = TEXTS[:2]


def ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def write_inputs(folder: Path) -> dict:
    """Three shards of three kinds: {output name: texts}."""
    (folder / "sub").mkdir(parents=True)
    with (folder / "a.jsonl").open("w", encoding="utf8") as f:
        for i, text in enumerate(JSONL_TEXTS):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
            if i == 1:
                f.write("\n")  # a blank line in JSONL is not a doc
    (folder / "sub" / "b.txt").write_text("\n".join(TEXT_TEXTS) + "\n", encoding="utf8")
    tiny.write_docbin(folder / "c.spacy", tiny.SENTENCES[:2], tiny.LABELS)
    (folder / "empty.txt").write_text("")  # a shard with no docs still gets its (empty) output
    return {"a": JSONL_TEXTS, "sub/b": TEXT_TEXTS, "c": DOCBIN_TEXTS, "empty": []}


def read_docs(path: Path, vocab):
    return list(DocBin().from_disk(path).get_docs(vocab))


@pytest.fixture(scope="module")
def pipeline_dir(tiny_model, tmp_path_factory) -> Path:
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_model)})
    path = tmp_path_factory.mktemp("annotate_pipeline") / "pipeline"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def nlp(pipeline_dir):
    return spacy.load(pipeline_dir)


@pytest.fixture(scope="module")
def expected(nlp):
    """What plain nlp.pipe gives for every text the inputs hold."""
    texts = list(dict.fromkeys(JSONL_TEXTS + TEXT_TEXTS + DOCBIN_TEXTS))
    return {text: ents(doc) for text, doc in zip(texts, nlp.pipe(texts))}


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def check_outputs(out: Path, shards: dict, expected: dict, vocab, jsonl: bool = True) -> None:
    """Every input doc is in its shard's output once, in order, annotated as nlp.pipe annotates it."""
    for name, texts in shards.items():
        docs = read_docs(out / f"{name}.spacy", vocab)
        assert [d.text for d in docs] == texts, name
        assert [ents(d) for d in docs] == [expected[t] for t in texts], name
        assert all(d._.padellm_error is None for d in docs)
        assert all(e._.padellm_prob is not None and 0.0 < e._.padellm_prob <= 1.0 for d in docs for e in d.ents)
        if jsonl:
            records = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            assert [r["index"] for r in records] == list(range(len(texts)))
            assert [r["text"] for r in records] == texts
            for record, doc in zip(records, docs):
                assert [(e["start"], e["end"], e["label"]) for e in record["ents"]] == ents(doc)
                assert all(record["text"][e["start"]:e["end"]] == e["text"] and 0.0 < e["prob"] <= 1.0
                           for e in record["ents"])
                assert record["error"] is None


def test_local_output_equals_nlp_pipe(pipeline_dir, nlp, expected, tmp_path, capsys):
    shards = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--jsonl", "--batch-size", "2",
                 "--no-progress"]) == 0
    check_outputs(out, shards, expected, nlp.vocab)
    # JSONL line numbers point into the input (the blank line is skipped, not a doc)
    lines = [json.loads(x)["line"] for x in (out / "a.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 4, 5]
    assert "0 failed doc(s)" in capsys.readouterr().out
    # A second run finds everything done and touches nothing.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--jsonl", "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert "4 already done" in capsys.readouterr().out


def test_ray_output_equals_nlp_pipe(ray_local, pipeline_dir, nlp, expected, tmp_path):
    shards = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--jsonl", "--ray", "--num-workers", "2",
            "--cpus-per-worker", "0.5", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    check_outputs(out, shards, expected, nlp.vocab)


class Killed(BaseException):
    """A process killed mid-run: no ``except Exception`` sees it, so nothing is cleaned up on the way out."""


def crash_writes(monkeypatch, after: int, crash: BaseException, half_written: bool = False) -> list:
    """Make the run's ``write_shard`` raise ``crash`` once ``after`` shards are written (with
    ``half_written``: while writing the next one, leaving its half-written temporary DocBin behind, as a
    kill would). Returns the list of shards written before the crash."""
    real = annotate_command.write_shard
    written = []

    def write_shard(shard, *args, **kwargs):
        if len(written) == after:
            if half_written:
                shard.out.parent.mkdir(parents=True, exist_ok=True)
                shard.out.with_name(f".{shard.out.name}.tmp-99999").write_bytes(b"half a DocBin")
            raise crash
        failures = real(shard, *args, **kwargs)
        written.append(shard)
        return failures

    monkeypatch.setattr(annotate_command, "write_shard", write_shard)
    return written


def test_killed_local_run_resumes_without_loss_or_duplicates(pipeline_dir, nlp, expected, tmp_path, capsys,
                                                             monkeypatch):
    shards = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--no-progress"]
    written = crash_writes(monkeypatch, 1, Killed(), half_written=True)  # killed writing the second shard
    with pytest.raises(Killed):
        main(argv)
    assert [s.name for s in written] == ["a"]
    assert sorted(p.name for p in out.rglob("*.spacy")) == ["a.spacy"]
    assert [p.name for p in out.rglob("*") if ".tmp-" in p.name] == [".c.spacy.tmp-99999"]
    first = (out / "a.spacy").stat().st_mtime_ns
    monkeypatch.undo()
    # Restart, now asking for JSONL too: the finished shard is skipped (its JSONL comes from its DocBin).
    assert main(argv + ["--jsonl"]) == 0
    assert "1 already done" in capsys.readouterr().out
    assert (out / "a.spacy").stat().st_mtime_ns == first
    check_outputs(out, shards, expected, nlp.vocab)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_ray_run_crashing_mid_way_resumes(ray_local, pipeline_dir, nlp, expected, tmp_path, monkeypatch):
    shards = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--ray", "--num-workers", "1",
            "--batch-size", "2", "--no-progress"]
    crash_writes(monkeypatch, 2, RuntimeError("crash after two shards"))
    with pytest.raises(RuntimeError, match="crash after two shards"):
        main(argv)
    done = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.spacy"))
    assert len(done) == 2
    monkeypatch.undo()
    assert main(argv) == 0
    check_outputs(out, shards, expected, nlp.vocab, jsonl=False)


def test_malformed_input_is_reported_with_file_and_line(pipeline_dir, tmp_path, capsys):
    (tmp_path / "good.txt").write_text("Japan beat Syria in the Asian Cup .\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": "oops"\n')
    (tmp_path / "nofield.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"body": "c"}\n')
    (tmp_path / "notstr.jsonl").write_text('{"text": null}\n')
    out = tmp_path / "out"
    inputs = [str(tmp_path / n) for n in ("good.txt", "bad.jsonl", "nofield.jsonl", "notstr.jsonl")]
    assert main(["annotate", str(pipeline_dir), *inputs, str(out), "--on-error", "fail", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.jsonl'}:2: invalid JSON" in err
    assert f"{tmp_path / 'nofield.jsonl'}:3: no 'text' field" in err
    assert f"{tmp_path / 'notstr.jsonl'}:1: field 'text' is NoneType, not a string" in err
    assert not list(out.rglob("*"))  # checked before anything was processed: no output, no rejects
    # The right field name makes the same file fine.
    assert main(["annotate", str(pipeline_dir), str(tmp_path / "nofield.jsonl"), str(out), "--text-field", "body",
                 "--on-error", "fail", "--no-progress"]) == 1
    assert "nofield.jsonl:1: no 'body' field" in capsys.readouterr().err


@Language.component("annotate_test_fail_on_syria")
def fail_on_syria(doc):
    if "Syria" in doc.text:
        raise ValueError("cannot annotate Syria")
    return doc


def test_failing_docs_are_marked_not_dropped(pipeline_dir, nlp, expected, tmp_path, capsys):
    failing = spacy.load(pipeline_dir)
    failing.add_pipe("annotate_test_fail_on_syria")
    failing.to_disk(tmp_path / "failing")
    (tmp_path / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out"
    argv = ["annotate", str(tmp_path / "failing"), str(tmp_path / "docs.txt"), str(out), "--jsonl",
            "--batch-size", "4", "--no-progress"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 failed doc(s)" in captured.out
    assert "docs.txt line 1: ValueError: cannot annotate Syria" in captured.err
    docs = read_docs(out / "docs.spacy", nlp.vocab)
    assert [d.text for d in docs] == TEXTS
    assert docs[0]._.padellm_error == "ValueError: cannot annotate Syria" and not docs[0].ents
    # The other docs of the failing batch were annotated one at a time.
    assert [ents(d) for d in docs[1:]] == [expected[t] for t in TEXTS[1:]]
    assert all(d._.padellm_error is None for d in docs[1:])
    records = [json.loads(x) for x in (out / "docs.jsonl").read_text().splitlines()]
    assert records[0]["error"] == "ValueError: cannot annotate Syria" and records[1]["error"] is None
    # A re-run skips the shard but still counts its failure; --allow-failures accepts it.
    assert main(argv) == 1
    assert main(argv + ["--allow-failures"]) == 0
    # --retry-failed annotates that shard again (here with a pipeline that no longer fails).
    argv[1] = str(pipeline_dir)
    assert main(argv + ["--retry-failed"]) == 0
    docs = read_docs(out / "docs.spacy", nlp.vocab)
    assert [ents(d) for d in docs] == [expected[t] for t in TEXTS]
    assert all(d._.padellm_error is None for d in docs)


def test_missing_ray_is_a_clear_error(pipeline_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    (tmp_path / "docs.txt").write_text("Japan beat Syria in the Asian Cup .\n")
    assert main(["annotate", str(pipeline_dir), str(tmp_path / "docs.txt"), str(tmp_path / "out"), "--ray"]) == 2
    assert 'pip install "ray[data]"' in capsys.readouterr().err


def test_shard_names_and_collisions(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "d.jsonl").write_text("")
    (tmp_path / "x" / "notes.md").write_text("")  # not an input format: left out of a folder
    (tmp_path / "y" / "d.txt.gz").write_bytes(b"")
    shards = find_shards([tmp_path / "x"], tmp_path / "out")
    assert [(s.name, s.fmt) for s in shards] == [("d", "jsonl")]
    with pytest.raises(InputError, match="would both be written"):
        find_shards([tmp_path / "x", tmp_path / "y"], tmp_path / "out")


def _worker_pids() -> list:
    """The pids of the live pipeline actors (Ray titles an actor's process after its class, which Ray Data names
    after ``PipelineWorker``)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "PipelineWorker" in " ".join(proc.info["cmdline"] or ()) and proc.status() != psutil.STATUS_ZOMBIE:
            pids.append(proc.info["pid"])
    return sorted(pids)


def test_ray_actor_killed_mid_run_is_replaced_and_loses_no_doc(ray_local, pipeline_dir, nlp, tmp_path):
    """One of two pipeline actors is killed (SIGKILL) once the first shard is written: Ray restarts it and
    runs its batches again; every doc is in the output once, in order, annotated as nlp.pipe annotates it."""
    import os
    import signal
    import threading
    import time

    (tmp_path / "in").mkdir()
    shards = {}
    for i in range(24):  # 24 shards of 24 docs, 2 docs a batch: far more batches than run before the kill
        texts = [TEXTS[(i + j) % len(TEXTS)] for j in range(24)]
        (tmp_path / "in" / f"s{i:02d}.txt").write_text("\n".join(texts) + "\n", encoding="utf8")
        shards[f"s{i:02d}"] = texts
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--ray", "--num-workers", "2",
            "--cpus-per-worker", "0.5", "--batch-size", "2", "--no-progress"]
    result = {}
    run = threading.Thread(target=lambda: result.setdefault("code", main(argv)))
    run.start()
    deadline = time.monotonic() + 300
    while not list(out.glob("*.spacy")) and run.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    before = _worker_pids()
    written_at_kill = len(list(out.glob("*.spacy")))
    assert len(before) == 2 and 1 <= written_at_kill < len(shards)
    os.kill(before[0], signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive() and result["code"] == 0
    check_outputs(out, shards, {t: ents(d) for t, d in zip(TEXTS, nlp.pipe(TEXTS))}, nlp.vocab, jsonl=False)
