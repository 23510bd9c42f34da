"""OpInfo parity with real values on 4 gloo processes, stock DTensor vs torchshard.

The fake process group behind test_opinfo_parity.py makes collectives no-ops. Here 4
spawned ranks (tests/gloo_ranks.py: file rendezvous, first failure re-raised) run a
seeded subset of the OpInfo cases (tests/opinfo_cases.py: 30 ops whose values are
reproducible, first sample, the all-Replicate combination plus 2 seeded others): every
case on stock, then with torchshard, in the same order on every rank, so redistributions
move real data. Each rank compares its own results field by field and collects
mismatches instead of stopping, so the collectives stay in lockstep; it must also have
served calls natively.
"""

from __future__ import annotations

import sys

import pytest

from gloo_ranks import gloo_group, run_ranks_with_rendezvous

WORLD_SIZE = 4
OPS_IN_SUBSET = 30
SUBSET_SEED = 7
TIMEOUT_S = 400


def _worker(rank: int, init_method: str, tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    from torch.distributed.device_mesh import init_device_mesh

    with gloo_group(init_method, rank, WORLD_SIZE, timeout_s=60):
        import torchshard
        from opinfo_cases import assert_same_case, case_plan, op_id, reproducible_ops, run_side

        mesh = init_device_mesh("cpu", (WORLD_SIZE,))
        ops = reproducible_ops(OPS_IN_SUBSET, seed=SUBSET_SEED)
        assert len(ops) == OPS_IN_SUBSET
        failures = []
        cases = 0
        for op in ops:
            for case in case_plan(op, mesh, samples=1, combos=3):
                cases += 1
                with torchshard.disabled():
                    stock = run_side(case, mesh, stock=True)
                ours = run_side(case, mesh, stock=False)
                try:
                    assert_same_case(stock, ours)
                except AssertionError as exc:
                    failures.append(f"{op_id(op)} {case.placements}: {exc}")
        assert not failures, f"{len(failures)} of {cases} cases differ on rank {rank}; first:\n{failures[0]}"
        assert torchshard.stats()["native_calls"] > 0, torchshard.stats()


@pytest.mark.multiprocess
@pytest.mark.slow
def test_opinfo_subset_real_values_gloo_world4() -> None:
    run_ranks_with_rendezvous(_worker, WORLD_SIZE, TIMEOUT_S)
