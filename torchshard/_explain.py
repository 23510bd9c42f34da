"""``torchshard.explain()``: which DTensor ops a block ran, and how torchshard served them.

Per op it reports the calls that reached torchshard's rule, how many were served
natively, and how each call found its sharding: an exact cache hit, a decision hit
(a new shape served by a shape-generic decision, no propagation), or a miss (stock's
propagation ran; counted by reason). It also lists every decline to stock DTensor by
reason. Both lists of reasons are in docs/design.md. Recording is process-wide (all threads)
and costs nothing outside an explain block.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from torchshard._native import _C

__all__ = ["ExplainReport", "OpReport", "explain"]


@dataclass(frozen=True)
class OpReport:
    """One op's figures over an explain block."""

    op: str
    calls: int
    native_calls: int
    hits: int
    misses: int
    decision_hits: int = 0
    declines: dict[str, int] = field(default_factory=dict)
    miss_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def declined(self) -> int:
        return sum(self.declines.values())


@dataclass
class ExplainReport:
    """What an explain block recorded; filled when the block ends."""

    ops: list[OpReport] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(op.calls for op in self.ops)

    @property
    def native_calls(self) -> int:
        return sum(op.native_calls for op in self.ops)

    @property
    def native_fraction(self) -> float:
        """Share of calls served natively (1.0 for a block without DTensor calls)."""
        return self.native_calls / self.calls if self.calls else 1.0

    @property
    def declines(self) -> dict[str, int]:
        """Declines by reason, over all ops."""
        totals: dict[str, int] = {}
        for op in self.ops:
            for reason, count in op.declines.items():
                totals[reason] = totals.get(reason, 0) + count
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "native_calls": self.native_calls,
            "native_fraction": self.native_fraction,
            "declines": self.declines,
            "ops": [
                {
                    "op": op.op,
                    "calls": op.calls,
                    "native_calls": op.native_calls,
                    "hits": op.hits,
                    "decision_hits": op.decision_hits,
                    "misses": op.misses,
                    "miss_reasons": dict(op.miss_reasons),
                    "declines": dict(op.declines),
                }
                for op in self.ops
            ],
        }

    def table(self) -> str:
        header = ("op", "calls", "native", "hits", "decision_hits", "misses", "declined",
                  "decline reasons")
        rows = [
            (
                op.op,
                str(op.calls),
                str(op.native_calls),
                str(op.hits),
                str(op.decision_hits),
                str(op.misses),
                str(op.declined),
                ", ".join(f"{reason}={n}" for reason, n in sorted(op.declines.items())),
            )
            for op in self.ops
        ]
        rows.append(
            (
                "total",
                str(self.calls),
                str(self.native_calls),
                str(sum(op.hits for op in self.ops)),
                str(sum(op.decision_hits for op in self.ops)),
                str(sum(op.misses for op in self.ops)),
                str(sum(op.declined for op in self.ops)),
                f"native {100 * self.native_fraction:.1f}%",
            )
        )
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(row: tuple[str, ...]) -> str:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1])]
            cells.append(row[-1])
            return "  ".join(cells).rstrip()

        rule = "  ".join("-" * width for width in widths)
        return "\n".join([line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])

    def __str__(self) -> str:
        return self.table()


def _difference(after: dict[str, dict], before: dict[str, dict]) -> list[OpReport]:
    reports = []
    for op, now in after.items():
        then = before.get(op, {})
        def counts(name: str) -> dict[str, int]:
            earlier = then.get(name, {})
            return {reason: n - earlier.get(reason, 0) for reason, n in now[name].items()
                    if n - earlier.get(reason, 0)}

        report = OpReport(
            op=op,
            calls=now["calls"] - then.get("calls", 0),
            native_calls=now["native_calls"] - then.get("native_calls", 0),
            hits=now["hits"] - then.get("hits", 0),
            misses=now["misses"] - then.get("misses", 0),
            decision_hits=now["decision_hits"] - then.get("decision_hits", 0),
            declines=counts("declines"),
            miss_reasons=counts("miss_reasons"),
        )
        if report.calls:
            reports.append(report)
    reports.sort(key=lambda op: (-op.calls, op.op))
    return reports


@contextlib.contextmanager
def explain(*, print_report: bool = True, file: TextIO | None = None) -> Iterator[ExplainReport]:
    """Record per-op dispatch figures for the block.

    Yields an :class:`ExplainReport` that is filled when the block ends; unless
    ``print_report=False`` the report is also printed as a table (to ``file``,
    default stdout). Blocks may nest; each reports its own calls.

        with torchshard.explain() as report:
            train_step()
        assert report.native_fraction > 0.99
    """
    report = ExplainReport()
    _C.begin_op_tallies()
    try:
        before = _C.op_tallies()
        yield report
    finally:
        after = _C.op_tallies()
        _C.end_op_tallies()
        report.ops = _difference(after, before)
        if print_report:
            print(report.table(), file=file if file is not None else sys.stdout)
