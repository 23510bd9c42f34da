"""``python3 benchmarks/run.py training``: stock DTensor vs torchshard on training steps.

For each workload of ``benchmarks/workloads.py`` (tensor parallel MLP and transformer
block, FSDP2, FSDP2 + TP on a 2-D mesh), each AdamW variant and each shape set, it
reports the share of DTensor op calls torchshard served natively in steady state
(with the decline reasons of the rest) and the median step time of stock DTensor and
of torchshard, measured interleaved in one process on the ``fake`` process group.

    python3 benchmarks/run.py training                 # all workloads, small and medium
    python3 benchmarks/run.py training --quick --json out.json --png out.png
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torchshard

import charts
import report
import workloads
from fake_world import fake_world, machine_description
from timing import Progress

SHAPES = {"small": workloads.SMALL, "medium": workloads.MEDIUM}


@dataclass
class Result:
    workload: str
    optimizer: str
    shapes: str
    calls_per_step: float
    native_fraction: float
    declines: dict[str, int]
    declined_ops: dict[str, dict[str, int]]
    stock_ms: float
    torchshard_ms: float
    speedup: float


def measure(name: str, optimizer: str, shapes: str, rounds: int, steps: int, warmup: int) -> Result:
    workload = workloads.build(name, SHAPES[shapes], optimizer=optimizer)
    step = 0
    for _ in range(warmup):  # fills both paths' caches
        with torchshard.disabled():
            workload.step(step)
        workload.step(step + 1)
        step += 2
    with torchshard.explain(print_report=False) as report:
        for _ in range(steps):
            workload.step(step)
            step += 1
    times: dict[str, list[float]] = {"stock": [], "torchshard": []}
    for round_index in range(rounds):
        order = ["stock", "torchshard"] if round_index % 2 == 0 else ["torchshard", "stock"]
        for variant in order:
            (torchshard.disable if variant == "stock" else torchshard.enable)()
            # disable() empties torchshard's caches: untimed steps after every
            # switch refill them (the optimizer's state appears in its first
            # step), so both variants are timed warm.
            for _ in range(warmup):
                workload.step(step)
                step += 1
            start = time.perf_counter()
            for _ in range(steps):
                workload.step(step)
                step += 1
            times[variant].append((time.perf_counter() - start) / steps * 1e3)
    torchshard.enable()
    stock_ms = statistics.median(times["stock"])
    ours_ms = statistics.median(times["torchshard"])
    return Result(
        workload=name,
        optimizer=optimizer,
        shapes=shapes,
        calls_per_step=report.calls / steps,
        native_fraction=report.native_fraction,
        declines=report.declines,
        declined_ops={op.op: op.declines for op in report.ops if op.declines},
        stock_ms=stock_ms,
        torchshard_ms=ours_ms,
        speedup=stock_ms / ours_ms,
    )


def format_table(results: list[Result]) -> str:
    header = (
        "| workload | AdamW | shapes | DTensor calls/step | native | declined (reason) | "
        "stock ms/step | torchshard ms/step | speedup |\n"
        "|---|---|---|---:|---:|---|---:|---:|---:|"
    )
    rows = []
    for r in results:
        declined = ", ".join(
            f"{op.removeprefix('aten::')}: {', '.join(f'{k}={v}' for k, v in reasons.items())}"
            for op, reasons in r.declined_ops.items()
        ) or "-"
        rows.append(
            f"| {r.workload} | {r.optimizer} | {r.shapes} | {r.calls_per_step:.0f} | "
            f"{100 * r.native_fraction:.1f}% | {declined} | {r.stock_ms:.2f} | "
            f"{r.torchshard_ms:.2f} | {r.speedup:.2f}x |"
        )
    return "\n".join([header, *rows])


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.workloads, args.optimizers, args.shapes = "tp_block", "foreach", "small"
        args.rounds, args.steps, args.warmup = 2, 2, 1
    cases = [
        (name, optimizer, shapes)
        for shapes in args.shapes.split(",")
        for name in args.workloads.split(",")
        for optimizer in args.optimizers.split(",")
    ]
    progress = Progress(len(cases), "training", enabled=not args.no_progress)
    results = []
    with fake_world(args.world_size):
        for case in cases:
            results.append(measure(*case, rounds=args.rounds, steps=args.steps, warmup=args.warmup))
            progress.step(" / ".join(case))
    settings = {k: getattr(args, k) for k in ("workloads", "optimizers", "shapes", "rounds", "steps", "warmup")}
    payload = {"suite": "training", "machine": machine_description(), "settings": settings,
               "world_size": args.world_size, "results": results}
    report.print_and_write(args, format_table(results), payload, charts.training)
    return 0
