"""OpInfo parity: every float32 op of op_db on DTensor, stock vs torchshard, field by field.

One test per op_db entry that supports float32 on CPU (677 on torch 2.13). Each runs
its cases (tests/opinfo_cases.py) on the fake process group, 1-D mesh of 4 ranks:

* by default the first 2 samples, and per sample the all-Replicate combination plus a
  seeded sample of DTensorConverter's placement combinations, 3 in all;
* with ``TORCHSHARD_OPINFO_FULL=1`` every sample and up to 256 combinations per sample
  (all of them where there are fewer).

Compared per case: outputs (values, placements, mesh, spec, shape, stride, dtype,
requires_grad, grad_fn type, aliasing), the inputs after the call, gradients of a
backward pass through the first output, and exception types. Ops stock rejects on
Replicate inputs get the exception comparison only.

Values on the fake process group are rank 0's real local compute; collectives are
no-ops on both sides. Real collectives run in test_thread_ranks.py (threaded process
group). ``TORCHSHARD_OPINFO_REPORT=path.md`` writes the per-op outcome lists (served
natively / declined to stock / stock raises) that docs/testing.md reproduces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from opinfo_cases import OpTally, float32_ops, op_id, render_report, run_op

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_torchshard")]

FULL = os.environ.get("TORCHSHARD_OPINFO_FULL") == "1"
SAMPLES, COMBOS = (None, 256) if FULL else (2, 3)


@pytest.fixture(scope="module")
def op_report() -> Iterator[dict[str, OpTally]]:
    """Per-op tallies of this module's run, written out if TORCHSHARD_OPINFO_REPORT is set."""
    tallies: dict[str, OpTally] = {}
    yield tallies
    path = os.environ.get("TORCHSHARD_OPINFO_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            out.write(render_report(tallies, samples=SAMPLES, combos=COMBOS))


@pytest.mark.parametrize("op", float32_ops(), ids=op_id)
def test_op_matches_stock(op, mesh_1d, op_report) -> None:
    try:
        tally = run_op(op, mesh_1d, samples=SAMPLES, combos=COMBOS)
    except AssertionError as exc:
        op_report[op_id(op)] = OpTally(mismatch=str(exc).strip().splitlines()[-1][:300])
        raise
    op_report[op_id(op)] = tally
    if tally.cases == 0:
        pytest.skip("op_db has no float32 CPU sample for this op")
