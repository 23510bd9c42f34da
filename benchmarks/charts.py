"""Every suite's PNG chart (``--png``), drawn with matplotlib from the suite's JSON payload.

The JSON is the source of truth: a chart reads the payload after ``report.to_plain``,
never the suite's objects, so a chart can be redrawn from a saved ``--json`` file.
One function per suite, named after it; each takes (payload, path).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

# One color per variant in every chart.
VARIANT_COLORS = {"plain": "#bbbbbb", "floor": "#7f7f7f", "stock": "#d62728", "torchshard": "#1f77b4"}
OTHER_COLOR = "#ff7f0e"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grouped_bars(plt, labels: Sequence[str], bars: dict[str, list[float]], row_height: float):
    """Horizontal bars, one group per label (top to bottom), one bar per variant in it."""
    fig, ax = plt.subplots(figsize=(9, row_height * len(labels) + 1.5))
    height = 0.8 / len(bars)
    middle = (len(bars) - 1) / 2
    for index, (variant, values) in enumerate(bars.items()):
        positions = [i + (index - middle) * height for i in range(len(labels))]
        ax.barh(positions, values, height=height, color=VARIANT_COLORS.get(variant, OTHER_COLOR),
                label=variant)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    return fig, ax


def dispatch(payload: dict, path: str | Path) -> None:
    """Per op (median over its placements): plain, floor, stock and torchshard µs on a hit."""
    plt = _pyplot()
    by_op: dict[str, list[dict]] = {}
    for result in payload["results"]:
        by_op.setdefault(result["op"], []).append(result)
    ops = sorted(by_op, key=lambda op: statistics.median(r["stock"]["median_us"] for r in by_op[op]))
    bars = {
        variant: [statistics.median(r[variant]["median_us"] for r in by_op[op]) for op in ops]
        for variant in VARIANT_COLORS
    }
    fig, ax = _grouped_bars(plt, ops, bars, row_height=0.32)
    ax.set_xlabel("µs per call (median over placements and meshes; cache hit)")
    summary = payload["summary"]
    ax.set_title(
        f"torchshard vs stock DTensor, torch {payload['machine']['torch']}: median speedup "
        f"{summary['median_speedup']:.2f}x, overhead ratio {summary['median_overhead_ratio']:.2f}",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    _save(plt, fig, path)


def scaling(payload: dict, path: str | Path) -> None:
    """One panel per scaling curve: x -> median hit µs, one line per variant."""
    plt = _pyplot()
    curves = payload["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        for variant, points in curve["series"].items():
            ax.plot([p["x"] for p in points], [p["median_us"] for p in points], marker="o", label=variant,
                    color=VARIANT_COLORS.get(variant, OTHER_COLOR))
        xs = [p["x"] for p in next(iter(curve["series"].values()))]
        ax.set_xticks(xs, [str(x) for x in xs], fontsize=7)
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
    _save(plt, fig, path)


def training(payload: dict, path: str | Path) -> None:
    """Step-time speedup per workload, optimizer and shape set."""
    plt = _pyplot()
    results = payload["results"]
    labels = [f"{r['workload']} {r['optimizer']} {r['shapes']}" for r in results]
    fig, ax = _grouped_bars(plt, labels, {"torchshard": [r["speedup"] for r in results]}, row_height=0.3)
    ax.axvline(1.0, color=VARIANT_COLORS["stock"], linewidth=1)
    ax.set_xlabel("step-time speedup, stock / torchshard "
                  f"(fake process group, world {payload['world_size']})")
    _save(plt, fig, path)


def callgrind(payload: dict, path: str | Path) -> None:
    """Instructions per call of each variant, per case."""
    plt = _pyplot()
    results = payload["results"]
    variants = list(results[0]["ir_per_call"])
    bars = {v: [r["ir_per_call"][v] / 1e3 for r in results] for v in variants}
    fig, ax = _grouped_bars(plt, [r["case"] for r in results], bars, row_height=0.55)
    ax.set_xlabel("thousand instructions per call (callgrind)")
    ax.legend(loc="best", fontsize=8)
    _save(plt, fig, path)


def shapes(payload: dict, path: str | Path) -> None:
    """Left: per op case, µs per call at a new shape (stock, torchshard) and torchshard's hit.
    Right: ms per step of each variable-shape loop, stock and torchshard."""
    plt = _pyplot()
    cases = payload["cases"]
    loops = list(payload["loops"].values())
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.32 * len(cases) + 2),
                                      gridspec_kw={"width_ratios": [2, 1]})
    labels = [f"{c['op']} {c['placements']} {c['mesh']}" for c in cases]
    bars = {"stock new": [c["stock_new"]["median_us"] for c in cases],
            "torchshard new": [c["torchshard_new"]["median_us"] for c in cases],
            "torchshard hit": [c["torchshard_hit"]["median_us"] for c in cases]}
    colors = {"stock new": VARIANT_COLORS["stock"], "torchshard new": VARIANT_COLORS["torchshard"],
              "torchshard hit": VARIANT_COLORS["floor"]}
    height = 0.8 / len(bars)
    for index, (variant, values) in enumerate(bars.items()):
        positions = [i + (index - 1) * height for i in range(len(cases))]
        left.barh(positions, values, height=height, color=colors[variant], label=variant)
    left.set_yticks(range(len(cases)), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("µs per call (median; log scale)")
    left.set_title(f"new-shape call: median {payload['summary']['median_new_speedup']:.1f}x cheaper than stock",
                   fontsize=9)
    left.legend(fontsize=8)
    left.grid(axis="x", alpha=0.3)
    names = [loop["name"] for loop in loops]
    for offset, variant in ((-0.2, "stock"), (0.2, "torchshard")):
        right.bar([i + offset for i in range(len(loops))], [loop[f"{variant}_ms"] for loop in loops], width=0.4,
                  color=VARIANT_COLORS[variant], label=variant)
    right.set_xticks(range(len(loops)), [f"{n}\n{loop['speedup']:.1f}x" for n, loop in zip(names, loops)],
                     fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("ms per step (median; log scale)")
    right.set_title(f"variable-shape steps (fake process group, world {payload['world_size']})", fontsize=9)
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    _save(plt, fig, path)
