"""``annotate --on-error skip|fail``: unreadable input records are skipped into ``<name>.rejects.jsonl`` (or stop
the run), and every input line ends up in an output or a rejects file, across restarts and on Ray (CPU)."""

import json
from pathlib import Path

import pytest
from spacy.tokens import DocBin
from spacy.vocab import Vocab

import tiny
from spacy_padellm.__main__ import main
from spacy_padellm.annotate.shards import MAX_RAW, InputError, find_shards, read_shard
from test_annotate import Killed, crash_writes, ents, expected, nlp, pipeline_dir, ray_local  # noqa: F401

TEXTS = [t for t, _ in tiny.SENTENCES]
LONG_BAD = '{"text": "' + "x" * (3 * MAX_RAW)  # malformed, and longer than the rejects file keeps

#: line number -> (raw line, the start of its reason), for the bad lines of the 20-line JSONL input
BAD_JSONL = {
    3: (b'{"text": "oops"', "invalid JSON"),
    6: (b'{"body": "no text field"}', "no 'text' field (fields: body)"),
    9: (b'{"text": 42}', "field 'text' is int, not a string"),
    12: (b'{"text": "half a \\ud800 pair"}', "field 'text' cannot be encoded as UTF-8"),
    15: (b'{"text": "caf\xe9"}', "not UTF-8 text"),  # Latin-1, not UTF-8
    17: (b'["a", "list"]', "expected a JSON object, got list"),
    20: (LONG_BAD.encode(), "invalid JSON"),
}


def write_bad_inputs(folder: Path) -> dict:
    """A 20-line JSONL with 7 bad lines, a text file with one non-UTF-8 line and a broken DocBin:
    {output name: (input records, good texts in order)}."""
    folder.mkdir(parents=True)
    lines, good = [], []
    for lineno in range(1, 21):
        if lineno in BAD_JSONL:
            lines.append(BAD_JSONL[lineno][0])
        else:
            good.append(TEXTS[lineno % len(TEXTS)])
            lines.append(json.dumps({"text": good[-1]}).encode())
    (folder / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "b.txt").write_bytes(TEXTS[0].encode() + b"\n\xff\xfe broken\n" + TEXTS[1].encode() + b"\n")
    (folder / "c.spacy").write_bytes(b"not a DocBin at all")
    return {"a": (20, good), "b": (3, [TEXTS[0], TEXTS[1]]), "c": (1, [])}


def read_rejects(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()] if path.exists() else []


def check_nothing_lost(out: Path, shards: dict, expected: dict) -> None:  # noqa: F811
    """Per shard: records in == docs annotated + records rejected, the good docs annotated in order."""
    for name, (n_in, good) in shards.items():
        docs = list(DocBin().from_disk(out / f"{name}.spacy").get_docs(Vocab()))
        rejects = read_rejects(out / f"{name}.rejects.jsonl")
        assert len(docs) + len(rejects) == n_in, name
        assert [d.text for d in docs] == good, name
        assert [ents(d) for d in docs] == [expected[t] for t in good], name
        summary = json.loads((out / ".padellm_annotate" / f"{name}.json").read_text())
        assert (summary["docs"], summary["rejected"]) == (len(docs), len(rejects)), name


def test_bad_records_are_skipped_into_rejects_files(pipeline_dir, expected, tmp_path, capsys):  # noqa: F811
    shards = write_bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--jsonl", "--batch-size", "4",
            "--no-progress"]
    assert main(argv) == 0  # skip is the default
    captured = capsys.readouterr()
    assert "9 rejected input record(s)" in captured.out
    assert f"warning: skipping 7 unreadable record(s) of {tmp_path / 'in' / 'a.jsonl'} (first: " \
           f"{tmp_path / 'in' / 'a.jsonl'}:3: invalid JSON" in captured.err
    check_nothing_lost(out, shards, expected)
    rejects = read_rejects(out / "a.rejects.jsonl")
    assert [r["line"] for r in rejects] == sorted(BAD_JSONL)
    assert all(r["source"] == str(tmp_path / "in" / "a.jsonl") for r in rejects)
    for r in rejects:
        assert r["reason"].startswith(BAD_JSONL[r["line"]][1]), r
    assert rejects[0]["raw"] == '{"text": "oops"' and not rejects[0]["truncated"]
    assert rejects[-1]["raw"] == LONG_BAD[:MAX_RAW] and rejects[-1]["truncated"]
    assert "\ufffd" in rejects[4]["raw"]  # the non-UTF-8 line, its bad byte replaced
    # The JSONL output's line numbers point at the good lines of the input.
    assert [json.loads(x)["line"] for x in (out / "a.jsonl").read_text().splitlines()] == \
           [n for n in range(1, 21) if n not in BAD_JSONL]
    assert [(r["line"], r["reason"][:12]) for r in read_rejects(out / "b.rejects.jsonl")] == [(2, "not UTF-8 te")]
    assert [(r["line"], r["raw"]) for r in read_rejects(out / "c.rejects.jsonl")] == [(None, None)]
    # A re-run finds every shard done and still counts the rejects, once.
    assert main(argv) == 0
    captured = capsys.readouterr().out
    assert "3 already done" in captured and "9 rejected input record(s)" in captured


def test_resumed_run_counts_rejects_once(pipeline_dir, expected, tmp_path, capsys, monkeypatch):  # noqa: F811
    shards = write_bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--no-progress"]
    crash_writes(monkeypatch, 1, Killed(), half_written=True)  # killed writing the second shard
    with pytest.raises(Killed):
        main(argv)
    assert [p.name for p in out.glob("*.spacy")] == ["a.spacy"]
    monkeypatch.undo()
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr().out
    assert "1 already done" in captured and "9 rejected input record(s)" in captured
    check_nothing_lost(out, shards, expected)
    assert main(argv) == 0
    captured = capsys.readouterr().out
    assert "3 already done" in captured and "9 rejected input record(s)" in captured
    check_nothing_lost(out, shards, expected)


def test_fixed_input_retried_drops_its_old_rejects(pipeline_dir, expected, tmp_path, capsys):  # noqa: F811
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "d.jsonl").write_text('{"text": "' + TEXTS[0] + '"}\n{"text": \n')
    out = tmp_path / "out"
    argv = ["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--no-progress"]
    assert main(argv) == 0
    assert len(read_rejects(out / "d.rejects.jsonl")) == 1
    (out / "d.spacy").unlink()  # the shard to be annotated again, its input fixed
    (tmp_path / "in" / "d.jsonl").write_text('{"text": "' + TEXTS[0] + '"}\n{"text": "' + TEXTS[1] + '"}\n')
    assert main(argv) == 0
    assert "rejected" not in capsys.readouterr().out.splitlines()[-1]
    assert not (out / "d.rejects.jsonl").exists()
    check_nothing_lost(out, {"d": (2, TEXTS[:2])}, expected)


def test_on_error_fail_stops_before_anything_is_written(pipeline_dir, tmp_path, capsys):  # noqa: F811
    write_bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--on-error", "fail",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in' / 'a.jsonl'}:3: invalid JSON" in err
    assert f"{tmp_path / 'in' / 'b.txt'}:2: not UTF-8 text" in err
    assert f"{tmp_path / 'in' / 'c.spacy'}: not a readable DocBin" in err
    assert not out.exists() or not list(out.rglob("*"))


def test_read_shard_skips_or_raises(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\nnot json\n\n{"text": "b"}\n')
    rejects = []
    assert list(read_shard(path, "jsonl", rejects=rejects)) == [(1, "a"), (4, "b")]
    assert [(r.line, r.reason[:12]) for r in rejects] == [(2, "invalid JSON")]
    with pytest.raises(InputError, match=r"x.jsonl:2: invalid JSON"):
        list(read_shard(path, "jsonl"))


def test_rejects_file_cannot_collide_with_another_output(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "a.rejects.txt").write_text("")  # its JSONL output would be a's rejects file
    with pytest.raises(InputError, match="would both be written to"):
        find_shards([tmp_path / "a.jsonl", tmp_path / "a.rejects.txt"], tmp_path / "out")


def test_ray_skips_bad_records_into_rejects_files(ray_local, pipeline_dir, expected, tmp_path, capsys):  # noqa: F811
    shards = write_bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["annotate", str(pipeline_dir), str(tmp_path / "in"), str(out), "--ray", "--num-workers", "1",
                 "--batch-size", "4", "--no-progress"]) == 0
    assert "9 rejected input record(s)" in capsys.readouterr().out
    check_nothing_lost(out, shards, expected)
    assert [r["line"] for r in read_rejects(out / "a.rejects.jsonl")] == sorted(BAD_JSONL)
