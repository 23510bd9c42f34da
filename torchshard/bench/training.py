"""Training-step benchmark: stock DTensor vs torchshard on real parallel workloads.

For each workload of ``benchmarks/workloads.py`` (tensor parallel MLP and transformer
block, FSDP2, FSDP2 + TP on a 2-D mesh), each AdamW variant and each shape set, it
reports the share of DTensor op calls torchshard served natively in steady state
(with the decline reasons of the rest) and the median step time of stock DTensor and
of torchshard, measured interleaved in one process on the ``fake`` process group.

    python benchmarks/training.py                       # all workloads, small shapes
    python benchmarks/training.py --shapes small,medium --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads

import torchshard

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--workloads", default=",".join(workloads.WORKLOADS))
    parser.add_argument("--optimizers", default="foreach,fused")
    parser.add_argument("--shapes", default="small")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per case")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after each switch")
    parser.add_argument("--json", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    args = parser.parse_args(argv)

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.world_size)
    torch.set_num_threads(1)  # dispatch cost, not intra-op parallelism
    cases = [
        (name, optimizer, shapes)
        for shapes in args.shapes.split(",")
        for name in args.workloads.split(",")
        for optimizer in args.optimizers.split(",")
    ]
    results = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {' / '.join(case)} ...", file=sys.stderr, flush=True)
        results.append(measure(*case, rounds=args.rounds, steps=args.steps, warmup=args.warmup))
    table = format_table(results)
    print(table)
    machine = f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}"
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "args": vars(args), "results": [asdict(r) for r in results]}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
