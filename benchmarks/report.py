"""The speed benchmark's report as a markdown table and a PNG plot (latency boxes; speedup and throughput bars)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

__all__ = ["paired_bars", "publish", "render_markdown", "render_plot", "tradeoff_points"]


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _header(report: Dict[str, Any]) -> List[str]:
    env, settings = report["environment"], report["settings"]
    lines = [
        "## PaDeLLM-NER benchmark",
        "",
        f"- device: {env['device_name']} ({env['device']}, {env['dtype']}); torch {env['torch']}, "
        f"transformers {env['transformers']}, spaCy {env['spacy']}",
        f"- data: `{report['data']}` ({settings['docs']} docs, {settings['words']} words); "
        f"pipeline: `{report['pipeline']}`",
        f"- command: `{report['command']}`",
        f"- {report['timestamp']}",
    ]
    floor = report.get("floor")
    if floor:
        lines.append(f"- floor: {floor['weight_bytes'] / 1e6:,.0f} MB of weights per sequential pass at "
                     f"{floor['bandwidth_gb_per_s']:,.0f} GB/s measured = {floor['ms_per_pass']} ms per pass")
    return lines + [
        "",
        "| method | F1 docs | span F1 | string F1 | latency docs | median ms | p90 ms | mean ms | steps/sent "
        "| gen tok/seq | gen tok/sent | prompt tok/sent | floor ms | × floor | speedup vs reference "
        "| padellm faster by | same as reference | same as plain | best sent/s (bs) | words/s | peak GPU MB |",
        "|" + "---|" * 21,
    ]


def _method_row(name: str, m: Dict[str, Any]) -> str:
    lat, dec, f1 = m["latency_ms"], m["decoding"], m["f1"]
    best = (m["throughput"] or {}).get("best") or {}
    sp = (m["speedup_vs_reference"] or {}).get("median_latency_ratio")
    agree = m["agreement_with_reference"]
    plain = m.get("agreement_with_plain")
    return (
        f"| {name} | {f1['docs']} | {_fmt(f1['span_f'], 4)} | {_fmt(f1['string_f'], 4)} | {lat['docs']} "
        f"| {_fmt(lat['median'])} | {_fmt(lat['p90'])} | {_fmt(lat['mean'])} "
        f"| {_fmt(dec['forward_passes_per_sentence'])} | {_fmt(dec['generated_tokens_per_sequence'])} "
        f"| {_fmt(dec['generated_tokens_per_sentence'])} | {_fmt(dec['prompt_tokens_per_sentence'], 1)} "
        f"| {_fmt(m.get('floor_ms'))} | {_fmt(m.get('mean_latency_over_floor'), 1)} "
        f"| {_fmt(sp, 2, '×')} | {_fmt(m.get('padellm_speedup'), 2, '×')} "
        f"| {_fmt(None if agree is None else 100 * agree, 1, '%')} "
        f"| {_fmt(None if plain is None else 100 * plain, 1, '%')} "
        f"| {_fmt(best.get('sentences_per_second'))}"
        f"{'' if not best else ' (' + str(best['batch_size']) + ')'} "
        f"| {_fmt(best.get('words_per_second'), 0)} | {_fmt(m['peak_gpu_memory_mb'], 0)} |"
    )


def _throughput_table(name: str, throughput: Dict[str, Any]) -> List[str]:
    lines = ["", f"`nlp.pipe` throughput, {name}:", "",
             "| batch size | sent/s | words/s | forward passes/sent | CUDA graphs captured | peak GPU MB |",
             "|---|---|---|---|---|---|"]
    for bs, row in throughput["batch_sizes"].items():
        lines.append(f"| {bs} | {_fmt(row['sentences_per_second'])} | {_fmt(row['words_per_second'], 0)} "
                     f"| {_fmt(row['forward_passes_per_sentence'])} | {row.get('graph_captures', '–')} "
                     f"| {_fmt(row['peak_gpu_memory_mb'], 0)} |")
    return lines


def _anchor_lines(report: Dict[str, Any]) -> List[str]:
    anchor = report.get("anchor")
    if not anchor:
        return []
    best, lat = anchor["best"], anchor["latency_ms"]
    lines = ["", f"Encoder anchor: {anchor['model']}, {anchor['dtype']}, the same texts on the same device: best "
                 f"{_fmt(best['sentences_per_second'], 0)} sent/s (batch size {best['batch_size']}), batch-1 median "
                 f"{_fmt(lat['median'])} ms (p90 {_fmt(lat['p90'])} ms, {lat['docs']} docs); padellm's best "
                 f"`nlp.pipe` throughput is {_fmt(report.get('padellm_vs_anchor'), 3, '×')} the anchor's.", "",
             "| anchor batch size | sent/s |", "|---|---|"]
    lines += [f"| {bs} | {_fmt(row['sentences_per_second'], 0)} |" for bs, row in anchor["batch_sizes"].items()]
    return lines


def render_markdown(report: Dict[str, Any]) -> str:
    lines = _header(report)
    lines += [_method_row(name, m) for name, m in report["methods"].items()]
    for name, m in report["methods"].items():
        if m["throughput"]:
            lines += _throughput_table(name, m["throughput"])
    lines += _anchor_lines(report)
    return "\n".join(lines) + "\n"


def _latency_panel(ax, report: Dict[str, Any], names: List[str], colours: List[str]) -> None:
    import matplotlib.ticker

    data = [report["methods"][n]["latency_ms"]["values"] or [float("nan")] for n in names]
    if not any(report["methods"][n]["latency_ms"]["values"] for n in names):  # ``--latency-docs 0``
        ax.text(0.5, 0.5, "batch size 1 not timed", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    box = ax.boxplot(data, showfliers=True, patch_artist=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    for patch, colour in zip(box["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.5)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.set_ylabel("latency per sentence, ms (log scale)")
    ax.set_title("Latency at batch size 1")
    ax.grid(axis="y", which="both", alpha=0.3)


def _speed_panel(ax, report: Dict[str, Any], names: List[str], colours: List[str]) -> None:
    """Speedup over the reference decoder (when one was timed) and the best ``nlp.pipe`` throughput per method."""
    x = list(range(len(names)))
    speed = [(report["methods"][n]["speedup_vs_reference"] or {}).get("median_latency_ratio") for n in names]
    has_speedup = any(s is not None for s in speed)
    width = 0.38 if has_speedup else 0.6
    handles = []
    if has_speedup:
        bars = ax.bar([i - width / 2 for i in x], [s or 0 for s in speed], width, color=colours[0],
                      label="speedup vs reference (median latency)")
        for rect, s in zip(bars, speed):
            if s is not None:
                ax.annotate(f"{s:.1f}×", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("speedup (×)")
        handles.append(bars)
        twin = ax.twinx()
    else:  # no reference decoder timed: throughput alone, on the panel's own axis
        twin = ax
    ax.set_xticks(x, names)
    tput = [((report["methods"][n]["throughput"] or {}).get("best") or {}) for n in names]
    bars2 = twin.bar([i + width / 2 if has_speedup else i for i in x],
                     [t.get("sentences_per_second") or 0 for t in tput], width,
                     color=colours[1], label="best nlp.pipe throughput")
    for rect, t in zip(bars2, tput):
        if t:
            twin.annotate(f"{t['sentences_per_second']:.0f}/s\n(bs {t['batch_size']})",
                          (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center", va="bottom",
                          fontsize=8)
    twin.set_ylabel("sentences / s")
    ax.set_title("Speedup and throughput" if has_speedup else "Throughput")
    handles.append(bars2)
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.08),
              ncol=2, fontsize=8, frameon=False)
    ax.margins(y=0.15)
    twin.margins(y=0.2)


def tradeoff_points(report: Dict[str, Any]) -> List[tuple]:
    """(method, batch-1 median ms, span F1) of every method that has both: what each setting costs."""
    points = []
    for name, m in report["methods"].items():
        median, f1 = m["latency_ms"].get("median"), m["f1"].get("span_f")
        if median is not None and f1 is not None and not (isinstance(median, float) and math.isnan(median)):
            points.append((name, median, f1))
    return points


def _tradeoff_panel(ax, report: Dict[str, Any], names: List[str], colours: List[str]) -> None:
    for i, (name, median, f1) in enumerate(tradeoff_points(report)):
        ax.scatter([median], [f1], color=colours[names.index(name) % len(colours)], s=40, zorder=3)
        ax.annotate(name, (median, f1), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib_formatter())
    ax.set_xlabel("median latency at batch size 1, ms (log scale)")
    ax.set_ylabel("span F1")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.25, y=0.2)


def matplotlib_formatter():
    import matplotlib.ticker

    return matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")


def render_plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = list(report["methods"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    _latency_panel(left, report, names, colours)
    _speed_panel(middle, report, names, colours)
    _tradeoff_panel(right, report, names, colours)
    env = report["environment"]
    fig.suptitle(f"PaDeLLM-NER benchmark: {env['device_name']}, {report['settings']['docs']} docs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paired_bars(path: Path, names: List[str], first: List[float], second: List[float], labels: List[str], ylabel: str,
                title: str, xlabel: Optional[str] = None) -> None:
    """Two bars per name (``first`` and ``second``, labelled ``labels``) on a log scale, as a PNG at ``path``: the
    kernel benchmarks' torch-against-Triton plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(names))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar([i - 0.2 for i in x], first, 0.4, label=labels[0], color="#8fa8d0")
    ax.bar([i + 0.2 for i in x], second, 0.4, label=labels[1], color="#dd8452")
    rotated = max(map(len, names), default=0) > 6
    ax.set_xticks(list(x), names, rotation=30 if rotated else 0, ha="right" if rotated else "center", fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: Dict[str, Any], table: str, output: str, plot: Callable[[Dict[str, Any], Path], None]) -> None:
    """``output`` (JSON), the markdown ``table`` and ``plot``'s PNG next to it."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table)
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}", file=sys.stderr)


def publish(report: Dict[str, Any], table: Callable[[Dict[str, Any]], str], output: Optional[str],
            plot: Callable[[Dict[str, Any], Path], None]) -> int:
    """Prints ``table(report)`` and, given an ``output`` path, writes the JSON, the table and the plot (``write_outputs``);
    the command's exit code."""
    text = table(report)
    print(text)
    if output:
        write_outputs(report, text, output, plot)
    return 0
