"""Stress: many threads dispatching mixed DTensor calls while the caches are disturbed.

Eight worker threads each run a seeded random sequence of mixed calls -- functional
ops, views, in-place and ``out=`` ops, tensor-list ops, a call that needs
redistribution, an autograd-recording op, a 2-D mesh reduction and a call that raises
-- and compare every result with stock DTensor's (``assert_same_result``; for the
failing call, the exception type and message). Meanwhile a controller thread cycles
through quiet stretches (caches warm up and hit), ``clear_cache()`` (cold caches, every
call a miss again) and ``disable()``/``enable()`` toggles (calls switch between
torchshard and stock mid-run). The ``small_capacity`` variant also keeps
every cache smaller than the working set, so inserts flush continuously, and samples
that no thread's cache ever holds more entries than the capacity.

The run is bounded in time: workers stop after their op count or at a deadline, and the
main thread joins every thread with a timeout; a thread still alive after it is a
deadlock and fails the test. The switch interval is lowered so threads interleave
inside dispatch far more often than the default 5 ms allows.

``test_stress_short`` runs in the default suite; ``test_stress_full`` (8 threads x 20,000
calls, ``slow``) is the issue's full size. ``test_stress_forced_gil_switches`` (``slow``)
runs the stress with the switch interval at 1 us, new shapes mixed in (shape-generic
decisions made and reused), capacity changes and thread exits, in a subprocess.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.tensor import Partial, Replicate, Shard

import torchshard
from dtensor_cases import seeded_dtensor
from dtensor_compare import assert_same_result

pytestmark = pytest.mark.usefixtures("fresh_torchshard")


@pytest.fixture(autouse=True)
def _quiet_fake_tensor_errors(caplog):
    # The failing call makes propagation's FakeTensor log a traceback at ERROR level
    # every time it misses; the error itself is what the test compares.
    caplog.set_level(logging.CRITICAL, logger="torch._subclasses.fake_tensor")

NUM_WORKERS = 8
SWITCH_INTERVAL_S = 5e-4


@dataclass(frozen=True)
class Phase:
    """One step of the controller's cycle: what it does (at least once), for how long,
    and how long it sleeps between actions."""

    name: str  # "quiet" | "clear" | "toggle"
    seconds: float
    pause_s: float


def phases(quiet_s: float, with_capacity: bool = False) -> tuple[Phase, ...]:
    """Mostly warm (the steady state of a real job), then one clear_cache() of every
    cache, warm again, then one disable()/enable() toggle (enable() also starts every
    cache cold). Each cold restart costs about 8 threads x 17 keys x 1.5 ms of stock
    propagation, so a long run spaces them out to keep most calls warm and the run
    bounded; a short run needs them close enough to happen several times.
    ``with_capacity`` adds a stretch under a capacity smaller than the working set
    (``set_cache_capacity()`` while workers insert: continuous flushes) and the
    restore of the capacity the run started with."""
    cycle = (Phase("quiet", quiet_s, 0.01), Phase("clear", 0.0, 0.002),
             Phase("quiet", quiet_s, 0.01), Phase("toggle", 0.0, 0.002))
    if with_capacity:
        cycle += (Phase("shrink", 0.0, 0.002), Phase("quiet", quiet_s, 0.01),
                  Phase("restore", 0.0, 0.002))
    return cycle
SMALL_CAPACITY = 6
SCALARS = (0.5, -2.0, 3.0)


def _inputs(mesh_1d, mesh_2d) -> dict[str, Any]:
    with torchshard.disabled():
        return {
            "x": seeded_dtensor(mesh_1d, (8, 8), [Shard(0)], seed=1),
            "y": seeded_dtensor(mesh_1d, (8, 8), [Shard(0)], seed=2),
            "z": seeded_dtensor(mesh_1d, (8, 8), [Shard(1)], seed=3),
            "w": seeded_dtensor(mesh_1d, (8, 4), [Replicate()], seed=4),
            "p": seeded_dtensor(mesh_1d, (8, 8), [Partial()], seed=5),
            "g": seeded_dtensor(mesh_1d, (8, 8), [Shard(0)], seed=6).requires_grad_(),
            "u": seeded_dtensor(mesh_2d, (7, 5), [Shard(0), Replicate()], seed=7),
            "bad": seeded_dtensor(mesh_1d, (5, 3), [Replicate()], seed=8),
        }


def _inplace(t, scalar):
    scratch = t.clone()
    scratch.mul_(scalar)
    return scratch


def _out_variant(t):
    out = torch.empty_like(t)
    torch.add(t, t, out=out)
    return out


# name -> call(inputs, scalar); every call is a fixed program, so stock's result
# (computed once per scalar) is the reference for every repetition.
CALLS: dict[str, Callable[[dict[str, Any], float], Any]] = {
    "add": lambda v, s: v["x"] + v["y"],
    "mul_scalar": lambda v, s: v["x"] * s,
    "relu_sum": lambda v, s: torch.relu(v["x"]).sum(dim=1),
    "mm": lambda v, s: torch.mm(v["x"], v["w"]),
    "softmax_2d_mesh": lambda v, s: torch.softmax(v["u"], dim=1),
    "sum_2d_mesh": lambda v, s: v["u"].sum(0, keepdim=True),
    "view": lambda v, s: v["x"].view(64),
    "transpose": lambda v, s: v["y"].transpose(0, 1),
    "redistribute": lambda v, s: v["x"] + v["z"],
    "partial_add": lambda v, s: v["p"] + v["p"],
    "autograd": lambda v, s: (v["g"] * s).sum(dim=0),
    "cat": lambda v, s: torch.cat([v["x"], v["y"]], dim=1),
    "split": lambda v, s: v["y"].split(3, dim=1),
    "foreach": lambda v, s: torch._foreach_mul([v["x"], v["y"], v["z"]], s),
    "inplace": lambda v, s: _inplace(v["y"], s),
    "out": lambda v, s: _out_variant(v["x"]),
    "shape_error": lambda v, s: torch.mm(v["x"], v["bad"]),
}


# Calls whose first dimension varies: each size is a new shape (an exact-cache miss)
# that a shape-generic decision made for another size of the same size class serves
# without stock's propagation. 3 is below the mesh's 4; the others cover every residue
# modulo 4, several times each, so decisions are made and then reused.
SIZES = (3, 5, 6, 7, 9, 10, 12, 13, 15, 17, 20, 23)
SIZED_CALLS: dict[str, Callable[[dict[str, Any], float], Any]] = {
    "sized_add": lambda v, s: v["a"] + v["b"],
    "sized_relu_mul": lambda v, s: torch.relu(v["a"]) * s,
    "sized_sum": lambda v, s: v["a"].sum(dim=0),
    "sized_mm": lambda v, s: torch.mm(v["a"], v["w"]),
    "sized_softmax_2d_mesh": lambda v, s: torch.softmax(v["u"], dim=1),
}
SIZED_CALL_SHARE = 0.25  # of a worker's calls, when the run includes new shapes


def _sized_inputs(mesh_1d, mesh_2d) -> dict[int, dict[str, Any]]:
    with torchshard.disabled():
        w = seeded_dtensor(mesh_1d, (8, 4), [Replicate()], seed=30)
        return {
            n: {
                "a": seeded_dtensor(mesh_1d, (n, 8), [Shard(0)], seed=31 + n),
                "b": seeded_dtensor(mesh_1d, (n, 8), [Shard(0)], seed=61 + n),
                "w": w,
                "u": seeded_dtensor(mesh_2d, (n, 5), [Shard(0), Replicate()], seed=91 + n),
            }
            for n in SIZES
        }


def _outcome(call, inputs, scalar):
    try:
        return ("result", call(inputs, scalar))
    except RuntimeError as error:
        return ("error", (type(error), str(error)))


@dataclass
class StressReport:
    seconds: float = 0.0
    ops: list[int] = field(default_factory=lambda: [0] * NUM_WORKERS)
    errors: list[str] = field(default_factory=list)
    max_entries_seen: int = 0
    clears: int = 0
    toggles: int = 0
    capacity_changes: int = 0
    threads_ended: int = 0
    samples: int = 0


def _assert_same_outcome(expected, got, label):
    assert expected[0] == got[0], f"{label}: stock gave {expected[0]}, torchshard {got[0]}"
    if expected[0] == "error":
        assert got[1] == expected[1], f"{label}: {got[1]} != {expected[1]}"
    else:
        assert_same_result(expected[1], got[1], path=label)


def run_stress(mesh_1d, mesh_2d, ops_per_worker: int, deadline_s: float,
               capacity: int | None, quiet_s: float, *,
               switch_interval_s: float = SWITCH_INTERVAL_S, new_shapes: bool = False,
               shrink_capacity: int | None = None,
               calls_per_thread: int | None = None) -> StressReport:
    """Runs the stress and returns its report; fails on any result that differs from
    stock's and on a thread still alive after the deadline.

    ``new_shapes`` mixes in the SIZED_CALLS (new shapes: shape-generic decisions made
    and reused); ``shrink_capacity`` makes the controller also lower the capacity to it
    and restore it; ``calls_per_thread`` ends each worker's thread after that many calls
    and continues its sequence in a fresh thread (caches released on thread exit while
    the others dispatch)."""
    inputs = _inputs(mesh_1d, mesh_2d)
    sized_inputs = _sized_inputs(mesh_1d, mesh_2d) if new_shapes else {}
    names = sorted(CALLS)
    sized_names = sorted(SIZED_CALLS)
    with torchshard.disabled():
        expected = {(name, s, None): _outcome(CALLS[name], inputs, s)
                    for name in names for s in SCALARS}
        expected.update({(name, s, n): _outcome(SIZED_CALLS[name], sized_inputs[n], s)
                         for name in sized_names for s in SCALARS for n in sized_inputs})
    assert expected[("shape_error", SCALARS[0], None)][0] == "error"

    report = StressReport()
    lock = threading.Lock()
    stop = threading.Event()
    start = threading.Barrier(NUM_WORKERS + 2, timeout=60)  # workers, controller, main
    deadline = time.monotonic() + deadline_s
    join_by = deadline + 60

    def run_calls(index: int, rng: random.Random, first: int, count: int) -> None:
        try:
            for op_index in range(first, first + count):
                if time.monotonic() > deadline or stop.is_set():
                    break
                if new_shapes and rng.random() < SIZED_CALL_SHARE:
                    name, size = rng.choice(sized_names), rng.choice(SIZES)
                    call, call_inputs = SIZED_CALLS[name], sized_inputs[size]
                else:
                    name, size = rng.choice(names), None
                    call, call_inputs = CALLS[name], inputs
                scalar = rng.choice(SCALARS)
                _assert_same_outcome(expected[(name, scalar, size)],
                                     _outcome(call, call_inputs, scalar),
                                     f"worker{index}.op{op_index}.{name}({scalar}, {size})")
                report.ops[index] += 1
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            with lock:
                report.errors.append(f"worker {index}: {type(error).__name__}: {error}")
            stop.set()

    def worker(index: int) -> None:
        rng = random.Random(1000 + index)
        start.wait()
        if calls_per_thread is None:
            run_calls(index, rng, 0, ops_per_worker)
            return
        for first in range(0, ops_per_worker, calls_per_thread):
            if stop.is_set() or time.monotonic() > deadline:
                break
            segment = threading.Thread(target=run_calls, name=f"stress-{index}-from-{first}",
                                       args=(index, rng, first, calls_per_thread), daemon=True)
            segment.start()
            segment.join(max(0.0, join_by - time.monotonic()))
            if segment.is_alive():
                with lock:
                    report.errors.append(f"deadlock: {segment.name} still alive")
                stop.set()
                return
            with lock:
                report.threads_ended += 1

    def controller() -> None:
        start.wait()
        try:
            for phase in itertools.cycle(phases(quiet_s, with_capacity=shrink_capacity is not None)):
                if stop.is_set():
                    break
                phase_end = time.monotonic() + phase.seconds
                while True:
                    if phase.name == "clear":
                        torchshard.clear_cache()
                        report.clears += 1
                    elif phase.name == "toggle":
                        torchshard.disable()
                        time.sleep(phase.pause_s)
                        torchshard.enable()
                        report.toggles += 1
                    elif phase.name in ("shrink", "restore"):
                        torchshard.set_cache_capacity(
                            shrink_capacity if phase.name == "shrink" else run_capacity)
                        report.capacity_changes += 1
                    report.samples += 1
                    for counters in torchshard.stats()["threads"].values():
                        report.max_entries_seen = max(report.max_entries_seen,
                                                      counters["entries"])
                    time.sleep(phase.pause_s)
                    if time.monotonic() >= phase_end or stop.is_set():
                        break
        except BaseException as error:  # noqa: BLE001
            with lock:
                report.errors.append(f"controller: {type(error).__name__}: {error}")
        finally:
            if not torchshard.is_enabled():
                torchshard.enable()

    old_capacity = torchshard.cache_capacity()
    old_interval = sys.getswitchinterval()
    workers = [threading.Thread(target=worker, args=(i,), name=f"stress-{i}", daemon=True)
               for i in range(NUM_WORKERS)]
    control = threading.Thread(target=controller, name="stress-control", daemon=True)
    if capacity is not None:
        torchshard.set_cache_capacity(capacity)
    run_capacity = torchshard.cache_capacity()
    sys.setswitchinterval(switch_interval_s)
    try:
        for thread in (*workers, control):
            thread.start()
        start.wait()
        began = time.monotonic()
        for thread in workers:
            thread.join(max(0.0, join_by - time.monotonic()))
        stop.set()
        control.join(max(0.0, join_by - time.monotonic()) + 10)
        hung = [t.name for t in (*workers, control) if t.is_alive()]
        report.seconds = time.monotonic() - began
    finally:
        sys.setswitchinterval(old_interval)
        stop.set()
        torchshard.set_cache_capacity(old_capacity)
        if not torchshard.is_enabled():
            torchshard.enable()
    assert not hung, f"deadlock: threads still alive after the deadline: {hung}"
    assert not report.errors, report.errors[:5]
    return report


def _check_cache_still_works(mesh_1d):
    """After the storm, one thread's cache behaves as if nothing happened."""
    x = seeded_dtensor(mesh_1d, (8, 8), [Shard(0)], seed=21)
    with torchshard.disabled():
        expected = x * 2.0
    torchshard.clear_cache()
    torchshard.reset_stats()
    first, second = x * 2.0, x * 2.0
    stats = torchshard.stats()
    assert (stats["misses"], stats["hits"], stats["native_calls"]) == (1, 1, 2), stats
    assert_same_result(expected, first)
    assert_same_result(expected, second)


def _assert_stress_ran(report: StressReport, ops_per_worker: int, stats: dict) -> None:
    # Every worker ran; a worker that was starved (or stuck) would show few ops.
    assert min(report.ops) >= min(ops_per_worker, 200), report.ops
    assert report.clears > 0 and report.toggles > 0, report
    assert stats["hits"] > 0 and stats["misses"] > 0, stats
    assert stats["native_calls"] > 0, stats


# With the small capacity nearly every call misses (~1.5 ms each), hence fewer calls.
@pytest.mark.parametrize(("capacity", "ops"), [(None, 1000), (SMALL_CAPACITY, 300)],
                         ids=["default_capacity", "small_capacity"])
def test_stress_short(mesh_1d, mesh_2d, capacity, ops):
    """8 threads x 1,000 (small capacity: 300) mixed calls with concurrent clear_cache()
    and disable()/enable(): every result equals stock, no deadlock, entries never exceed
    the capacity."""
    report = run_stress(mesh_1d, mesh_2d, ops, deadline_s=120, capacity=capacity, quiet_s=0.05)
    stats = torchshard.stats()
    print(f"stress_short: {sum(report.ops)} calls in {report.seconds:.1f} s, {report}")
    _assert_stress_ran(report, ops, stats)
    assert report.max_entries_seen <= (capacity or torchshard.cache_capacity()), report
    if capacity is not None:
        assert stats["evictions"] > 0, stats
    _check_cache_still_works(mesh_1d)


@pytest.mark.slow
def test_stress_full(mesh_1d, mesh_2d):
    """The issue's size: 8 threads x 20,000 mixed calls (~1.3 aten ops each), warm
    and cold caches, concurrent clear_cache() and disable()/enable(); bounded at 240 s."""
    ops = 20_000
    report = run_stress(mesh_1d, mesh_2d, ops, deadline_s=240, capacity=None, quiet_s=1.0)
    stats = torchshard.stats()
    _assert_stress_ran(report, ops, stats)
    assert report.max_entries_seen <= torchshard.cache_capacity()
    counters = {k: stats[k] for k in ("hits", "misses", "native_calls", "declined")}
    print(f"stress_full: calls per worker {report.ops} in {report.seconds:.0f} s, "
          f"clears {report.clears}, toggles {report.toggles}, {counters}")
    _check_cache_still_works(mesh_1d)


# Forced GIL switches: at 1 us the interpreter hands the GIL over at nearly every
# opportunity (every eval-breaker check), so any hit-path helper that can release it --
# a Python __eq__/__hash__ on a spec, stock's functions on a miss, a DeviceMesh
# comparison while interning a layout -- is interleaved with clears, toggles, capacity
# changes and thread exits from the other threads.
FORCED_SWITCH_INTERVAL_S = 1e-6
FORCED_SWITCH_CALLS_PER_WORKER = 2000
FORCED_SWITCH_CALLS_PER_THREAD = 400
FORCED_SWITCH_DEADLINE_S = 150  # the workers stop here; the checks above still apply
FORCED_SWITCH_HARD_DEADLINE_S = FORCED_SWITCH_DEADLINE_S + 120  # deadlock: stacks, exit


def run_forced_gil_switch_stress(mesh_1d, mesh_2d) -> str:
    """The stress with the GIL switch interval at 1 us, concurrent clear_cache(),
    disable()/enable(), set_cache_capacity() and thread exits, and new shapes; returns
    a one-line summary. Runs in its own interpreter (test below)."""
    torchshard.reset_stats()
    report = run_stress(mesh_1d, mesh_2d, FORCED_SWITCH_CALLS_PER_WORKER,
                        deadline_s=FORCED_SWITCH_DEADLINE_S, capacity=None, quiet_s=0.5,
                        switch_interval_s=FORCED_SWITCH_INTERVAL_S, new_shapes=True,
                        shrink_capacity=SMALL_CAPACITY,
                        calls_per_thread=FORCED_SWITCH_CALLS_PER_THREAD)
    stats = torchshard.stats()
    _assert_stress_ran(report, FORCED_SWITCH_CALLS_PER_WORKER, stats)
    assert report.capacity_changes > 0 and report.threads_ended > NUM_WORKERS, report
    assert stats["decision_hits"] > 0, f"no shape-generic decision was reused: {stats}"
    assert stats["evictions"] > 0, f"the shrunk capacity never flushed: {stats}"
    _check_cache_still_works(mesh_1d)
    counters = {k: stats[k] for k in ("hits", "decision_hits", "misses", "native_calls",
                                      "declined", "evictions")}
    return (f"{sum(report.ops)} calls in {report.seconds:.0f} s, clears {report.clears}, "
            f"toggles {report.toggles}, capacity changes {report.capacity_changes}, "
            f"threads ended {report.threads_ended}, {counters}")


_FORCED_SWITCH_CHILD = f"""
import faulthandler, logging, sys
# The failing call's misses log FakeTensor tracebacks (as in the fixture above).
logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
faulthandler.dump_traceback_later({FORCED_SWITCH_HARD_DEADLINE_S}, exit=True)
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore
dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
from torchshard._native import _C
_C.set_miss_alarm_armed(False)  # misses on purpose, as in conftest.py
import test_stress
print(test_stress.run_forced_gil_switch_stress(init_device_mesh("cpu", (4,)),
                                               init_device_mesh("cpu", (2, 2))), flush=True)
"""


@pytest.mark.slow
def test_stress_forced_gil_switches():
    """8 workers x 2,000 mixed calls, a quarter of them new shapes, with
    sys.setswitchinterval(1e-6), concurrent clear_cache(), disable()/enable(),
    set_cache_capacity() and a fresh thread every 400 calls: every result equals stock's,
    no crash, no deadlock. In a subprocess, so that a crash or a deadlock holding the GIL
    fails this test (faulthandler prints every thread's stack) instead of the session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSHARD_")}
    proc = subprocess.run([sys.executable, "-c", _FORCED_SWITCH_CHILD], env=env,
                          capture_output=True, text=True,
                          timeout=FORCED_SWITCH_HARD_DEADLINE_S + 60)
    assert proc.returncode == 0, (
        f"exit status {proc.returncode}\n--- stdout ---\n{proc.stdout}\n"
        f"--- stderr ---\n{proc.stderr}")
    print(f"forced GIL switches: {proc.stdout.strip()}")
