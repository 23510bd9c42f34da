"""Interleaved timing, summary statistics and the progress bar shared by the suites.

Variants of one case are timed round by round in one process, each round in a
rotated order, so machine drift (other processes, frequency changes) hits every
variant alike; ratios taken within one run are robust even where absolute times
drift. A sample is the mean per-call time of one batch of calls.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median_us: float
    p90_us: float
    calls: int

    @staticmethod
    def of(samples_us: list[float], calls: int) -> "Timing":
        return Timing(statistics.median(samples_us), percentile(samples_us, 90), calls)


@dataclass
class CaseTimings:
    """What every suite's per-case result starts with: the case, and the op timed on
    the plain local tensors (the floor no DTensor dispatch can beat)."""

    op: str
    placements: str
    mesh: str
    plain: Timing


def percentile(values: list[float], percent: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def time_batch_us(fn: Callable[[], object], batch: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(batch):
        fn()
    return (time.perf_counter_ns() - start) / batch / 1e3


def rotations(names: list[str], rounds: int) -> Iterator[list[str]]:
    """The variant order of each round: rotated by one per round to spread drift."""
    for round_index in range(rounds):
        shift = round_index % len(names)
        yield names[shift:] + names[:shift]


def interleaved(
    variants: Mapping[str, tuple[Callable[[], None], Callable[[], object]]],
    rounds: int,
    batch: int,
    warmup: int,
) -> dict[str, Timing]:
    """Times each variant's call, `rounds` x `batch` calls after warm-up.

    `variants` maps a name to (switch, call): `switch` puts the process in the
    variant's state (enables torchshard, installs a rule, ...) before its calls.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for names in rotations(list(variants), rounds):
        for name in names:
            switch, call = variants[name]
            switch()
            for _ in range(warmup):
                call()
            samples[name].append(time_batch_us(call, batch))
    return {name: Timing.of(values, rounds * batch) for name, values in samples.items()}


def each_call(
    variants: Mapping[str, tuple[Callable[[], None], Callable[[], object]]],
    rounds: int,
    after: Mapping[str, Callable[[], None]] | None = None,
) -> dict[str, Timing]:
    """Times single calls, each after its variant's `prepare` (untimed), interleaved.

    For calls that must start from a prepared state every time (a cold cache, a
    shape never seen); they are slow enough (tens of µs) that one timer read per
    call is negligible. `after` (by variant, untimed) runs right after a timed call,
    e.g. to read counters about that call alone.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    after = after or {}
    for names in rotations(list(variants), rounds):
        for name in names:
            prepare, call = variants[name]
            prepare()
            start = time.perf_counter_ns()
            call()
            samples[name].append((time.perf_counter_ns() - start) / 1e3)
            if name in after:
                after[name]()
    return {name: Timing.of(values, rounds) for name, values in samples.items()}


class Progress:
    """A one-line progress bar on stderr (one line per step when not a terminal)."""

    def __init__(self, total: int, title: str, enabled: bool = True) -> None:
        self.total = total
        self.title = title
        self.done = 0
        self.enabled = enabled
        self.interactive = sys.stderr.isatty()
        self.started = time.monotonic()

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        self.done += 1
        width = 30
        filled = width * self.done // max(self.total, 1)
        elapsed = time.monotonic() - self.started
        line = (
            f"{self.title} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.1f}s {label}"
        )
        if self.interactive:
            sys.stderr.write("\r\033[K" + line[:160])
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
