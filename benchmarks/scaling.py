"""``python3 benchmarks/run.py scaling``: how the hit cost scales.

Curves (per-call µs, medians over interleaved rounds, fake process group):

- ``cache entries``: a two-DTensor ``add`` hit while this thread's cache also holds
  10 ... 100,000 other entries (synthetic keys no call produces, so the map is
  that big), torchshard's whole call and its C++ key build + lookup;
- ``DTensor list items``: ``_foreach_add`` over 1 ... 64 sharded tensors, plain,
  rule floor, stock and torchshard;
- ``threads``: 1, 2, 4 threads each calling ``add`` on its own thread cache;
  wall time per call over all threads (the GIL serializes them, as it does stock);
- ``cold cache``: the first calls after every sharding cache was emptied.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh
from torch.distributed.tensor.debug import _clear_sharding_prop_cache

import torchshard
from torchshard import _bench, testing

import charts
import report
from cases import Case
from dispatch import Settings, key_lookup_probe, measure_case
from fake_world import fake_world, machine_description
from timing import Progress, Timing, interleaved
from variants import VariantSwitch, record_calls

ENTRY_COUNTS = (10, 100, 1_000, 10_000, 100_000)
LIST_LENGTHS = (1, 2, 4, 8, 16, 32, 64)
THREAD_COUNTS = (1, 2, 4)
COLD_CALLS = 4  # calls timed after each clear


def _point(x: int, timing: Timing) -> dict:
    return {"x": x, "median_us": timing.median_us, "p90_us": timing.p90_us}


def cache_entries_curve(add_case: Case, settings: Settings, quick: bool) -> dict:
    counts = ENTRY_COUNTS[:3] if quick else ENTRY_COUNTS
    (call,) = record_calls(add_case.run)
    rule = testing.native_rule(call.op)
    capacity = torchshard.cache_capacity()
    series: dict[str, list[dict]] = {"torchshard": [], "key+lookup (C++)": []}
    try:
        torchshard.set_cache_capacity(max(2 * max(counts), capacity))
        for count in counts:
            torchshard.clear_cache()
            _bench.fill_synthetic_entries(count)
            add_case.run()  # the real entry, among `count` others
            timing = interleaved({"torchshard": (lambda: None, add_case.run)}, settings.rounds,
                                 settings.batch, settings.warmup)["torchshard"]
            probe = key_lookup_probe(rule, call.args, call.kwargs or None, settings.probe_iterations)
            if not probe["hit"]:
                raise AssertionError("the add entry was not found among the synthetic ones")
            series["torchshard"].append(_point(count, timing))
            series["key+lookup (C++)"].append({"x": count, "median_us": probe["key_lookup_ns"] / 1e3,
                                               "p90_us": None})
    finally:
        torchshard.set_cache_capacity(capacity)
        torchshard.clear_cache()
    return {"x_label": "entries in the thread's cache", "log_x": True, "series": series}


def list_length_curve(mesh, settings: Settings, quick: bool) -> dict:
    lengths = LIST_LENGTHS[::2] if quick else LIST_LENGTHS
    world = mesh.size()
    series: dict[str, list[dict]] = {v: [] for v in ("plain", "floor", "stock", "torchshard")}
    for length in lengths:
        params = [distribute_tensor(torch.randn(world, 4), mesh, [Shard(0)]) for _ in range(length)]
        local = [p._local_tensor for p in params]
        case = Case("_foreach_add", f"S(0) x{length}", "1-D",
                    lambda params=params: torch._foreach_add(params, 1.0),
                    lambda local=local: torch._foreach_add(local, 1.0))
        result = measure_case(case, settings)
        for variant in series:
            series[variant].append(_point(length, getattr(result, variant)))
    return {"x_label": "DTensors in the list argument", "log_x": True, "series": series}


def _threaded_us_per_call(threads: int, call, calls_per_thread: int) -> float:
    """Wall time per call from the first worker's start to the last one's end."""
    barrier = threading.Barrier(threads)
    spans: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                call()  # this thread's cache gets its entry
            barrier.wait()
            start = time.perf_counter_ns()
            for _ in range(calls_per_thread):
                call()
            spans.append((start, time.perf_counter_ns()))
        except BaseException as error:  # re-raised on the main thread
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    wall_ns = max(end for _, end in spans) - min(start for start, _ in spans)
    return wall_ns / 1e3 / (threads * calls_per_thread)


def threads_curve(add_case: Case, settings: Settings, quick: bool) -> dict:
    rounds = 3 if quick else 15
    calls = settings.rounds * settings.batch // 4
    switch = VariantSwitch(record_calls(add_case.run))
    series: dict[str, list[dict]] = {"stock": [], "torchshard": []}
    try:
        for threads in THREAD_COUNTS:
            samples: dict[str, list[float]] = {v: [] for v in series}
            for round_index in range(rounds):
                order = list(series) if round_index % 2 == 0 else list(reversed(series))
                for variant in order:
                    switch.switch(variant)
                    samples[variant].append(_threaded_us_per_call(threads, add_case.run, calls))
            for variant, values in samples.items():
                series[variant].append(_point(threads, Timing.of(values, rounds * threads * calls)))
    finally:
        switch.close()
    return {"x_label": "threads (wall time per call, all threads)", "series": series}


def cold_cache_curve(add_case: Case, settings: Settings, quick: bool) -> dict:
    rounds = 5 if quick else settings.miss_rounds
    switch = VariantSwitch(record_calls(add_case.run))
    samples = {v: [[] for _ in range(COLD_CALLS)] for v in ("stock", "torchshard")}
    try:
        for round_index in range(rounds):
            for variant in (("stock", "torchshard") if round_index % 2 == 0 else ("torchshard", "stock")):
                switch.switch(variant)
                _clear_sharding_prop_cache()
                torchshard.clear_cache()
                for index in range(COLD_CALLS):
                    start = time.perf_counter_ns()
                    add_case.run()
                    samples[variant][index].append((time.perf_counter_ns() - start) / 1e3)
    finally:
        switch.close()
    series = {
        variant: [_point(i + 1, Timing.of(values, rounds)) for i, values in enumerate(per_call)]
        for variant, per_call in samples.items()
    }
    return {"x_label": "call number after emptying the caches", "y_label": "µs (log)", "log_y": True,
            "series": series}


def run(args: argparse.Namespace) -> int:
    settings = Settings(rounds=20, batch=5, warmup=2, miss_rounds=5, probe_iterations=500) if args.quick \
        else Settings(rounds=100, batch=10, warmup=5, miss_rounds=50, probe_iterations=20000)
    steps = ["cache entries", "DTensor list items", "threads", "cold cache"]
    progress = Progress(len(steps), "scaling", enabled=not args.no_progress)
    curves: dict[str, dict] = {}
    with fake_world(args.world_size):
        torchshard.enable()
        mesh = init_device_mesh("cpu", (args.world_size,))
        x, y = (distribute_tensor(torch.randn(8 * args.world_size, 64), mesh, [Shard(0)]) for _ in range(2))
        add_case = Case("add", "S(0)+S(0)", "1-D", lambda: torch.add(x, y),
                        lambda: torch.add(x._local_tensor, y._local_tensor))
        add_case.run()
        for step, build in zip(steps, (
            lambda: cache_entries_curve(add_case, settings, args.quick),
            lambda: list_length_curve(mesh, settings, args.quick),
            lambda: threads_curve(add_case, settings, args.quick),
            lambda: cold_cache_curve(add_case, settings, args.quick),
        )):
            curves[step] = build()
            progress.step(step)
    payload = {"suite": "scaling", "machine": machine_description(), "settings": settings,
               "world_size": args.world_size, "curves": curves}
    report.print_and_write(args, format_curves(curves), payload, charts.scaling)
    return 0


def format_curves(curves: dict[str, dict]) -> str:
    sections = []
    for name, curve in curves.items():
        variants = list(curve["series"])
        xs = [point["x"] for point in curve["series"][variants[0]]]
        rows = [
            [x, *(f"{curve['series'][v][i]['median_us']:.3f}" for v in variants)]
            for i, x in enumerate(xs)
        ]
        table = report.markdown_table([curve["x_label"], *(f"{v} µs" for v in variants)], rows, numeric_from=0)
        sections.append(f"### {name}\n\n{table}")
    return "\n\n".join(sections)
