"""torchshard's per-thread caches under concurrent dispatch.

Stock results are computed first with ``torchshard.disabled()``; worker threads then
dispatch the same ops with torchshard enabled and must produce identical DTensors.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import torchshard
from dtensor_compare import assert_same_dtensor

NUM_THREADS = 4
BARRIER_TIMEOUT_S = 60
JOIN_TIMEOUT_S = 120


pytestmark = pytest.mark.usefixtures("fresh_torchshard")


def make_inputs(mesh, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = distribute_tensor(torch.randn(8, 8, generator=gen), mesh, [Shard(0)])
    y = distribute_tensor(torch.randn(8, 8, generator=gen), mesh, [Shard(0)])
    w = distribute_tensor(torch.randn(8, 4, generator=gen), mesh, [Replicate()])
    return x, y, w


def workload(x, y, w):
    """A few natively served ops; returns every intermediate DTensor."""
    s = x + y
    m = s * 0.5
    r = torch.relu(m)
    p = torch.mm(r, w)
    total = p.sum(dim=1)
    return [s, m, r, p, total]


class Workers:
    """Runs ``target(index)`` in threads, collecting exceptions instead of losing them."""

    def __init__(self, count: int, target, daemon: bool = True):
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

        def run(index):
            try:
                target(index)
            except BaseException as error:  # noqa: BLE001 - reported by check()
                with self._lock:
                    self.errors.append(error)

        self.threads = [
            threading.Thread(target=run, args=(i,), name=f"ts-worker-{i}", daemon=daemon)
            for i in range(count)
        ]

    def start(self):
        for thread in self.threads:
            thread.start()

    def join(self):
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT_S)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"worker threads hung: {alive}"

    def check(self):
        if self.errors:
            raise self.errors[0]


def test_concurrent_threads_have_own_caches_and_match_stock(mesh):
    """Guards per-thread caches: 4 threads dispatch at once, each gets its own cache
    (visible in stats()["threads"] while alive), results equal stock, and totals keep
    the counts of the threads after they end."""
    inputs = [make_inputs(mesh, seed) for seed in range(NUM_THREADS)]
    with torchshard.disabled():
        expected = [workload(*args) for args in inputs]
    torchshard.reset_stats()

    start = threading.Barrier(NUM_THREADS, timeout=BARRIER_TIMEOUT_S)
    done = threading.Barrier(NUM_THREADS + 1, timeout=BARRIER_TIMEOUT_S)
    release = threading.Event()
    results: dict[int, list] = {}
    idents: dict[int, int] = {}
    rounds = 3

    def work(index):
        idents[index] = threading.get_ident()
        start.wait()
        out = None
        for _ in range(rounds):
            out = workload(*inputs[index])
        results[index] = out
        done.wait()  # stay alive while the main thread reads stats()
        assert release.wait(BARRIER_TIMEOUT_S)

    workers = Workers(NUM_THREADS, work)
    workers.start()
    try:
        done.wait()
        live = torchshard.stats()
    finally:
        release.set()
        if workers.errors:
            start.abort()
            done.abort()
        workers.join()
    workers.check()

    per_thread = live["threads"]
    for index in range(NUM_THREADS):
        ident = idents[index]
        assert ident in per_thread, f"worker {index} has no cache in stats()['threads']"
        counters = per_thread[ident]
        assert counters["entries"] > 0
        assert counters["entries"] <= len(workload(*inputs[index]))
        assert counters["misses"] >= 1
        assert counters["hits"] >= 1, "worker never hit its own cache"
    assert len({ident for ident in idents.values()} & set(per_thread)) == NUM_THREADS

    worker_calls = sum(per_thread[idents[i]]["native_calls"] for i in range(NUM_THREADS))
    assert worker_calls > 0
    assert live["native_calls"] >= worker_calls

    for index in range(NUM_THREADS):
        for stock_result, ours in zip(expected[index], results[index]):
            assert_same_dtensor(stock_result, ours)

    # Threads have ended: their caches are gone from "threads", but totals keep their counts.
    after = torchshard.stats()
    for ident in idents.values():
        if ident != threading.get_ident():
            assert ident not in after["threads"], "ended thread still listed"
    for counter in ("hits", "misses", "native_calls"):
        assert after[counter] >= live[counter], counter
    assert after["native_calls"] >= worker_calls


def test_totals_include_ended_threads(mesh):
    """Guards stats() totals: counts made by a thread that has ended are not lost."""
    x, y, _ = make_inputs(mesh, 0)
    torchshard.reset_stats()
    calls = 5

    def work(_index):
        for _ in range(calls):
            x + y

    workers = Workers(1, work)
    workers.start()
    workers.join()
    workers.check()
    stats = torchshard.stats()
    assert stats["native_calls"] == calls
    assert stats["hits"] == calls - 1
    assert stats["misses"] == 1


def test_reset_stats_zeroes_ended_thread_counts(mesh):
    """Guards reset_stats(): it also zeroes what ended threads contributed."""
    x, y, _ = make_inputs(mesh, 1)

    workers = Workers(2, lambda _i: [x + y for _ in range(3)])
    workers.start()
    workers.join()
    workers.check()
    assert torchshard.stats()["native_calls"] == 6
    torchshard.reset_stats()
    stats = torchshard.stats()
    assert (stats["hits"], stats["misses"], stats["native_calls"], stats["declined"]) == (0, 0, 0, 0)


def test_clear_cache_from_another_thread_while_workers_dispatch(mesh):
    """Guards clear_cache() thread safety: clearing every thread's cache while workers
    are mid-dispatch must not crash, hang, or change any result."""
    inputs = [make_inputs(mesh, 10 + seed) for seed in range(NUM_THREADS)]
    with torchshard.disabled():
        expected = [workload(*args) for args in inputs]

    start = threading.Barrier(NUM_THREADS + 1, timeout=BARRIER_TIMEOUT_S)
    stop = threading.Event()
    mismatches: list[str] = []
    iterations = [0] * NUM_THREADS
    min_iterations = 20

    def work(index):
        start.wait()
        while not stop.is_set() or iterations[index] < min_iterations:
            out = workload(*inputs[index])
            for k, (stock_result, ours) in enumerate(zip(expected[index], out)):
                try:
                    assert_same_dtensor(stock_result, ours)
                except AssertionError as error:
                    mismatches.append(f"worker {index} iter {iterations[index]} op {k}: {error}")
                    return
            iterations[index] += 1

    clears = 0

    def clearer():
        nonlocal clears
        start.wait()
        while not stop.is_set():
            torchshard.clear_cache()
            clears += 1

    workers = Workers(NUM_THREADS, work)
    clear_thread = threading.Thread(target=clearer, daemon=True)
    workers.start()
    clear_thread.start()
    try:
        # Let them race until every worker has done enough iterations.
        deadline = threading.Event()
        for _ in range(600):
            if min(iterations) >= min_iterations or workers.errors or mismatches:
                break
            deadline.wait(0.05)
    finally:
        stop.set()
        workers.join()
        clear_thread.join(JOIN_TIMEOUT_S)
    assert not clear_thread.is_alive()
    workers.check()
    assert not mismatches, mismatches[:3]
    assert min(iterations) >= min_iterations
    assert clears > 0

    # The caches still work afterwards: a fresh call misses, the repeat hits.
    torchshard.clear_cache()
    torchshard.reset_stats()
    x, y, _ = inputs[0]
    ours1 = x + y
    ours2 = x + y
    stats = torchshard.stats()
    assert stats["misses"] == 1 and stats["hits"] == 1
    assert_same_dtensor(expected[0][0], ours1)
    assert_same_dtensor(expected[0][0], ours2)


def test_threads_do_not_share_entries(mesh):
    """Guards cache isolation: a thread's first call misses even if another thread cached it."""
    x, y, _ = make_inputs(mesh, 2)
    x + y  # cached in the main thread
    torchshard.reset_stats()
    seen: dict[str, dict] = {}

    def work(_index):
        x + y
        seen["stats"] = dict(torchshard.stats()["threads"][threading.get_ident()])

    workers = Workers(1, work)
    workers.start()
    workers.join()
    workers.check()
    assert seen["stats"]["misses"] == 1
    assert seen["stats"]["hits"] == 0
    assert seen["stats"]["entries"] == 1


def test_control_calls_from_another_thread_while_workers_dispatch(mesh):
    """Guards the control API's thread safety: set_cache_capacity() (down to 0 and
    back, flushing warm caches), reset_stats() and disable()/enable() called from the
    main thread while workers dispatch must not crash, hang or change results."""
    xs = [distribute_tensor(torch.randn(4 + i, 8), mesh, [Shard(0)]) for i in range(6)]
    with torchshard.disabled():
        expected = [(x + x).sum(dim=1) for x in xs]
    capacity = torchshard.cache_capacity()
    stop = threading.Event()
    rounds = [0] * 3

    def work(index):
        while not stop.is_set() or rounds[index] < 3:
            for x, exp in zip(xs, expected):
                assert_same_dtensor(exp, (x + x).sum(dim=1))
            rounds[index] += 1

    workers = Workers(3, work)
    workers.start()
    toggles = 0
    try:
        waiter = threading.Event()
        for step in range(300):
            torchshard.set_cache_capacity(step % 4)
            torchshard.reset_stats()
            if step % 10 == 0:
                torchshard.disable()
                torchshard.enable()
                toggles += 1
            if workers.errors:
                break
            waiter.wait(0.002)
    finally:
        torchshard.set_cache_capacity(capacity)
        if not torchshard.is_enabled():
            torchshard.enable()
        stop.set()
        workers.join()
    workers.check()
    assert min(rounds) >= 3
    assert toggles > 0
    assert torchshard.cache_capacity() == capacity


def test_clear_cache_while_a_probe_compares_specs_is_deferred(mesh_1d, monkeypatch):
    """Regression: comparing two distinct-but-equal specs runs DeviceMesh.__eq__ (Python)
    in the middle of a cache probe, where another thread can take the GIL and call
    clear_cache(). That clear must not pull the map out from under the probe; it is
    applied by the owner right after. Here __eq__ itself calls clear_cache(), which
    makes the interleaving deterministic."""
    from torch.distributed.device_mesh import DeviceMesh

    twin_mesh = DeviceMesh("cpu", list(range(4)))
    assert twin_mesh is not mesh_1d and twin_mesh == mesh_1d and hash(twin_mesh) == hash(mesh_1d)
    data = torch.randn(8, 8)
    x = distribute_tensor(data, mesh_1d, [Shard(0)])
    y = distribute_tensor(data, twin_mesh, [Shard(0)])
    with torchshard.disabled():
        expected = y + y
    x + x  # caches the entry keyed by x's spec
    assert torchshard.stats()["entries"] == 1

    original_eq = DeviceMesh.__eq__
    clears = []

    def eq_that_clears(self, other):
        clears.append(torchshard.stats()["entries"])
        torchshard.clear_cache()
        return original_eq(self, other)

    monkeypatch.setattr(DeviceMesh, "__eq__", eq_that_clears)
    torchshard.reset_stats()
    ours = y + y  # same words and hash, different spec object: structural compare
    monkeypatch.undo()

    assert clears, "the probe never compared specs structurally; the scenario is moot"
    stats = torchshard.stats()
    assert stats["hits"] == 1 and stats["native_calls"] == 1
    assert stats["entries"] == 0, "the deferred clear was not applied"
    assert_same_dtensor(expected, ours)


# --------------------------------------------------------------------------------------
# Shape-generic decisions are per thread, like the exact cache: each thread has its own
# decision store (no lock on the lookup, nothing shared), so a decision one thread made
# is not seen by another, which makes its own on its first call of that layout.
# --------------------------------------------------------------------------------------

NEW_SHAPE_ROWS = tuple(range(1, 41))  # sizes 1, below, at and past the mesh; uneven too


def new_shape_inputs(mesh, rows: int, seed: int):
    """Inputs of ``new_shape_workload`` whose global shape depends on ``rows``."""
    gen = torch.Generator().manual_seed(seed * 1000 + rows)
    x = distribute_tensor(torch.randn(rows, 8, generator=gen), mesh, [Shard(0)])
    y = distribute_tensor(torch.randn(rows, 8, generator=gen), mesh, [Shard(0)])
    w = distribute_tensor(torch.randn(8, 4, generator=gen), mesh, [Replicate()])
    return x, y, w


NEW_SHAPE_WORKLOAD_OPS = 4  # add, relu, mm, sum
POLL_INTERVAL_S = 0.002


def new_shape_workload(x, y, w):
    """Shape-generic ops only (pointwise, mm, a reduction); every intermediate."""
    s = torch.relu(x + y)
    p = torch.mm(s, w)
    return [s, p, p.sum(dim=1)]


def test_decisions_are_per_thread(mesh):
    """Guards the per-thread decision store: the main thread decides for every layout of
    the workload; then worker threads run the same calls on new shapes at once. Each
    worker's first call is still a miss for a new layout (the main thread's decisions are
    not visible to it), each makes as many decisions of its own as the main thread did
    and reuses them, and every result equals stock's. (clear_cache() and reset_stats()
    act on every thread, so no thread calls them here.)"""
    workers_count = 3
    inputs = [[new_shape_inputs(mesh, rows, seed) for rows in NEW_SHAPE_ROWS]
              for seed in range(workers_count + 1)]
    with torchshard.disabled():
        expected = [[new_shape_workload(*args) for args in per_seed] for per_seed in inputs]
    torchshard.clear_cache()
    torchshard.reset_stats()

    def run_and_compare(index: int) -> tuple[dict, dict]:
        """This thread's figures after its first shape, and after all of them."""
        first = None
        for args, stock_results in zip(inputs[index], expected[index]):
            for stock_result, ours in zip(stock_results, new_shape_workload(*args), strict=True):
                assert_same_dtensor(stock_result, ours)
            if first is None:
                first = dict(torchshard.stats()["threads"][threading.get_ident()])
        return first, dict(torchshard.stats()["threads"][threading.get_ident()])

    main_first, main_figures = run_and_compare(workers_count)  # its own inputs
    assert main_figures["decisions"] > 0 and main_figures["decision_hits"] > 0, main_figures

    start = threading.Barrier(workers_count, timeout=BARRIER_TIMEOUT_S)
    figures: dict[int, tuple[dict, dict]] = {}

    def work(index):
        start.wait()
        figures[index] = run_and_compare(index)

    workers = Workers(workers_count, work)
    workers.start()
    workers.join()
    workers.check()
    # The first shape: every call (one per op) a miss for a new layout, on every thread.
    for first in [main_first] + [figures[index][0] for index in range(workers_count)]:
        ops = NEW_SHAPE_WORKLOAD_OPS
        assert (first["calls"], first["misses"], first["miss_reasons"], first["decisions"]) == (
            ops, ops, {"new_layout": ops}, ops), first
    for index in range(workers_count):
        own = figures[index][1]
        for counter in ("calls", "decisions", "decision_hits", "hits", "misses", "miss_reasons"):
            assert own[counter] == main_figures[counter], (counter, own, main_figures)


def test_clear_cache_while_threads_decide_on_new_shapes(mesh):
    """Guards clearing decision stores from another thread: while 3 workers run every
    shape of NEW_SHAPE_ROWS (each a new shape for them: misses, decisions made and
    reused), the main thread calls clear_cache() again as soon as some decision has
    been reused since the last clear. A clear is paced by reuse, not by a clock: a
    thread needs several shapes before its decisions cover the size classes, and a
    fixed interval is too short on a loaded machine. Nothing may crash or hang, every
    result must equal stock's, and decisions must be reused after several clears."""
    workers_count = 3
    inputs = [[new_shape_inputs(mesh, rows, 20 + seed) for rows in NEW_SHAPE_ROWS]
              for seed in range(workers_count)]
    with torchshard.disabled():
        expected = [[new_shape_workload(*args) for args in per_seed] for per_seed in inputs]
    torchshard.clear_cache()
    torchshard.reset_stats()
    rounds = 3  # the later rounds' shapes are new again after each clear

    def work(index):
        for _ in range(rounds):
            for args, stock_results in zip(inputs[index], expected[index]):
                for stock_result, ours in zip(stock_results, new_shape_workload(*args), strict=True):
                    assert_same_dtensor(stock_result, ours)

    def running() -> bool:
        return any(thread.is_alive() for thread in workers.threads) and not workers.errors

    workers = Workers(workers_count, work)
    workers.start()
    clears = 0
    reused_after_clear = 0  # clears after which a decision was made and reused again
    pause = threading.Event()
    try:
        while running():
            torchshard.clear_cache()
            clears += 1
            reuses_at_clear = torchshard.stats()["decision_hits"]
            while running() and torchshard.stats()["decision_hits"] == reuses_at_clear:
                pause.wait(POLL_INTERVAL_S)
            if torchshard.stats()["decision_hits"] > reuses_at_clear:
                reused_after_clear += 1
    finally:
        workers.join()
    workers.check()
    assert reused_after_clear >= 3, (clears, reused_after_clear)
    stats = torchshard.stats()
    assert stats["misses"] > workers_count * NEW_SHAPE_WORKLOAD_OPS, stats
