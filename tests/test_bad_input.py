"""Bad input: torchshard must raise what stock DTensor raises, and stay consistent after.

Each case runs the same call with torchshard disabled (stock) and enabled; the
exception type must match, and the message too where it is deterministic.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import torchshard
from dtensor_compare import assert_same_dtensor
from dtensor_cases import seeded_dtensor

aten = torch.ops.aten


@pytest.fixture(scope="module")
def mesh_pair(mesh_1d):
    """A second 1-D mesh, over ranks [0, 1] only."""
    return DeviceMesh("cpu", [0, 1])


@pytest.fixture(autouse=True)
def _quiet_fake_tensor_errors(fresh_torchshard, caplog):
    # Sharding propagation failures make FakeTensor log a traceback at ERROR level;
    # keep it out of the test output (it is not what these tests check).
    caplog.set_level(logging.CRITICAL, logger="torch._subclasses.fake_tensor")


def capture(call):
    try:
        result = call()
    except Exception as error:  # noqa: BLE001 - the exception is the result
        return error
    raise AssertionError(f"expected an exception, got {type(result).__name__}")


def assert_same_error(call, compare_message: bool = True, repeats: int = 2):
    """Runs ``call`` on stock, then ``repeats`` times on torchshard (a second time so
    a cached entry for the bad call is exercised too); returns stock's exception."""
    with torchshard.disabled():
        expected = capture(call)
    for attempt in range(repeats):
        got = capture(call)
        assert type(got) is type(expected), (
            f"attempt {attempt}: torchshard raised {type(got).__name__}: {got}\n"
            f"stock raised {type(expected).__name__}: {expected}"
        )
        if compare_message:
            assert str(got) == str(expected), f"attempt {attempt}"
    return expected


def assert_next_valid_call_matches_stock(mesh):
    """After an error, a valid call misses/hits normally and matches stock."""
    x = seeded_dtensor(mesh, seed=11)
    y = seeded_dtensor(mesh, seed=12)
    with torchshard.disabled():
        expected = x + y
    torchshard.reset_stats()
    first = x + y
    second = x + y
    assert_same_dtensor(expected, first)
    assert_same_dtensor(expected, second)
    stats = torchshard.stats()
    assert stats["native_calls"] == 2
    assert stats["hits"] >= 1


def test_mismatched_meshes_1d_vs_subset(mesh, mesh_pair):
    """Guards mesh checking: two different 1-D meshes must raise stock's error."""
    a = seeded_dtensor(mesh)
    b = seeded_dtensor(mesh_pair)
    error = assert_same_error(lambda: a + b)
    assert "different meshes" in str(error)
    assert_next_valid_call_matches_stock(mesh)


def test_mismatched_meshes_1d_vs_2d(mesh, mesh_2d):
    """Guards mesh checking: a 1-D and a 2-D mesh over the same ranks."""
    a = seeded_dtensor(mesh)
    b = seeded_dtensor(mesh_2d, placements=(Shard(0), Replicate()))
    assert_same_error(lambda: a + b)
    assert_same_error(lambda: torch.mm(a, b))
    assert_next_valid_call_matches_stock(mesh)


def test_mismatched_meshes_after_valid_call_cached(mesh, mesh_pair):
    """Guards the key: a cached entry for (mesh, mesh) must not serve (mesh, other mesh)
    with the same placements and shapes."""
    a = seeded_dtensor(mesh)
    a2 = seeded_dtensor(mesh, seed=3)
    b = seeded_dtensor(mesh_pair)
    with torchshard.disabled():
        expected = a + a2
    assert_same_dtensor(expected, a + a2)  # cache (mesh, mesh)
    assert_same_error(lambda: a + b)
    assert_same_error(lambda: b + a)
    assert_same_dtensor(expected, a + a2)


def test_plain_tensor_without_implicit_replication(mesh):
    """Guards plain-tensor handling: mixing a multi-element torch.Tensor in is an error."""
    a = seeded_dtensor(mesh)
    plain = torch.randn(8, 8)
    error = assert_same_error(lambda: a + plain)
    assert "mixed torch.Tensor and DTensor" in str(error)
    assert_same_error(lambda: plain + a)
    assert_same_error(lambda: torch.mm(a, plain))
    assert_next_valid_call_matches_stock(mesh)


def test_plain_one_element_1d_tensor_matches_stock(mesh):
    """Guards the edge of implicit replication: stock replicates a 1-element 1-D plain
    tensor with a UserWarning; torchshard must give the same result and the warning."""
    a = seeded_dtensor(mesh)
    scalar_1d = torch.tensor([2.0])
    match = "implicitly creating a replicated DTensor"
    with torchshard.disabled():
        with pytest.warns(UserWarning, match=match):
            expected = a * scalar_1d
    for _ in range(2):
        with pytest.warns(UserWarning, match=match):
            ours = a * scalar_1d
        assert_same_dtensor(expected, ours)


def test_op_without_sharding_strategy(mesh):
    """Guards the no-strategy path: aten.renorm has a CPU kernel but no DTensor strategy,
    so both must raise NotImplementedError with the same message."""
    propagator = DTensor._op_dispatcher.sharding_propagator
    op = aten.renorm.default
    assert op not in propagator.op_strategy_funcs
    assert op not in propagator.op_single_dim_strategy_funcs
    assert op not in propagator.op_to_rules
    a = seeded_dtensor(mesh, placements=(Replicate(),))
    error = assert_same_error(lambda: torch.renorm(a, 2, 0, 1.0))
    assert isinstance(error, NotImplementedError)
    assert "does not have a sharding strategy registered" in str(error)
    assert_next_valid_call_matches_stock(mesh)


def test_mm_shape_mismatch(mesh):
    """Guards shape errors in mm: stock's RuntimeError (from propagation) and message."""
    a = seeded_dtensor(mesh, shape=(8, 6), placements=(Replicate(),))
    b = seeded_dtensor(mesh, shape=(5, 4), placements=(Replicate(),))
    error = assert_same_error(lambda: torch.mm(a, b))
    assert isinstance(error, RuntimeError)
    assert "8, 6" in str(error) and "5, 4" in str(error)
    assert_next_valid_call_matches_stock(mesh)


def test_add_shape_mismatch(mesh):
    """Guards broadcast errors: non-broadcastable shapes raise stock's error."""
    a = seeded_dtensor(mesh, shape=(8, 8), placements=(Replicate(),))
    b = seeded_dtensor(mesh, shape=(8, 7), placements=(Replicate(),))
    assert_same_error(lambda: a + b)
    assert_next_valid_call_matches_stock(mesh)


def test_mm_dtype_mismatch_local_compute_error(mesh):
    """Guards local-compute failures: float @ int64 passes propagation and fails in the
    kernel; torchshard must hand over so stock raises its own error, type and message."""
    a = seeded_dtensor(mesh, placements=(Replicate(),))
    b = seeded_dtensor(mesh, placements=(Replicate(),), dtype=torch.int64)
    error = assert_same_error(lambda: torch.mm(a, b))
    assert isinstance(error, RuntimeError)
    assert "dtype" in str(error)
    assert_next_valid_call_matches_stock(mesh)


def test_wrong_dtype_kernel_not_implemented(mesh):
    """Guards local-compute failures of another type: bitwise_and on float raises
    NotImplementedError (not RuntimeError) in stock, and so must torchshard."""
    a = seeded_dtensor(mesh)
    error = assert_same_error(lambda: torch.bitwise_and(a, a))
    assert isinstance(error, NotImplementedError)
    assert_next_valid_call_matches_stock(mesh)


def test_local_compute_error_then_same_specs_valid_call(mesh):
    """Guards cache consistency after a failed local compute: the same op and specs
    with valid values afterwards returns stock's result."""
    a = seeded_dtensor(mesh, placements=(Replicate(),))
    bad = seeded_dtensor(mesh, placements=(Replicate(),), dtype=torch.int64)
    good = seeded_dtensor(mesh, shape=(8, 4), placements=(Replicate(),), seed=5)
    assert_same_error(lambda: torch.mm(a, bad))
    with torchshard.disabled():
        expected = torch.mm(a, good)
    assert_same_dtensor(expected, torch.mm(a, good))
    assert_same_dtensor(expected, torch.mm(a, good))
    assert_same_error(lambda: torch.mm(a, bad))


def test_invalid_static_argument(mesh):
    """Guards errors from bad non-tensor arguments: sum over an out-of-range dim."""
    a = seeded_dtensor(mesh)
    error = assert_same_error(lambda: a.sum(dim=5))
    assert isinstance(error, RuntimeError)
    assert "Dimension out of range" in str(error)
    assert_next_valid_call_matches_stock(mesh)


def test_unknown_kwarg_type_error(mesh):
    """Guards argument parsing: an invalid kwarg type raises stock's TypeError."""
    a = seeded_dtensor(mesh)
    assert_same_error(lambda: torch.add(a, a, alpha="two"))
    assert_next_valid_call_matches_stock(mesh)


def test_decline_reasons_are_counted_for_errors(mesh, mesh_pair):
    """Guards the stats of failed calls: each failing call is declined (not counted as a
    native call), under one of the documented reason names."""
    a = seeded_dtensor(mesh)
    b = seeded_dtensor(mesh_pair)
    plain = torch.randn(8, 8)
    for call in (lambda: a + b, lambda: a + plain):
        capture(call)
    stats = torchshard.stats()
    assert stats["native_calls"] == 0
    assert stats["declined"] == 2
    names = set(torchshard._C.decline_reason_names())
    assert set(stats["declines"]) <= names
    assert sum(stats["declines"].values()) == 2


def test_failed_propagation_runs_and_logs_once_like_stock(mesh_1d):
    """Regression: a propagation error used to be computed (and logged) twice.

    torchshard's miss path ran stock's propagation, declined on the error, and stock ran
    it again. It now raises stock's own exception directly, so the failure is logged as
    often as without torchshard.
    """
    a = distribute_tensor(torch.randn(8, 6), mesh_1d, [Replicate()])
    b = distribute_tensor(torch.randn(5, 4), mesh_1d, [Replicate()])
    # torch's loggers do not propagate to the root logger (caplog); listen directly.
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]

    def failures_logged(run) -> tuple[type, int]:
        records.clear()
        with pytest.raises(Exception) as raised:
            run()
        return raised.type, len(records)

    previous_level = logger.level
    logger.setLevel(logging.ERROR)  # the autouse fixture mutes it for the other tests
    logger.addHandler(handler)
    try:
        with torchshard.disabled():
            stock = failures_logged(lambda: torch.mm(a, b))
        ours = failures_logged(lambda: torch.mm(a, b))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    assert ours == stock
    assert stock[1] >= 1, "the scenario no longer logs; pick another failing op"


class _InterruptOnce:
    """Replaces ``cls.name`` with a version that raises ``KeyboardInterrupt`` on its
    first call, as a SIGINT handler would if the signal landed in that Python code."""

    def __init__(self, monkeypatch, cls, name):
        original = getattr(cls, name)
        self.raised = 0

        def interrupting(*args):
            if not self.raised:
                self.raised += 1
                raise KeyboardInterrupt(f"interrupt inside {cls.__name__}.{name}")
            return original(*args)

        monkeypatch.setattr(cls, name, interrupting)


def test_interrupt_inside_spec_hash_propagates_like_stock(mesh, monkeypatch):
    """Regression: a KeyboardInterrupt raised inside DTensorSpec.__hash__ (a fresh spec
    hashed while building the key) was cleared and the call declined, so the interrupt
    was lost; stock raises it. Ordinary exceptions there still decline to stock."""
    from torch.distributed.tensor._dtensor_spec import DTensorSpec

    x = seeded_dtensor(mesh)
    for run in ("stock", "torchshard"):
        fresh = x + x
        fresh._spec._hash = None  # hashed again on the next use
        interrupt = _InterruptOnce(monkeypatch, DTensorSpec, "__hash__")
        with pytest.raises(KeyboardInterrupt, match="DTensorSpec.__hash__"):
            if run == "stock":
                with torchshard.disabled():
                    torch.relu(fresh)
            else:
                torch.relu(fresh)
        assert interrupt.raised == 1
        monkeypatch.undo()
    assert_next_valid_call_matches_stock(mesh)


def test_interrupt_inside_structural_spec_compare_propagates(mesh_1d, monkeypatch):
    """Regression: a KeyboardInterrupt raised inside DeviceMesh.__eq__ while a cache probe
    compares two distinct but equal specs was cleared (counted as "not equal"), and the
    interrupt was lost; stock's DTensorSpec.__eq__ would raise it."""
    twin_mesh = DeviceMesh("cpu", list(range(4)))
    data = torch.randn(8, 8)
    x = distribute_tensor(data, mesh_1d, [Shard(0)])
    twin = distribute_tensor(data, twin_mesh, [Shard(0)])
    x + x  # caches the entry keyed by x's spec; twin's spec is equal, not identical
    interrupt = _InterruptOnce(monkeypatch, DeviceMesh, "__eq__")
    with pytest.raises(KeyboardInterrupt, match="DeviceMesh.__eq__"):
        twin + twin
    assert interrupt.raised == 1
    monkeypatch.undo()
    with torchshard.disabled():
        expected = twin + twin
    assert_same_dtensor(expected, twin + twin)
    assert_next_valid_call_matches_stock(mesh_1d)
