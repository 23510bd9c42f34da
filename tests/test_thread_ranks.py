"""Thread ranks: one thread per rank, as DTensorOpTestBase runs, over a subset of the
OpInfo suite, stock vs torchshard.

torch's threaded process group (torch.testing._internal.distributed.multi_threaded_pg)
runs 4 ranks as 4 threads of this process with real collectives between them, so every
rank's values are real (unlike the fake process group) and every rank thread has its own
torchshard cache. torchshard.disable()/enable() switch the whole process, so the run is
in two passes over the same cases: all ranks on stock, then all ranks with torchshard;
the main thread switches between them while the ranks wait at a barrier. Each rank then
compares its own results of the two passes (tests/opinfo_cases.py: outputs with
aliasing, inputs afterwards, gradients, exception types).

Subset: a seeded sample of op_db's float32 ops whose values are reproducible: none of
the ops their first sample dispatches on plain tensors draws from an RNG (ranks share
torch's global generator, so random values would depend on thread timing), and none
returns uninitialized memory (empty*). First sample, the all-Replicate combination plus
two seeded others.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.multi_threaded_pg import (
    ProcessLocalGroup,
    _install_threaded_pg,
    _uninstall_threaded_pg,
)

import torchshard
from opinfo_cases import Case, assert_same_case, case_plan, op_id, reproducible_ops, run_side

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_torchshard")]

WORLD = 4
OPS_IN_SUBSET = 40
JOIN_TIMEOUT_S = 600


@dataclass
class RankOutcome:
    failures: list[str] = field(default_factory=list)
    native_calls: int = 0
    error: BaseException | None = None


def _rank(rank: int, store: dist.Store, cases: list[Case], passes: threading.Barrier,
          outcome: RankOutcome) -> None:
    dist.init_process_group("threaded", rank=rank, world_size=WORLD, store=store)
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        results = {}
        for stock in (True, False):
            passes.wait()  # the main thread switches torchshard off, then on
            passes.wait()
            results[stock] = [run_side(case, mesh, stock=stock) for case in cases]
        outcome.native_calls = torchshard.stats()["threads"][threading.get_ident()]["native_calls"]
        for case, stock, ours in zip(cases, results[True], results[False]):
            try:
                assert_same_case(stock, ours)
            except AssertionError as exc:
                outcome.failures.append(f"rank {rank} {op_id(case.op)} {case.placements}: {exc}")
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        outcome.error = exc
        passes.abort()
        ProcessLocalGroup.exception_handle(exc)  # wakes ranks waiting in a collective
    finally:
        dist.destroy_process_group()


def test_thread_ranks_match_stock(mesh_1d) -> None:
    ops = reproducible_ops(OPS_IN_SUBSET, seed=4)
    assert len(ops) == OPS_IN_SUBSET
    cases = [case for op in ops for case in case_plan(op, mesh_1d, samples=1, combos=3)]
    outcomes = [RankOutcome() for _ in range(WORLD)]
    passes = threading.Barrier(WORLD + 1)
    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    _install_threaded_pg()
    try:
        store = dist.HashStore()
        threads = [threading.Thread(target=_rank, args=(r, store, cases, passes, outcomes[r]))
                   for r in range(WORLD)]
        for thread in threads:
            thread.start()
        for switch in (torchshard.disable, torchshard.enable):
            passes.wait(timeout=JOIN_TIMEOUT_S)
            switch()
            passes.wait(timeout=JOIN_TIMEOUT_S)
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in threads), "rank threads still running"
    finally:
        torchshard.enable()
        _uninstall_threaded_pg()
        ProcessLocalGroup.reset()
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
    for rank, outcome in enumerate(outcomes):
        if outcome.error is not None:
            raise AssertionError(f"rank {rank} failed") from outcome.error
    failures = [f for outcome in outcomes for f in outcome.failures]
    assert not failures, "\n".join(failures[:5])
    # Each rank thread served calls natively from its own cache.
    assert all(outcome.native_calls > 0 for outcome in outcomes), [o.native_calls for o in outcomes]
