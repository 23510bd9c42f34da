"""The ``shapes`` suite: calls whose global shape is new, stock vs torchshard.

Per case, three medians: stock's call on a shape it has never seen, torchshard's call on
a shape it has never seen (a shape-generic decision hit: the case's decision is made and
verified on other sizes of the same size class first), and torchshard's exact hit. Every
timed new-shape call uses a size no call has used before (sizes step by the mesh size, so
they share one size class); stock and torchshard alternate in blocks of ten calls, the case's ops
moved between the two paths with ``torchshard.testing.route`` (which leaves every cache
alone). Then a decode loop: tensor-parallel attention (heads sharded) whose KV cache grows
by one token per step (two ``cat``, two ``bmm``, one ``softmax``), per-step medians, and
the split of torchshard's calls into exact hits, decision hits and misses.

Results are compared: each side's outputs must have equal values, placements and shapes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from fake_world import fake_world, machine_description
from report import markdown_table, print_and_write
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard

import torchshard
from torchshard.testing import route

aten = torch.ops.aten
MESH_SIZE = 4
BLOCK = 10  # timed calls per side between two route() switches


@dataclass
class Case:
    name: str
    make: Callable[[Any, int], tuple[Any, ...]]  # (mesh, n) -> args
    fn: Callable[..., Any]
    ops: tuple[Any, ...]


def _dt(mesh: Any, local: torch.Tensor, placement: Any, shape: tuple[int, ...]) -> DTensor:
    return DTensor.from_local(local, mesh, [placement], run_check=False, shape=shape,
                              stride=torch.empty(shape, device="meta").stride())


def _rows(mesh: Any, n: int, cols: int = 64, placement: Any = Shard(0)) -> DTensor:
    local_rows = -(-n // MESH_SIZE) if isinstance(placement, Shard) and placement.dim == 0 else n
    return _dt(mesh, torch.randn(local_rows, cols), placement, (n, cols))


CASES = [
    Case("add S(0)+S(0)", lambda m, n: (_rows(m, n), _rows(m, n)), torch.add, (aten.add.Tensor,)),
    Case("relu S(0)", lambda m, n: (_rows(m, n),), torch.relu, (aten.relu.default,)),
    Case("mul scalar S(0)", lambda m, n: (_rows(m, n),), lambda x: x * 0.5, (aten.mul.Tensor,)),
    Case("sum(1) S(0)", lambda m, n: (_rows(m, n),), lambda x: x.sum(1), (aten.sum.dim_IntList,)),
    Case("softmax(-1) S(0)", lambda m, n: (_rows(m, n),), lambda x: torch.softmax(x, -1),
         (aten._softmax.default,)),
    Case("layer_norm S(0)", lambda m, n: (_rows(m, n),), lambda x: torch.nn.functional.layer_norm(x, (64,)),
         (aten.native_layer_norm.default,)),
    Case("view R", lambda m, n: (_rows(m, n, placement=Replicate()),), lambda x: x.view(x.shape[0], 8, 8),
         (aten.view.default,)),
    Case("transpose S(0)", lambda m, n: (_rows(m, n),), lambda x: x.transpose(0, 1), (aten.transpose.int,)),
    Case("mm S(0) @ R", lambda m, n: (_rows(m, n), _dt(m, torch.randn(64, 16), Replicate(), (64, 16))),
         torch.mm, (aten.mm.default,)),
    Case("cat S(1)", lambda m, n: (_rows(m, n, placement=Shard(1)),) * 2, lambda a, b: torch.cat([a, b]),
         (aten.cat.default,)),
]
DECODE_OPS = (aten.cat.default, aten.bmm.default, aten._softmax.default, aten.transpose.int)


def _route_all(ops: tuple[Any, ...], path: str) -> None:
    for op in ops:
        route(op, path)


def _timed(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[float, Any]:
    start = time.perf_counter_ns()
    out = fn(*args)
    return (time.perf_counter_ns() - start) / 1e3, out


def _same(stock: Any, ours: Any) -> bool:
    if isinstance(stock, (tuple, list)):
        return len(stock) == len(ours) and all(_same(s, o) for s, o in zip(stock, ours))
    return (stock.placements == ours.placements and stock.shape == ours.shape
            and torch.equal(stock.to_local(), ours.to_local()))


@dataclass
class CaseResult:
    name: str
    stock_new_us: float
    torchshard_new_us: float
    torchshard_hit_us: float
    speedup_new: float = 0.0
    decision_hits: int = 0
    misses: int = 0
    same_results: bool = True


def measure_case(case: Case, mesh: Any, rounds: int) -> CaseResult:
    base = 1001  # > the mesh size: one size class (1 modulo 4) for every size below
    torchshard.clear_cache()
    for n in (base, base + MESH_SIZE, base + 2 * MESH_SIZE):  # make and verify the decision
        case.fn(*case.make(mesh, n))
    before = torchshard.stats()
    stock_us, ours_us = [], []
    sizes = iter(range(base + 3 * MESH_SIZE, base + MESH_SIZE * (3 + 2 * rounds + 2 * BLOCK), MESH_SIZE))
    for _ in range(-(-rounds // BLOCK)):
        # Blocks of calls per side: re-registering a rule costs the next call a dispatcher
        # cache refill, which would land on the timed call.
        _route_all(case.ops, "stock")
        stock_us += [_timed(case.fn, case.make(mesh, next(sizes)))[0] for _ in range(BLOCK)]
        _route_all(case.ops, "torchshard")
        ours_us += [_timed(case.fn, case.make(mesh, next(sizes)))[0] for _ in range(BLOCK)]
    # The same new shape on both sides gives the same result.
    check = case.make(mesh, next(sizes))
    ours = case.fn(*check)
    _route_all(case.ops, "stock")
    same = _same(case.fn(*check), ours)
    _route_all(case.ops, "torchshard")
    after = torchshard.stats()
    hit_args = case.make(mesh, base)
    hit_us = [_timed(case.fn, hit_args)[0] for _ in range(rounds)]
    result = CaseResult(case.name, statistics.median(stock_us), statistics.median(ours_us),
                        statistics.median(hit_us), same_results=same,
                        decision_hits=after["decision_hits"] - before["decision_hits"],
                        misses=after["misses"] - before["misses"])
    result.speedup_new = result.stock_new_us / result.torchshard_new_us
    return result


@dataclass
class DecodeResult:
    steps: int
    stock_step_us: float
    torchshard_step_us: float
    speedup: float
    split: dict[str, int] = field(default_factory=dict)
    same_results: bool = True


def _decode(mesh: Any, steps: int, heads: int = 8, head_dim: int = 32, start: int = 64) -> tuple[list[float], Any]:
    torch.manual_seed(0)
    local_heads = heads // MESH_SIZE
    k = _dt(mesh, torch.randn(local_heads, start, head_dim), Shard(0), (heads, start, head_dim))
    v = _dt(mesh, torch.randn(local_heads, start, head_dim), Shard(0), (heads, start, head_dim))
    times, out = [], None
    for _ in range(steps):
        q = _dt(mesh, torch.randn(local_heads, 1, head_dim), Shard(0), (heads, 1, head_dim))
        start_ns = time.perf_counter_ns()
        k = torch.cat([k, q], 1)
        v = torch.cat([v, q], 1)
        scores = torch.bmm(q, k.transpose(1, 2))
        out = torch.bmm(torch.softmax(scores, -1), v)
        times.append((time.perf_counter_ns() - start_ns) / 1e3)
    return times, out


def measure_decode(mesh: Any, steps: int) -> DecodeResult:
    _route_all(DECODE_OPS, "stock")
    stock_times, stock_out = _decode(mesh, steps)
    _route_all(DECODE_OPS, "torchshard")
    torchshard.clear_cache()
    before = torchshard.stats()
    ours_times, ours_out = _decode(mesh, steps)
    after = torchshard.stats()
    split = {key: after[key] - before[key] for key in ("hits", "decision_hits", "misses")}
    stock, ours = statistics.median(stock_times), statistics.median(ours_times)
    return DecodeResult(steps, stock, ours, stock / ours, split, _same(stock_out, ours_out))


def format_report(cases: list[CaseResult], decode: DecodeResult) -> str:
    rows = [(c.name, f"{c.stock_new_us:.1f}", f"{c.torchshard_new_us:.1f}", f"{c.torchshard_hit_us:.1f}",
             f"{c.speedup_new:.1f}x", f"{c.torchshard_new_us / c.torchshard_hit_us:.2f}",
             f"{c.decision_hits}/{c.decision_hits + c.misses}", "yes" if c.same_results else "NO")
            for c in cases]
    table = markdown_table(["case", "stock new µs", "torchshard new µs", "torchshard hit µs",
                            "new-shape speedup", "new / hit", "decision hits", "same result"], rows, 1)
    median = statistics.median(c.speedup_new for c in cases)
    lines = [table, "", f"- median new-shape speedup over stock: {median:.1f}x",
             f"- decode step (8 heads sharded, KV grows 1 token/step, {decode.steps} steps): "
             f"stock {decode.stock_step_us:.0f} µs, torchshard {decode.torchshard_step_us:.0f} µs, "
             f"{decode.speedup:.1f}x; torchshard's calls: {decode.split}; same result: "
             f"{'yes' if decode.same_results else 'NO'}"]
    return "\n".join(lines)


def _draw_nothing(payload: dict, path: str) -> None:
    raise SystemExit("shapes: no chart yet (--png is not supported by this suite)")


def run(args: argparse.Namespace) -> int:
    rounds = 20 if args.quick else args.rounds
    steps = 20 if args.quick else args.steps
    with fake_world(args.world_size):
        mesh = init_device_mesh("cpu", (MESH_SIZE,))
        cases = [measure_case(case, mesh, rounds) for case in CASES]
        decode = measure_decode(mesh, steps)
    text = format_report(cases, decode)
    payload = {"suite": "shapes", "machine": machine_description(), "cases": cases, "decode": decode}
    print_and_write(args, text, payload, _draw_nothing)
    ok = all(c.same_results for c in cases) and decode.same_results
    return 0 if ok else 1
