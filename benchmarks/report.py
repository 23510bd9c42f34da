"""Rendering suite results: Markdown tables, JSON, and writing every output a run asks for.

The JSON is the source of truth: ``--png`` charts (charts.py) are drawn from its data
(the payload after :func:`to_plain`), never from anything else.
"""

from __future__ import annotations

import json
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
