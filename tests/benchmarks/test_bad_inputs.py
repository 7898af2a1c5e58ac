"""``benchmarks/bad_inputs.py``'s table: rows as measured, the memory note from memory.py's results."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from bad_inputs import md_cell, memory_note, render_markdown  # noqa: E402


def test_table_has_one_row_per_case_and_the_memory_note(tmp_path):
    memory = tmp_path / "memory.json"
    memory.write_text(json.dumps({"runs": [
        {"label": "before", "rows": [{"docs": 50, "call_peak_mb": 3597}, {"docs": 800, "call_peak_mb": "-",
                                                                           "killed_by_signal": 9}]},
        {"label": "with", "rows": [{"docs": 50, "call_peak_mb": 2133}, {"docs": 800, "call_peak_mb": 2964}]}]}))
    note = memory_note(memory)
    assert note[1].endswith("50 sentences: 3.6 GB → 2.1 GB; 800 sentences: killed out of memory → 3.0 GB.")
    assert memory_note(tmp_path / "missing.json") == []
    rows = [{"input": "`a|b`", "outcome": "ok\nfine"}]
    md = render_markdown(rows, {"version": "0", "time": "t", "json": "x.json"}).splitlines()
    assert md[md.index("| input | outcome |") + 2] == f"| {md_cell('`a|b`')} | {md_cell('ok' + chr(10) + 'fine')} |"
    assert "|" not in md_cell("a|b").replace("\\|", "")
