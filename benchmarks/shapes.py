"""``python3 benchmarks/run.py shapes``: what a shape never seen before costs, stock vs torchshard.

A call whose exact key misses (a new global shape) of an op in a shape-generic
family reuses a sharding decision keyed by layout and size classes
(docs/design.md, "Shape-generic decisions"); stock DTensor runs its propagation.
Four sections, all in one process on the ``fake`` process group, stock and
torchshard interleaved:

- ``cases``: per op case (shape_cases.py), single calls each at sizes no call of
  either side has used (one size class: multiples of the mesh size), after a
  warm-up that made and verified the case's decision on other sizes of that class:
  ``stock new`` vs ``torchshard new`` (a decision hit), and, for reference, each
  side's exact hit (the same call again) and the plain local op;
- ``decode``: TP attention decoding one token per step with a growing KV cache
  (shape_workloads.DecodeAttention); stock's caches are emptied before every step
  of either side, as each step's length is new to both anyway;
- ``varlen``: workloads.py's TP block, forward + backward + AdamW, a sequence length
  drawn for each step (without replacement: every step a new length);
- ``moe``: top-1 routed tokens over four TP expert MLPs, forward + backward +
  AdamW; the tokens per expert change with every step's routing (and repeat at
  times, as real routing does).

Before timing, every section compares torchshard's results with stock's on the
same inputs (values, placements, mesh, shape, stride, dtype, requires_grad); a
difference stops the run. The split of torchshard's calls into exact hits,
decision hits and misses (by reason) comes from ``torchshard.stats()`` deltas over
the timed calls.

    python3 benchmarks/run.py shapes                  # about 30 s here
    python3 benchmarks/run.py shapes --quick --json out.json --png out.png
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributed.tensor import init_device_mesh
from torch.distributed.tensor.debug import _clear_sharding_prop_cache

import torchshard

import charts
import report
import shape_workloads
from dispatch import OutputMismatch, outputs_match
from fake_world import fake_world, machine_description
from shape_cases import FreshSizes, ShapeCase, build_shape_cases, span_for
from timing import CaseTimings, Progress, Timing, each_call, percentile
from variants import EveryOpSwitch, VariantSwitch, record_calls
import workloads
from workloads import Workload

# The targets (issue 12): per-call and per-step speedups over stock.
NEW_CALL_TARGET = 20.0
STEP_TARGET = 10.0


@dataclass(frozen=True)
class Settings:
    calls: int = 200  # timed single calls per variant and case
    case_warmup: int = 6  # untimed torchshard calls on fresh sizes before timing a case
    case_checks: int = 3  # decision-hit calls compared with stock, per case
    steps: int = 48  # timed steps per variant and loop
    rounds: int = 4  # interleaved rounds the steps are split into
    loop_checks: int = 6  # steps both sides run on the same inputs, compared
    loop_warmup: int = 12  # untimed steps per variant before timing a loop


QUICK = Settings(calls=8, case_warmup=4, case_checks=2, steps=4, rounds=2, loop_checks=4, loop_warmup=8)

COUNTERS = ("calls", "hits", "decision_hits", "misses", "declined")


def counter_delta(before: dict, after: dict) -> dict:
    """torchshard.stats() counters between two snapshots, with miss reasons."""
    delta = {name: after[name] - before[name] for name in COUNTERS}
    reasons = {reason: n - before["miss_reasons"].get(reason, 0) for reason, n in after["miss_reasons"].items()}
    delta["miss_reasons"] = {reason: n for reason, n in reasons.items() if n}
    return delta


def add_counts(total: dict, delta: dict) -> None:
    for name in COUNTERS:
        total[name] = total.get(name, 0) + delta[name]
    reasons = total.setdefault("miss_reasons", {})
    for reason, n in delta["miss_reasons"].items():
        reasons[reason] = reasons.get(reason, 0) + n


def _counts() -> dict:
    return {**{name: 0 for name in COUNTERS}, "miss_reasons": {}}


# ----------------------------------------------------------------------------- cases


@dataclass
class CaseResult(CaseTimings):
    stock_new: Timing
    stock_hit: Timing
    torchshard_new: Timing
    torchshard_hit: Timing
    new_calls: dict  # how torchshard's timed new-shape calls found their sharding
    hit_calls: dict  # and its timed repeat calls
    compared: int  # torchshard's outputs at new shapes (after warm-up) compared equal to stock's
    new_speedup: float = dataclasses.field(init=False)  # stock new / torchshard new
    new_over_hit: float = dataclasses.field(init=False)  # torchshard new / torchshard hit

    def __post_init__(self) -> None:
        self.new_speedup = self.stock_new.median_us / self.torchshard_new.median_us
        self.new_over_hit = self.torchshard_new.median_us / self.torchshard_hit.median_us


class PreparedCall:
    """The call each variant's timed slot makes, built untimed by ``prepare``."""

    def __init__(self) -> None:
        self.call: Callable[[], object] = lambda: None

    def __call__(self) -> object:
        return self.call()


def measure_case(case: ShapeCase, settings: Settings) -> CaseResult:
    variants = ("plain", "stock new", "stock hit", "torchshard new", "torchshard hit")
    needed = 1 + settings.case_warmup + settings.case_checks + len(variants) * settings.calls
    sizes = FreshSizes(case.varying, case.mesh_size, span_for(case.varying, needed))
    # A call at one fixed shape, run after every switch: re-registering a rule costs
    # the op's next call a dispatcher cache refill, which must not land on a timed call.
    warm, _ = case.build(sizes.take())
    switch = VariantSwitch(record_calls(warm))
    try:
        switch.switch("torchshard")
        # The first call makes the decision, the second reuses it and (verification
        # "first") is checked against stock's propagation; from then on, decision hits.
        for _ in range(settings.case_warmup):
            case.build(sizes.take())[0]()
        compared = 0
        for _ in range(settings.case_checks):
            run, _ = case.build(sizes.take())
            ours = run()
            switch.switch("stock")
            stock = run()
            switch.switch("torchshard")
            if not outputs_match(stock, ours):
                raise OutputMismatch(f"{case.name}: torchshard's output at a new shape differs from stock's")
            compared += 1

        prepared = {name: PreparedCall() for name in variants}

        def preparer(name: str) -> Callable[[], None]:
            path = "torchshard" if name.startswith("torchshard") else "stock"

            def prepare() -> None:
                run, plain = case.build(sizes.take())
                if name != "plain":
                    switch.switch(path)
                    warm()
                if name.endswith("hit"):
                    run()  # the timed call is this shape's second
                prepared[name].call = plain if name == "plain" else run
                snapshot[name] = torchshard.stats()

            return prepare

        snapshot: dict[str, dict] = {}
        tallies = {"torchshard new": _counts(), "torchshard hit": _counts()}

        def tally(name: str) -> Callable[[], None]:
            return lambda: add_counts(tallies[name], counter_delta(snapshot[name], torchshard.stats()))

        timings = each_call(
            {name: (preparer(name), prepared[name]) for name in variants},
            rounds=settings.calls,
            after={name: tally(name) for name in tallies},
        )
    finally:
        switch.close()
    return CaseResult(
        op=case.op, placements=case.placements, mesh=case.mesh, plain=timings["plain"],
        stock_new=timings["stock new"], stock_hit=timings["stock hit"],
        torchshard_new=timings["torchshard new"], torchshard_hit=timings["torchshard hit"],
        new_calls=tallies["torchshard new"], hit_calls=tallies["torchshard hit"], compared=compared,
    )


# ----------------------------------------------------------------------------- loops


@dataclass
class LoopResult:
    name: str
    description: str
    steps: int  # timed steps per variant
    stock_ms: float  # median per step
    torchshard_ms: float
    stock_p90_ms: float
    torchshard_p90_ms: float
    per_step: dict  # torchshard's calls per timed step, split by how they found their sharding
    miss_reasons: dict  # over all timed torchshard steps
    ops_with_misses: dict  # op -> miss reasons, from explain() over extra untimed steps
    compared: int  # steps (and final states) compared equal to stock's
    speedup: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.speedup = self.stock_ms / self.torchshard_ms


def _per_step(total: dict, steps: int) -> dict:
    return {name: total[name] / steps for name in COUNTERS}


def _loop_result(name: str, description: str, times: dict[str, list[float]], counts: dict,
                 ops_with_misses: dict, compared: int) -> LoopResult:
    steps = len(times["torchshard"])
    return LoopResult(
        name=name, description=description, steps=steps,
        stock_ms=statistics.median(times["stock"]), torchshard_ms=statistics.median(times["torchshard"]),
        stock_p90_ms=percentile(times["stock"], 90), torchshard_p90_ms=percentile(times["torchshard"], 90),
        per_step=_per_step(counts, steps), miss_reasons=counts["miss_reasons"],
        ops_with_misses=ops_with_misses, compared=compared,
    )


def _ops_with_misses(run_steps: Callable[[], None]) -> dict:
    with torchshard.explain(print_report=False) as explained:
        run_steps()
    return {op.op: op.miss_reasons for op in explained.ops if op.miss_reasons}


def _timed(step: Callable[[], object]) -> tuple[object, float, dict]:
    """Runs one step; its result, milliseconds and torchshard counter deltas."""
    before = torchshard.stats()
    start = time.perf_counter()
    result = step()
    elapsed_ms = (time.perf_counter() - start) * 1e3
    return result, elapsed_ms, counter_delta(before, torchshard.stats())


def measure_decode(world: int, settings: Settings) -> LoopResult:
    mesh = init_device_mesh("cpu", (world,))
    shapes = shape_workloads.DecodeShapes()
    states = {"stock": shape_workloads.DecodeAttention(mesh, shapes),
              "torchshard": shape_workloads.DecodeAttention(mesh, shapes)}
    # A step at the prompt's fixed length, run after every switch (untimed, hits on both
    # sides): re-registered rules cost their ops' next call a dispatcher cache refill.
    prompt = shape_workloads.DecodeAttention(mesh, shapes)
    warm_token = prompt.token(10**6)

    def warm() -> None:
        shape_workloads.attend(prompt.k_cache_t, prompt.v_cache, *warm_token)

    switch = EveryOpSwitch()
    times: dict[str, list[float]] = {"stock": [], "torchshard": []}
    counts = _counts()
    compared = 0
    total_steps = settings.loop_warmup + settings.steps
    try:
        for step in range(total_steps):
            token = states["stock"].token(step)  # the same new token for both sides
            order = ("stock", "torchshard") if step % 2 == 0 else ("torchshard", "stock")
            outputs = {}
            for variant in order:
                switch.switch(variant)
                warm()
                # Every op of a step is at this step's new length: empty stock's caches so
                # that neither side profits from the other's run at the same length.
                _clear_sharding_prop_cache()
                outputs[variant], elapsed_ms, delta = _timed(lambda: states[variant].step(*token))
                if step >= settings.loop_warmup:
                    times[variant].append(elapsed_ms)
                    if variant == "torchshard":
                        add_counts(counts, delta)
            if not outputs_match(outputs["stock"], outputs["torchshard"]):
                raise OutputMismatch(f"decode step {step}: torchshard's attention output differs from stock's")
            compared += 1
        for cache in ("k_cache_t", "v_cache"):
            if not outputs_match(getattr(states["stock"], cache), getattr(states["torchshard"], cache)):
                raise OutputMismatch(f"decode: torchshard's {cache} differs from stock's")
        compared += 1
        switch.switch("torchshard")
        ours = states["torchshard"]
        ops_with_misses = _ops_with_misses(
            lambda: [ours.step(*ours.token(total_steps + i)) for i in range(4)])
    finally:
        switch.close()
    description = (f"{shapes.heads} heads over {world} ranks, head dim {shapes.head_dim}, KV cache "
                   f"{shapes.prompt + settings.loop_warmup} -> {shapes.prompt + total_steps} tokens; "
                   "2 cat + 2 bmm + softmax per step")
    return _loop_result("decode", description, times, counts, ops_with_misses, compared)


def measure_training(name: str, description: str, build: Callable[[], Workload],
                     settings: Settings) -> LoopResult:
    """Two copies of one workload (same seed), one per side: first run on the same step
    inputs and compared (losses, then every parameter), then timed interleaved on
    inputs of their own (each step index once)."""
    sides = {"stock": build(), "torchshard": build()}
    switch = EveryOpSwitch()
    times: dict[str, list[float]] = {"stock": [], "torchshard": []}
    counts = _counts()
    compared = 0
    try:
        for step in range(settings.loop_checks):
            losses = {}
            for variant, workload in sides.items():
                switch.switch(variant)
                losses[variant] = workload.step(step)
            if not torch.equal(losses["stock"], losses["torchshard"]):
                raise OutputMismatch(f"{name} step {step}: loss {losses['torchshard']} != stock's {losses['stock']}")
            compared += 1
        stock_params, our_params = (list(w.model.parameters()) for w in sides.values())
        if not outputs_match(stock_params, our_params):
            raise OutputMismatch(f"{name}: parameters after {settings.loop_checks} steps differ from stock's")
        compared += 1
        index = settings.loop_checks
        for variant, workload in sides.items():
            switch.switch(variant)
            for _ in range(settings.loop_warmup):
                workload.step(index)
                index += 1
        per_round = max(settings.steps // settings.rounds, 1)
        for round_index in range(settings.rounds):
            order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
            for variant in order:
                switch.switch(variant)
                # Untimed, at the first check step's shapes (hits): re-registered rules
                # cost their ops' next call a dispatcher cache refill.
                sides[variant].step(0)
                for _ in range(per_round):
                    _, elapsed_ms, delta = _timed(lambda: sides[variant].step(index))
                    index += 1
                    times[variant].append(elapsed_ms)
                    if variant == "torchshard":
                        add_counts(counts, delta)
        switch.switch("torchshard")
        first_extra = index
        ops_with_misses = _ops_with_misses(lambda: [sides["torchshard"].step(first_extra + i) for i in range(3)])
    finally:
        switch.close()
    return _loop_result(name, description, times, counts, ops_with_misses, compared)


def steps_needed(settings: Settings) -> int:
    """Step indices measure_training uses (checks, warm-up and timed steps of both sides, explain)."""
    per_round = max(settings.steps // settings.rounds, 1)
    return settings.loop_checks + 2 * settings.loop_warmup + 2 * per_round * settings.rounds + 3


def measure_varlen(world: int, settings: Settings) -> LoopResult:
    count = steps_needed(settings)
    shapes = workloads.SMALL
    description = (f"tp_block (batch {shapes.batch}, dim {shapes.dim}, {shapes.heads} heads, hidden "
                   f"{shapes.hidden}), fwd + bwd + AdamW; sequence length drawn per step without "
                   f"replacement from {2 * world}..{(1 + count) * world} (multiples of {world})")
    return measure_training("varlen", description, lambda: shape_workloads.build_varlen_block(count), settings)


def measure_moe(settings: Settings) -> LoopResult:
    shapes = shape_workloads.MoEShapes()
    probe = shape_workloads.build_moe(shapes)
    loads = [count for step in range(steps_needed(settings))
             for count in torch.bincount(probe.model.route(probe.make_input(step)),
                                         minlength=shapes.experts).tolist()]
    description = (f"{shapes.experts} TP expert MLPs (dim {shapes.dim}, hidden {shapes.hidden}), "
                   f"{shapes.tokens} tokens per step routed top-1; tokens per expert "
                   f"{min(loads)}..{max(loads)} (median {statistics.median(loads):.0f}, "
                   f"{len(set(loads))} distinct counts over the run); fwd + bwd + AdamW")
    return measure_training("moe", description, lambda: shape_workloads.build_moe(shapes), settings)


# ----------------------------------------------------------------------------- report


def summarize(cases: list[CaseResult], loops: dict[str, LoopResult]) -> dict:
    new_calls = _counts()
    for case in cases:
        add_counts(new_calls, case.new_calls)
    median_new = statistics.median(c.new_speedup for c in cases)
    slowest = min(cases, key=lambda c: c.new_speedup)
    return {
        "median_new_speedup": median_new,
        "min_new_speedup": slowest.new_speedup,
        "slowest_case": f"{slowest.op} {slowest.placements} {slowest.mesh}",
        "median_new_over_hit": statistics.median(c.new_over_hit for c in cases),
        "new_calls_decision_hit_fraction": new_calls["decision_hits"] / max(new_calls["calls"], 1),
        "new_calls_miss_reasons": new_calls["miss_reasons"],
        "step_speedups": {name: loop.speedup for name, loop in loops.items()},
        "targets": {
            f"median new-shape call >= {NEW_CALL_TARGET:.0f}x cheaper than stock": median_new >= NEW_CALL_TARGET,
            f"decode step >= {STEP_TARGET:.0f}x faster": loops["decode"].speedup >= STEP_TARGET,
            f"varlen TP step >= {STEP_TARGET:.0f}x faster": loops["varlen"].speedup >= STEP_TARGET,
        },
    }


def _split(counts: dict, scale: float = 1.0) -> str:
    parts = [f"{counts['hits'] * scale:.4g} exact", f"{counts['decision_hits'] * scale:.4g} decision",
             f"{counts['misses'] * scale:.4g} miss"]
    if counts["declined"]:
        parts.append(f"{counts['declined'] * scale:.4g} declined")
    return " / ".join(parts)


def _reasons(reasons: dict) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(reasons.items())) or "-"


def cases_table(cases: list[CaseResult]) -> str:
    header = ["op", "placements", "mesh", "plain µs", "stock new µs", "stock hit µs", "torchshard new µs",
              "torchshard hit µs", "stock new / ts new", "ts new / ts hit", "ts new calls: exact / decision / miss",
              "miss reasons"]
    rows = [
        [c.op, c.placements, c.mesh, f"{c.plain.median_us:.1f}", f"{c.stock_new.median_us:.0f}",
         f"{c.stock_hit.median_us:.1f}", f"{c.torchshard_new.median_us:.1f}", f"{c.torchshard_hit.median_us:.1f}",
         f"{c.new_speedup:.1f}x", f"{c.new_over_hit:.2f}", _split(c.new_calls), _reasons(c.new_calls["miss_reasons"])]
        for c in cases
    ]
    return report.markdown_table(header, rows, numeric_from=3)


def loops_table(loops: dict[str, LoopResult]) -> str:
    header = ["loop", "timed steps", "stock ms/step", "torchshard ms/step", "speedup",
              "ts calls/step: exact / decision / miss", "miss reasons (timed steps)", "ops with misses"]
    rows = [
        [loop.name, loop.steps, f"{loop.stock_ms:.2f}", f"{loop.torchshard_ms:.2f}", f"{loop.speedup:.1f}x",
         f"{loop.per_step['calls']:.4g} calls: {_split(loop.per_step)}", _reasons(loop.miss_reasons),
         "; ".join(f"{op.removeprefix('aten::')}: {_reasons(r)}" for op, r in loop.ops_with_misses.items()) or "-"]
        for loop in loops.values()
    ]
    return report.markdown_table(header, rows, numeric_from=1)


def summary_text(summary: dict, loops: dict[str, LoopResult]) -> str:
    lines = [
        f"- new-shape call, stock / torchshard: median {summary['median_new_speedup']:.1f}x, min "
        f"{summary['min_new_speedup']:.1f}x ({summary['slowest_case']}); torchshard new / hit: median "
        f"{summary['median_new_over_hit']:.2f}",
        f"- timed torchshard new-shape calls served by a decision: "
        f"{100 * summary['new_calls_decision_hit_fraction']:.1f}% (misses: "
        f"{_reasons(summary['new_calls_miss_reasons'])})",
    ]
    lines += [f"- {loop.name}: {loop.description}" for loop in loops.values()]
    lines += [f"- target {name}: {'met' if met else 'NOT met'}" for name, met in summary["targets"].items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else Settings()
    overrides = {"steps": args.steps, "calls": args.rounds}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    with fake_world(args.world_size):
        shape_cases = build_shape_cases(args.world_size)
        progress = Progress(len(shape_cases) + 3, "shapes", enabled=not args.no_progress)
        cases = []
        for case in shape_cases:
            cases.append(measure_case(case, settings))
            progress.step(case.name)
        loops = {}
        loops["decode"] = measure_decode(args.world_size, settings)
        progress.step("decode")
        loops["varlen"] = measure_varlen(args.world_size, settings)
        progress.step("varlen")
        loops["moe"] = measure_moe(settings)
        progress.step("moe")
    summary = summarize(cases, loops)
    payload = {
        "suite": "shapes",
        "machine": machine_description(),
        "settings": dataclasses.asdict(settings),
        "world_size": args.world_size,
        "decision_verification": torchshard.decision_verification(),
        "summary": summary,
        "cases": cases,
        "loops": loops,
    }
    text = "\n\n".join([cases_table(cases), loops_table(loops), summary_text(summary, loops)])
    report.print_and_write(args, text, payload, charts.shapes)
    return 0
