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

Nativeness is pinned: ``tests/opinfo_expected.json`` holds, per op, the outcome
(native / declined / no rule / stock raises / no samples), the cases run and
torchshard's own counters over them (calls, native calls, declines by reason) from a
real default run. Every default run must reproduce them exactly, so an op that starts
declining calls it served fails, and so does one that becomes native (record the file
again, and the diff shows what changed). A full run, whose cases differ, checks only
that every op served natively in the recorded run still serves some call natively.
Record with ``TORCHSHARD_OPINFO_RECORD=1`` (a default run; with ``-k`` only the
selected ops' entries are replaced).

Values on the fake process group are rank 0's real local compute; collectives are
no-ops on both sides. Real collectives run in test_thread_ranks.py (threaded process
group). ``TORCHSHARD_OPINFO_REPORT=path.md`` writes the per-op outcome lists (served
natively / declined to stock / stock raises) that docs/testing.md reproduces.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opinfo_cases import OpTally, float32_ops, op_id, render_report, run_op

pytestmark = pytest.mark.usefixtures("fresh_torchshard")

FULL = os.environ.get("TORCHSHARD_OPINFO_FULL") == "1"
RECORD = os.environ.get("TORCHSHARD_OPINFO_RECORD") == "1"
SAMPLES, COMBOS = (None, 256) if FULL else (2, 3)
EXPECTED_PATH = Path(__file__).with_name("opinfo_expected.json")
RECORD_HINT = "TORCHSHARD_OPINFO_RECORD=1 python3 -m pytest -q tests/test_opinfo_parity.py"


@functools.cache
def _load_expected() -> dict[str, dict[str, Any]]:
    """The recorded per-op figures (read once; recording writes them at the module's end)."""
    if not EXPECTED_PATH.exists():
        return {}
    with EXPECTED_PATH.open(encoding="utf-8") as f:
        return json.load(f)


def _write_expected(entries: dict[str, dict[str, Any]]) -> None:
    """One op per line, sorted, so a re-recording's diff names the ops that changed."""
    lines = [f"  {json.dumps(name)}: {json.dumps(entries[name])}" for name in sorted(entries)]
    EXPECTED_PATH.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


@pytest.fixture(scope="module")
def op_report() -> Iterator[dict[str, OpTally]]:
    """Per-op tallies of this module's run: written out if TORCHSHARD_OPINFO_REPORT is
    set, and merged into opinfo_expected.json if TORCHSHARD_OPINFO_RECORD is."""
    if RECORD and FULL:
        pytest.fail("record the expectations from a default run (TORCHSHARD_OPINFO_FULL unset)")
    tallies: dict[str, OpTally] = {}
    yield tallies
    path = os.environ.get("TORCHSHARD_OPINFO_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            out.write(render_report(tallies, samples=SAMPLES, combos=COMBOS))
    if RECORD:
        entries = dict(_load_expected())
        entries.update({name: t.pinned() for name, t in tallies.items() if t.mismatch is None})
        _write_expected(entries)


def _assert_as_recorded(name: str, tally: OpTally, expected: dict[str, dict[str, Any]]) -> None:
    want = expected.get(name)
    assert want is not None, f"{name}: not in {EXPECTED_PATH.name}; record it: {RECORD_HINT} -k ..."
    got = tally.pinned()
    if FULL:
        assert not want["native_calls"] or tally.native_calls > 0, (
            f"{name} was served natively in the recorded run and declines every call now: {got}")
        return
    if got == want:
        return
    if got["native_calls"] < want["native_calls"]:
        why = "torchshard now declines calls it served natively (a silent decline)"
    else:
        why = f"if the change is intended, record again: {RECORD_HINT} -k ..."
    raise AssertionError(f"{name}: not as recorded in {EXPECTED_PATH.name}: {why}\n"
                         f"recorded: {want}\nthis run: {got}")


@pytest.mark.slow
@pytest.mark.parametrize("op", float32_ops(), ids=op_id)
def test_op_matches_stock(op, mesh_1d, op_report) -> None:
    try:
        tally = run_op(op, mesh_1d, samples=SAMPLES, combos=COMBOS)
    except AssertionError as exc:
        op_report[op_id(op)] = OpTally(mismatch=str(exc).strip().splitlines()[-1][:300])
        raise
    op_report[op_id(op)] = tally
    if not RECORD:
        _assert_as_recorded(op_id(op), tally, _load_expected())
    if tally.cases == 0:
        pytest.skip("op_db has no float32 CPU sample for this op")


def test_expectations_name_exactly_the_ops_run() -> None:
    """opinfo_expected.json has an entry for every op this module runs, and no other."""
    if RECORD:
        pytest.skip("opinfo_expected.json is being recorded; it is written after the last test")
    expected = set(_load_expected())
    ops = {op_id(op) for op in float32_ops()}
    assert not ops - expected, f"ops without a recorded expectation: {sorted(ops - expected)}"
    assert not expected - ops, f"recorded ops op_db no longer has: {sorted(expected - ops)}"
