"""The benchmarks' stages of subprocesses: all at once, or a few at a time (``--at-once``), every return code kept."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from stages import concurrency, run_parallel  # noqa: E402


def _commands(folder: Path, names, fail=()):
    """Each command writes its start and end times to folder/{name}; the ones in ``fail`` exit with 3."""
    code = ("import sys, time; t0 = time.time(); time.sleep(0.4); "
            "open(sys.argv[1], 'w').write(f'{t0} {time.time()}'); sys.exit(int(sys.argv[2]))")
    return {n: ["-c", code, str(folder / n), "3" if n in fail else "0"] for n in names}


def _overlaps(folder: Path, names) -> int:
    spans = sorted(tuple(map(float, (folder / n).read_text().split())) for n in names)
    return sum(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_at_once_bounds_the_processes_and_keeps_every_code(tmp_path):
    names = ["a", "b", "c"]
    one = tmp_path / "one"
    one.mkdir()
    codes = run_parallel("stage", _commands(one, names, fail={"b"}), tmp_path / "logs", {}, at_once=1)
    assert codes == {"a": 0, "b": 3, "c": 0} and list(codes) == names
    assert _overlaps(one, names) == 0
    assert (tmp_path / "logs" / "b.stage.log").exists()
    every = tmp_path / "every"
    every.mkdir()
    assert run_parallel("stage", _commands(every, names), tmp_path / "logs", {}) == {n: 0 for n in names}
    assert _overlaps(every, names) == 2


def test_concurrency():
    assert [concurrency(0, 5), concurrency(1, 5), concurrency(8, 5)] == [5, 1, 5]
