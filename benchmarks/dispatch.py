"""Dispatch benchmark: per op, the plain local op, stock DTensor, and torchshard.

Runs in one process on the built-in ``fake`` process group (collectives are no-ops,
local compute is real), so the figures are DTensor's CPU dispatch cost. For each case
it first checks that stock and torchshard give the same outputs, then times the three
variants interleaved, round by round, and reports medians and p90 of the per-call time.

    python benchmarks/dispatch.py                 # table on stdout
    python benchmarks/dispatch.py --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.tensor import (
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_tensor,
    init_device_mesh,
)
from torch.testing._internal.distributed.fake_pg import FakeStore

import torchshard


@dataclass
class Case:
    name: str
    placements: str
    run: Callable[[], object]  # the DTensor call
    run_plain: Callable[[], object]  # the same op on plain local tensors


@dataclass
class Result:
    name: str
    placements: str
    plain_us: float
    stock_us: float
    torchshard_us: float
    plain_p90_us: float
    stock_p90_us: float
    torchshard_p90_us: float
    native_fraction: float
    speedup: float = field(init=False)
    overhead_ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.speedup = self.stock_us / self.torchshard_us
        stock_overhead = self.stock_us - self.plain_us
        self.overhead_ratio = (self.torchshard_us - self.plain_us) / stock_overhead


def _local(x):
    return x._local_tensor if isinstance(x, DTensor) else x


def build_cases(world_size: int) -> list[Case]:
    torch.manual_seed(0)
    mesh = init_device_mesh("cpu", (world_size,))
    mesh_2d = init_device_mesh("cpu", (2, world_size // 2))
    rows = 8 * world_size

    def dt(shape, placements, m=mesh):
        return distribute_tensor(torch.randn(*shape), m, placements)

    a = dt((rows, 64), [Shard(0)])
    b = dt((rows, 64), [Shard(0)])
    w = dt((64, 64), [Replicate()])
    w_col = dt((64, 64), [Shard(1)])
    bias = dt((64,), [Replicate()])
    batch = dt((world_size, 16, 16), [Shard(0)])
    batch_w = dt((world_size, 16, 16), [Shard(0)])
    table = dt((128, 32), [Replicate()])
    ids = distribute_tensor(torch.randint(0, 128, (rows, 4)), mesh, [Shard(0)])
    cond = distribute_tensor(torch.rand(rows, 64) > 0.5, mesh, [Shard(0)])
    partial = DTensor.from_local(torch.randn(rows, 64), mesh, [Partial()])
    a2 = dt((rows, 64), [Shard(0), Shard(1)], mesh_2d)
    b2 = dt((rows, 64), [Shard(0), Shard(1)], mesh_2d)
    r2 = dt((64, 64), [Replicate(), Replicate()], mesh_2d)
    s2 = dt((rows, 64), [Shard(0), Replicate()], mesh_2d)
    params = [dt((64, 64), [Shard(0)]) for _ in range(8)]
    out = dt((rows, 64), [Shard(0)])
    F = torch.nn.functional

    def case(name, placements, fn, *args, **kwargs):
        local_args = [[_local(x) for x in arg] if isinstance(arg, list) else _local(arg) for arg in args]
        return Case(name, placements, lambda: fn(*args, **kwargs), lambda: fn(*local_args, **kwargs))

    return [
        case("add", "S(0)+S(0)", torch.add, a, b),
        case("add(alpha=2) [kwarg]", "S(0)+S(0)", torch.add, a, b, alpha=2),
        case("mul(x, 2.5) [py scalar]", "S(0)", torch.mul, a, 2.5),
        case("sub", "S(0)-R bcast", torch.sub, a, bias),
        case("relu", "S(0)", torch.relu, a),
        case("gelu(tanh)", "S(0)", F.gelu, a, approximate="tanh"),
        case("exp", "S(0)", torch.exp, a),
        case("sum(dim=1)", "S(0)", torch.sum, a, 1),
        case("mean(dim=1, keepdim)", "S(0)", torch.mean, a, 1, True),
        case("mm", "S(0) @ R", torch.mm, a, w),
        case("mm (colwise)", "R @ S(1)", torch.mm, w, w_col),
        case("addmm", "R + S(0) @ R", torch.addmm, bias, a, w),
        case("bmm", "S(0) @ S(0)", torch.bmm, batch, batch_w),
        case("softmax", "S(0), dim=-1", torch.softmax, a, -1),
        case("layer_norm", "S(0)", F.layer_norm, a, (64,)),
        case("embedding", "R table, S(0) ids", F.embedding, ids, table),
        case("cat(dim=1)", "S(0), S(0)", torch.cat, [a, b], 1),
        case("where", "S(0)", torch.where, cond, a, b),
        case("clone", "S(0)", torch.clone, a),
        case("to(float64)", "S(0)", lambda x: x.to(torch.float64), a),
        case("add partial", "P + P", torch.add, partial, partial),
        case("_foreach_add (8 params)", "S(0) x8", torch._foreach_add, params, 1.0),
        case("_foreach_add_ (8 params) [in-place]", "S(0) x8", torch._foreach_add_, params, 0.0),
        case("detach [view]", "S(0)", torch.detach, a),
        case("t [view]", "S(0)", torch.t, a),
        case("view [view]", "S(0)", lambda x: x.view(-1, 8, 8), a),
        case("add_ [in-place]", "S(0)", lambda x, y: x.add_(y, alpha=0.0), a, b),
        case("mul_(x, lr) [in-place, py scalar]", "S(0)", lambda x: x.mul_(1.0), a),
        case("copy_ [in-place]", "S(0)", lambda x, y: x.copy_(y), a, b),
        case("add(out=) [out variant]", "S(0)", lambda x, y, o: torch.add(x, y, out=o), a, b, out),
        case("add 2-D mesh", "S(0)S(1)", torch.add, a2, b2),
        case("mm 2-D mesh", "S(0)R @ RR", torch.mm, s2, r2),
    ]


def _outputs_match(stock, ours) -> bool:
    if isinstance(stock, (list, tuple)):
        return type(stock) is type(ours) and len(stock) == len(ours) and all(
            _outputs_match(s, o) for s, o in zip(stock, ours)
        )
    if isinstance(stock, DTensor):
        return (
            type(ours) is DTensor
            and stock.placements == ours.placements
            and stock.shape == ours.shape
            and stock.stride() == ours.stride()
            and stock.dtype == ours.dtype
            and torch.equal(stock._local_tensor, ours._local_tensor)
        )
    if isinstance(stock, torch.Tensor):
        return torch.equal(stock, ours)
    return stock == ours


def _time_batch(fn: Callable[[], object], batch: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(batch):
        fn()
    return (time.perf_counter_ns() - start) / batch / 1e3


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def measure(case: Case, rounds: int, batch: int, warmup: int) -> Result:
    with torchshard.disabled():
        stock_out = case.run()
    torchshard.enable()
    for _ in range(warmup):
        case.run()
    ours_out = case.run()
    if not _outputs_match(stock_out, ours_out):
        raise AssertionError(f"{case.name}: torchshard output differs from stock")

    times: dict[str, list[float]] = {"plain": [], "stock": [], "torchshard": []}
    torchshard.reset_stats()
    for round_index in range(rounds):
        order = ["plain", "stock", "torchshard"]
        order = order[round_index % 3 :] + order[: round_index % 3]  # rotate to spread drift
        for variant in order:
            if variant == "stock":
                torchshard.disable()
            elif variant == "torchshard":
                torchshard.enable()
            fn = case.run_plain if variant == "plain" else case.run
            for _ in range(warmup):
                fn()
            times[variant].append(_time_batch(fn, batch))
    torchshard.enable()
    stats = torchshard.stats()
    calls = stats["native_calls"] + stats["declined"]
    return Result(
        name=case.name,
        placements=case.placements,
        plain_us=statistics.median(times["plain"]),
        stock_us=statistics.median(times["stock"]),
        torchshard_us=statistics.median(times["torchshard"]),
        plain_p90_us=_p90(times["plain"]),
        stock_p90_us=_p90(times["stock"]),
        torchshard_p90_us=_p90(times["torchshard"]),
        native_fraction=stats["native_calls"] / calls if calls else 0.0,
    )


def format_table(results: list[Result]) -> str:
    header = (
        "| op | placements | plain µs | stock µs | torchshard µs | speedup | "
        "overhead vs stock | native |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r.name} | {r.placements} | {r.plain_us:.2f} | {r.stock_us:.2f} | "
        f"{r.torchshard_us:.2f} | {r.speedup:.2f}x | {r.overhead_ratio:.2f} | "
        f"{r.native_fraction:.0%} |"
        for r in results
    ]
    return "\n".join([header, *rows])


def summary(results: list[Result]) -> str:
    native = [r for r in results if r.native_fraction == 1.0]
    speedups = [r.speedup for r in native]
    ratios = [r.overhead_ratio for r in native]
    return (
        f"natively served cases: {len(native)}/{len(results)}; over those, median speedup "
        f"{statistics.median(speedups):.2f}x (min {min(speedups):.2f}x), median overhead "
        f"ratio {statistics.median(ratios):.2f} (torchshard's time above the plain op / "
        "stock's time above the plain op)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds per case")
    parser.add_argument("--batch", type=int, default=100, help="calls per timed batch")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--json", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    args = parser.parse_args(argv)

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.world_size)
    torch.set_num_threads(1)  # dispatch cost, not intra-op parallelism
    cases = [c for c in build_cases(args.world_size) if args.filter in c.name]
    results = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.name} ...", file=sys.stderr, flush=True)
        results.append(measure(case, args.rounds, args.batch, args.warmup))
    table = format_table(results)
    print(table)
    print()
    print(summary(results))
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread, torch {torch.__version__}"
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"machine": machine, "args": vars(args), "results": [asdict(r) for r in results]},
                handle,
                indent=2,
            )
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n\n" + summary(results) + "\n")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
