"""Rendering suite results: Markdown tables, JSON, and the PNG chart (matplotlib).

The JSON is the source of truth: ``--png`` charts are drawn from its data (the
payload after :func:`to_plain`), never from anything else.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int) -> str:
    """A Markdown table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def dispatch_table(results: Sequence) -> str:
    header = [
        "op", "placements", "mesh", "plain µs", "floor µs", "stock µs", "torchshard µs",
        "stock p90", "torchshard p90", "speedup", "overhead ratio", "stock miss µs",
        "torchshard miss µs", "key+lookup ns", "native hits",
    ]
    rows = [
        [
            r.op, r.placements, r.mesh, f"{r.plain.median_us:.2f}", f"{r.floor.median_us:.2f}",
            f"{r.stock.median_us:.2f}", f"{r.torchshard.median_us:.2f}", f"{r.stock.p90_us:.2f}",
            f"{r.torchshard.p90_us:.2f}", f"{r.speedup:.2f}x", f"{r.overhead_ratio:.2f}",
            f"{r.stock_miss.median_us:.0f}", f"{r.torchshard_miss.median_us:.0f}",
            "-" if r.key_lookup_ns is None else f"{r.key_lookup_ns:.0f}",
            f"{r.native_hit_fraction:.0%}",
        ]
        for r in results
    ]
    return markdown_table(header, rows, numeric_from=3)


def dispatch_summary(summary: dict) -> str:
    key = summary["add_two_dtensor_key_lookup_ns"]
    return "\n".join([
        f"- cases: {summary['cases']} ({summary['ops']} ops); all timed torchshard calls native hits in "
        f"{summary['native_hit_cases']}",
        f"- speedup over stock (hit): median {summary['median_speedup']:.2f}x, min "
        f"{summary['min_speedup']:.2f}x ({summary['slowest_case']}); slower than stock: "
        f"{', '.join(summary['cases_slower_than_stock']) or 'none'}",
        f"- overhead ratio (torchshard - floor) / (stock - floor): median "
        f"{summary['median_overhead_ratio']:.2f}, max {summary['max_overhead_ratio']:.2f}; "
        f"median rule floor {summary['median_floor_us']:.2f} µs",
        f"- cache miss: median speedup {summary['median_miss_speedup']:.2f}x",
        "- key build + lookup, two-DTensor add: "
        + ("n/a" if key is None else f"{key:.0f} ns")
        + (f" (median over cases {summary['median_key_lookup_ns']:.0f} ns)"
           if summary["median_key_lookup_ns"] is not None else ""),
    ])


def to_plain(value: object) -> object:
    if is_dataclass(value):
        return {k: to_plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(to_plain(payload), indent=2) + "\n")


def print_and_write(args, text: str, payload: dict, draw_chart: Callable[[dict, str], None]) -> None:
    """Prints `text`; writes --json (payload), --markdown (text) and --png (the chart
    `draw_chart` draws from the JSON form of payload) where asked."""
    print(text)
    if args.json:
        write_json(args.json, payload)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.png:
        draw_chart(to_plain(payload), args.png)


# One color per variant in every chart.
VARIANT_COLORS = {"plain": "#bbbbbb", "floor": "#7f7f7f", "stock": "#d62728", "torchshard": "#1f77b4"}


def dispatch_chart(payload: dict, path: str | Path) -> None:
    """Per op (median over its placements): plain, floor, stock and torchshard µs.

    `payload` is the JSON form (report.to_plain) of a dispatch run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_op: dict[str, list[dict]] = {}
    for result in payload["results"]:
        by_op.setdefault(result["op"], []).append(result)
    ops = sorted(by_op, key=lambda op: statistics.median(r["stock"]["median_us"] for r in by_op[op]))
    columns = list(VARIANT_COLORS.items())
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(ops) + 1.6))
    height = 0.8 / len(columns)
    for index, (column, color) in enumerate(columns):
        values = [statistics.median(r[column]["median_us"] for r in by_op[op]) for op in ops]
        positions = [i + (index - 1.5) * height for i in range(len(ops))]
        ax.barh(positions, values, height=height, color=color, label=column)
    ax.set_yticks(range(len(ops)), ops, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per call (median over placements and meshes; cache hit)")
    summary = payload["summary"]
    ax.set_title(
        f"torchshard vs stock DTensor, torch {payload['machine']['torch']}: median speedup "
        f"{summary['median_speedup']:.2f}x, overhead ratio {summary['median_overhead_ratio']:.2f}",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_chart(payload: dict, path: str | Path) -> None:
    """One panel per scaling curve: x -> median hit µs, one line per variant."""
    curves = payload["curves"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        for variant, points in curve["series"].items():
            ax.plot([p["x"] for p in points], [p["median_us"] for p in points], marker="o", label=variant,
                    color=VARIANT_COLORS.get(variant, "#ff7f0e"))
        ax.set_xticks([p["x"] for p in next(iter(curve["series"].values()))],
                      [str(p["x"]) for p in next(iter(curve["series"].values()))], fontsize=7)
        if curve.get("log_x"):
            ax.set_xscale("log")
        if curve.get("log_y"):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel(curve["x_label"], fontsize=8)
        ax.set_ylabel(curve.get("y_label", "µs per call"), fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
