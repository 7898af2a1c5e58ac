"""CrossNER per-domain scores: one row per domain from an evaluate JSON, the averages, and the markdown table.

Shared by ``benchmarks/crossner.py`` (padellm) and ``benchmarks/spacy_peer/crossner.py`` (spaCy's ``ner``), so
that both write a report of one shape::

    {"system": ..., "command": ..., "domains": {domain: row}, "average": {"micro": ..., "macro": ...}}

A row holds span P/R/F1 as ``spacy evaluate`` (``ents_p/r/f``) or ``python -m spacy_padellm evaluate`` report
them, the number of gold test entities, and the true positives and predictions derived from them
(``tp = r * gold``, ``pred = tp / p``), which the micro-average pools.

``python benchmarks/crossner_scores.py REPORT.json [REPORT.json ...] [--plot OUT.png]`` prints their table side by
side and, with ``--plot``, draws their test F1 per domain as bars side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["DOMAINS", "count_gold", "domain_row", "averages", "render_table", "render_plot", "write_report"]

DOMAINS = ("ai", "literature", "music", "politics", "science")


def count_gold(docbin: Path) -> int:
    """The number of gold entities (``doc.ents``) in a DocBin."""
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    return sum(len(doc.ents) for doc in DocBin().from_disk(docbin).get_docs(vocab))


def domain_row(scores: Mapping[str, Any], n_gold: int) -> Dict[str, Any]:
    """P/R/F1 and per-type F1 of an evaluate JSON, with the counts the micro-average needs (``pred`` is None
    when no prediction is right: precision 0 does not tell how many there were)."""
    p, r, f = (float(scores.get(k) or 0.0) for k in ("ents_p", "ents_r", "ents_f"))
    tp = round(r * n_gold)
    pred: Optional[int] = round(tp / p) if p > 0 else None
    per_type = {label: round(float(v["f"]), 4) for label, v in (scores.get("ents_per_type") or {}).items()}
    return {"p": round(p, 4), "r": round(r, 4), "f": round(f, 4), "gold": n_gold, "tp": tp, "pred": pred,
            "per_type_f": per_type}


def averages(rows: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Micro (the domains' spans pooled) and macro (the mean of the domains' P, R, F1) averages."""
    if not rows:
        return {kind: {"p": None, "r": None, "f": None} for kind in ("micro", "macro")}
    values = list(rows.values())
    macro = {k: round(sum(v[k] for v in values) / len(values), 4) for k in ("p", "r", "f")}
    gold = sum(v["gold"] for v in values)
    tp = sum(v["tp"] for v in values)
    r = tp / gold if gold else 0.0
    if any(v["pred"] is None for v in values):
        micro: Dict[str, Optional[float]] = {"p": None, "r": round(r, 4), "f": None}
    else:
        pred = sum(v["pred"] for v in values)
        p = tp / pred if pred else 0.0
        micro = {"p": round(p, 4), "r": round(r, 4), "f": round(2 * p * r / (p + r), 4) if p + r else 0.0}
    return {"micro": micro, "macro": macro}


def _cells(row: Optional[Mapping[str, Any]]) -> List[str]:
    if row is None:
        return ["", "", ""]
    return ["–" if row.get(k) is None else f"{100 * row[k]:.2f}" for k in ("p", "r", "f")]


def render_table(reports: Mapping[str, Optional[Mapping[str, Any]]]) -> str:
    """A markdown table, one row per domain plus the micro- and macro-average, P/R/F1 (in %) of each report
    side by side (``reports`` maps a column title to a report; None leaves its cells empty)."""
    titles = list(reports)
    head = "| domain | " + " | ".join(f"{t} P | {t} R | {t} F1" for t in titles) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(titles))]
    names = [d for d in DOMAINS if any(r and d in r["domains"] for r in reports.values())]
    for name in names:
        cells = [c for r in reports.values() for c in _cells(r["domains"].get(name) if r else None)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for kind in ("micro", "macro"):
        cells = [c for r in reports.values() for c in _cells(r["average"].get(kind) if r else None)]
        lines.append(f"| {kind}-average | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_plot(reports: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Test F1 per domain and the micro- and macro-averages as bars, one bar per report side by side
    (``reports`` maps a legend title to a report; a domain a report lacks gets no bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [d for d in DOMAINS if any(d in r["domains"] for r in reports.values())] + ["micro", "macro"]
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(names) + 0.8 * len(reports)), 4.2))
    for i, (title, report) in enumerate(reports.items()):
        rows = {**report["domains"], **report["average"]}
        have = [k for k, n in enumerate(names) if (rows.get(n) or {}).get("f") is not None]  # 0 is a bar, None not
        xs = [k + (i - (len(reports) - 1) / 2) * width for k in have]
        ys = [100 * rows[names[k]]["f"] for k in have]
        bars = ax.bar(xs, ys, width, label=title)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test span F1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("CrossNER, test split", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: Mapping[str, Any], output: Path, extras: bool = True) -> str:
    """``output`` (JSON) and, with ``extras``, its markdown table (.md) and bar chart (.png); returns the table."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    table = render_table({report["system"]: report})
    if extras:
        output.with_suffix(".md").write_text(table)
        render_plot({report["system"]: report}, output.with_suffix(".png"))
    return table


def main(argv: List[str]) -> int:
    """``REPORT.json [REPORT.json ...] [--plot OUT.png]``: their table side by side, and with ``--plot`` their bars."""
    plot = None
    if "--plot" in argv:
        at = argv.index("--plot")
        if at + 1 >= len(argv):
            raise SystemExit("--plot needs a PNG path")
        plot, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2:]
    reports = {r["system"]: r for r in (json.loads(Path(path).read_text()) for path in argv)}
    print(render_table(reports), end="")
    if plot is not None:
        render_plot(reports, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
