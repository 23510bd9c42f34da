"""Thread ranks: one thread per rank, as DTensorOpTestBase runs, over a subset of the
OpInfo suite, stock vs torchshard.

Every rank's values are real (unlike the fake process group) and every rank thread has
its own torchshard cache (tests/thread_ranks.py: a stock pass, then a torchshard pass).
Each rank's results of the two passes are compared (tests/opinfo_cases.py: outputs with
aliasing, inputs afterwards, gradients, exception types).

Subset: a seeded sample of op_db's float32 ops whose values are reproducible: none of
the ops their first sample dispatches on plain tensors draws from an RNG (ranks share
torch's global generator, so random values would depend on thread timing), and none
returns uninitialized memory (empty*). First sample, the all-Replicate combination plus
two seeded others.
"""

from __future__ import annotations

import pytest

from opinfo_cases import assert_same_case, case_plan, op_id, reproducible_ops, run_side
from thread_ranks import run_stock_then_torchshard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_torchshard")]

WORLD = 4
OPS_IN_SUBSET = 40
JOIN_TIMEOUT_S = 600


def test_thread_ranks_match_stock(mesh_1d) -> None:
    ops = reproducible_ops(OPS_IN_SUBSET, seed=4)
    assert len(ops) == OPS_IN_SUBSET
    cases = [case for op in ops for case in case_plan(op, mesh_1d, samples=1, combos=3)]
    ranks = run_stock_then_torchshard(
        lambda rank, mesh, stock: [run_side(case, mesh, stock=stock) for case in cases],
        world=WORLD, timeout_s=JOIN_TIMEOUT_S)
    failures = []
    for rank, passes in enumerate(ranks):
        for case, stock, ours in zip(cases, passes.stock, passes.torchshard):
            try:
                assert_same_case(stock, ours)
            except AssertionError as exc:
                failures.append(f"rank {rank} {op_id(case.op)} {case.placements}: {exc}")
    assert not failures, "\n".join(failures[:5])
    # Each rank thread served calls natively from its own cache.
    assert all(passes.native_calls > 0 for passes in ranks), [p.native_calls for p in ranks]
