"""``python3 benchmarks/run.py dispatch``: per op and placement, what one DTensor call costs.

Columns, all per call, timed interleaved in one process (see timing.py):

- ``plain``: the same op on the plain local tensors (the floor of the math);
- ``floor``: a native rule that returns the prebuilt result at once (the cost of
  reaching any torch_dispatch rule; see variants.py);
- ``stock``: DTensor as torch ships it (its built-in C++ fast path) on a hit;
- ``torchshard``: torchshard on a cache hit;
- ``stock miss`` / ``torchshard miss``: the same call with every sharding cache
  emptied first (stock's C++ and Python caches, and torchshard's).

Derived: ``speedup`` = stock / torchshard (hits); ``overhead ratio`` =
(torchshard - floor) / (stock - floor), the share of stock's cost above the rule
floor that torchshard still pays. Internals, timed in C++ on the warm cache:
``key+lookup`` (build the native key, probe the map) and ``rule body`` (the rule
called directly: key, lookup, local op, wrap).

Before timing, stock's and torchshard's outputs are compared (type, placements,
mesh, shape, stride, dtype, requires_grad, local values), and afterwards the
timed torchshard calls must all have been native hits.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from dataclasses import dataclass, field

import torch
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.debug import _clear_sharding_prop_cache

import torchshard
from torchshard import _bench, testing

import charts
import report
from cases import Case, build_cases
from fake_world import fake_world, machine_description
from timing import CaseTimings, Progress, Timing, each_call, interleaved
from variants import VariantSwitch, record_calls


@dataclass(frozen=True)
class Settings:
    rounds: int = 200  # interleaved rounds of hit timing
    batch: int = 10  # calls per timed batch: rounds * batch calls per variant
    warmup: int = 5  # untimed calls after every variant switch
    miss_rounds: int = 100  # single cold-cache calls per variant
    probe_iterations: int = 20000  # C++-timed iterations of the internal probes


# --quick: one case per op family on the 1-D mesh, a few hundred calls each.
QUICK = Settings(rounds=20, batch=5, warmup=2, miss_rounds=5, probe_iterations=500)


@dataclass
class CaseResult(CaseTimings):
    floor: Timing
    stock: Timing
    torchshard: Timing
    stock_miss: Timing
    torchshard_miss: Timing
    native_hit_fraction: float
    key_ns: float | None
    key_lookup_ns: float | None
    rule_body_ns: float | None
    speedup: float = field(init=False)
    overhead_ratio: float = field(init=False)
    miss_speedup: float = field(init=False)

    def __post_init__(self) -> None:
        self.speedup = self.stock.median_us / self.torchshard.median_us
        floor = self.floor.median_us
        self.overhead_ratio = (self.torchshard.median_us - floor) / (self.stock.median_us - floor)
        self.miss_speedup = self.stock_miss.median_us / self.torchshard_miss.median_us

    @property
    def name(self) -> str:
        return f"{self.op} {self.placements} {self.mesh}"


class OutputMismatch(AssertionError):
    pass


def outputs_match(stock: object, ours: object) -> bool:
    if isinstance(stock, (list, tuple)):
        return (
            type(stock) is type(ours)
            and len(stock) == len(ours)
            and all(outputs_match(s, o) for s, o in zip(stock, ours))
        )
    if isinstance(stock, DTensor):
        return (
            type(ours) is DTensor
            and stock.device_mesh == ours.device_mesh
            and stock.placements == ours.placements
            and stock.shape == ours.shape
            and stock.stride() == ours.stride()
            and stock.dtype == ours.dtype
            and stock.requires_grad == ours.requires_grad
            and torch.equal(stock._local_tensor, ours._local_tensor)
        )
    if isinstance(stock, torch.Tensor):
        return type(stock) is type(ours) and torch.equal(stock, ours)
    return stock == ours


PROBE_REPEATS = 21  # the probes' figures are medians over this many timed chunks


def key_lookup_probe(rule, args, kwargs, iterations: int) -> dict:
    """``_bench.key_lookup_ns`` as a median over PROBE_REPEATS chunks of the iterations.

    One long C++ loop reports its mean, which a single preemption on a busy machine
    inflates several times over; the median of the chunks does not move with it.
    """
    chunk = max(iterations // PROBE_REPEATS, 1)
    probes = [_bench.key_lookup_ns(rule, args, kwargs, chunk) for _ in range(PROBE_REPEATS)]
    return {
        "key_ns": statistics.median(p["key_ns"] for p in probes),
        "key_lookup_ns": statistics.median(p["key_lookup_ns"] for p in probes),
        "hit": all(p["hit"] for p in probes),
    }


def _probe_internals(calls, iterations: int) -> tuple[float | None, float | None, float | None]:
    """Key build, key build + lookup, and rule body times of a one-op case."""
    if len(calls) != 1:
        return None, None, None
    call = calls[0]
    rule = testing.native_rule(call.op)
    kwargs = call.kwargs or None
    lookup = key_lookup_probe(rule, call.args, kwargs, iterations)
    if not lookup["hit"]:
        return None, None, None
    body_ns = _bench.rule_body_ns(rule, DTensor, call.op, call.args, kwargs, max(iterations // 10, 1))
    return lookup["key_ns"], lookup["key_lookup_ns"], body_ns


def measure_case(case: Case, settings: Settings) -> CaseResult:
    torchshard.enable()
    with torchshard.disabled():
        stock_out = case.run()
    for _ in range(settings.warmup):
        case.run()
    ours_out = case.run()
    if not outputs_match(stock_out, ours_out):
        raise OutputMismatch(f"{case.name}: torchshard's output differs from stock's")
    calls = record_calls(case.run)
    switch = VariantSwitch(calls)
    try:
        hits = interleaved(
            {
                "plain": (lambda: None, case.run_plain),
                "floor": (lambda: switch.switch("floor"), case.run),
                "stock": (lambda: switch.switch("stock"), case.run),
                "torchshard": (lambda: switch.switch("torchshard"), case.run),
            },
            rounds=settings.rounds,
            batch=settings.batch,
            warmup=settings.warmup,
        )
        switch.switch("torchshard")
        torchshard.reset_stats()
        for _ in range(settings.batch):
            case.run()
        stats = torchshard.stats()
        native_hit_fraction = min(stats["hits"], stats["native_calls"]) / max(stats["calls"], 1)

        def cold_stock() -> None:
            switch.switch("stock")
            _clear_sharding_prop_cache()

        def cold_torchshard() -> None:
            switch.switch("torchshard")
            _clear_sharding_prop_cache()
            torchshard.clear_cache()

        misses = each_call(
            {"stock": (cold_stock, case.run), "torchshard": (cold_torchshard, case.run)},
            rounds=settings.miss_rounds,
        )
        switch.switch("torchshard")
        case.run()  # warm again for the probes
        key_ns, key_lookup_ns, body_ns = _probe_internals(calls, settings.probe_iterations)
    finally:
        switch.close()
    return CaseResult(
        op=case.op,
        placements=case.placements,
        mesh=case.mesh,
        plain=hits["plain"],
        floor=hits["floor"],
        stock=hits["stock"],
        torchshard=hits["torchshard"],
        stock_miss=misses["stock"],
        torchshard_miss=misses["torchshard"],
        native_hit_fraction=native_hit_fraction,
        key_ns=key_ns,
        key_lookup_ns=key_lookup_ns,
        rule_body_ns=body_ns,
    )


def summarize(results: list[CaseResult]) -> dict[str, object]:
    """The suite-level figures the targets are stated in."""
    two_dtensor = [r for r in results if r.op == "add" and r.placements == "S(0)+S(0)" and r.mesh == "1-D"]
    key_lookups = [r.key_lookup_ns for r in results if r.key_lookup_ns is not None]
    return {
        "cases": len(results),
        "ops": len({r.op for r in results}),
        "native_hit_cases": sum(r.native_hit_fraction == 1.0 for r in results),
        "median_speedup": statistics.median(r.speedup for r in results),
        "min_speedup": min(r.speedup for r in results),
        "slowest_case": min(results, key=lambda r: r.speedup).name,
        "cases_slower_than_stock": [r.name for r in results if r.speedup < 1.0],
        "median_overhead_ratio": statistics.median(r.overhead_ratio for r in results),
        "max_overhead_ratio": max(r.overhead_ratio for r in results),
        "median_miss_speedup": statistics.median(r.miss_speedup for r in results),
        "median_floor_us": statistics.median(r.floor.median_us for r in results),
        "median_key_lookup_ns": statistics.median(key_lookups) if key_lookups else None,
        "add_two_dtensor_key_lookup_ns": two_dtensor[0].key_lookup_ns if two_dtensor else None,
    }


def run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else Settings()
    overrides = {"rounds": args.rounds, "batch": args.batch, "miss_rounds": args.miss_rounds}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    filters = [text.strip() for text in args.cases.split(",") if text.strip()]
    with fake_world(args.world_size):
        cases = [c for c in build_cases(args.world_size) if not filters or any(f in c.name for f in filters)]
        if args.quick:
            seen: set[str] = set()
            cases = [c for c in cases if c.mesh == "1-D" and not (c.op in seen or seen.add(c.op))]
        if args.list:
            print("\n".join(case.name for case in cases))
            return 0
        if not cases:
            raise SystemExit(f"no case matches --cases {args.cases!r} (see --list)")
        progress = Progress(len(cases), "dispatch", enabled=not args.no_progress)
        results = []
        for case in cases:
            results.append(measure_case(case, settings))
            progress.step(case.name)
    summary = summarize(results)
    payload = {
        "suite": "dispatch",
        "machine": machine_description(),
        "settings": dataclasses.asdict(settings),
        "world_size": args.world_size,
        "summary": summary,
        "results": results,
    }
    text = report.dispatch_table(results) + "\n\n" + report.dispatch_summary(summary)
    report.print_and_write(args, text, payload, charts.dispatch)
    return 0
