"""Shape-generic decisions: a new global shape served without stock's propagation.

The shape sweep runs every family of shape-generic ops (torchshard/_families.py) over
20 sizes of one dimension (sizes 1 and smaller than the mesh, uneven and even shards,
sizes past the mesh), for placements on the 1-D mesh of 4 and the 2-D (2, 2) mesh.
Every size is a new shape: torchshard's call goes through its decision store
(TORCHSHARD_VERIFY_DECISIONS=never, so no reuse is rescued by the safety net), and
stock's reference runs after emptying stock's caches (its C++ cache and both Python
caches). The differential harness (differential.check) compares every field of the
results, forward and, where a case asks, backward. Each sweep must also have reused
decisions: a sweep that silently propagated every shape would prove nothing.

``always`` then checks the same decisions against stock's own propagation on every
reuse: no conflict may show up.
"""

from __future__ import annotations

import threading
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from differential import assert_same_runs, run_side
from dtensor_cases import P, R, S0, S1, S2, D, Inputs, L, placements_id
from dtensor_compare import assert_same_result
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, distribute_tensor

import torchshard
from torchshard.testing import coarse_decision_keys, decision_verification, miss_alarm_armed

pytestmark = pytest.mark.usefixtures("fresh_torchshard")

# Twenty sizes of the varying dimension: 1 and the sizes below the mesh's 4, even and
# uneven shards around and past it.
SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 16, 17, 20, 23, 24, 31, 32, 40)


def clear_stock_caches() -> None:
    torch._C._clear_DTensor_sharding_propagator_cache()
    propagator = DTensor._op_dispatcher.sharding_propagator
    propagator.propagate_op_sharding.cache_clear()
    propagator._propagate_tensor_meta_cached.cache_clear()


@dataclass(frozen=True)
class Case:
    """One pattern: ``inputs(n, placements)`` gives the specs for size ``n``."""

    name: str
    inputs: Callable[[int, tuple[Any, ...]], list[Any]]
    fn: Callable[..., Any]
    placements_1d: tuple[tuple[Any, ...], ...] = ((R,), (S0,), (S1,))
    placements_2d: tuple[tuple[Any, ...], ...] = ((S0, S1), (R, S0))
    grad: bool = False


def one(shape: Callable[[int], tuple[int, ...]], grad: bool = False, kind: str = "float"):
    return lambda n, p: [D(shape(n), p, kind=kind, grad=grad)]


def two(shape_a: Callable[[int], tuple[int, ...]], shape_b: Callable[[int], tuple[int, ...]],
        grad: bool = False):
    return lambda n, p: [D(shape_a(n), p, grad=grad), D(shape_b(n), p, grad=grad)]


def row(n: int) -> tuple[int, int]:
    return (n, 8)


def col(n: int) -> tuple[int, int]:
    return (8, n)


CASES = [
    # pointwise, with broadcasting and Python scalars
    Case("add", two(row, row), lambda a, b: a + b),
    Case("mul_broadcast_row", lambda n, p: [D((n, 8), p), D((1, 8), tuple(R for _ in p))],
         lambda a, b: a * b),
    Case("add_broadcast_col", lambda n, p: [D((n, 8), p), D((n, 1), p)], lambda a, b: a + b),
    Case("relu_scalar", one(row), lambda x: torch.relu(x) * 2.5 - 1),
    Case("gelu_grad", one(row, grad=True), lambda x: F.gelu(x), grad=True),
    Case("where", lambda n, p: [D((n, 8), p, kind="bool"), D((n, 8), p), D((n, 8), p)],
         torch.where),
    Case("add_inplace", two(row, row), lambda a, b: a.add_(b)),
    # a replicated operand is redistributed to the other's sharding (Replicate ->
    # Shard costs nothing, so stock's choice reads no size): replayed per shape
    Case("add_replicated_operand", lambda n, p: [D((n, 8), p), D((n, 8), tuple(R for _ in p))],
         lambda a, b: a + b),
    # reductions with given dims
    Case("sum_dim", one(row), lambda x: x.sum(1)),
    Case("sum_dim0_keepdim", one(row), lambda x: x.sum(0, keepdim=True)),
    Case("mean_grad", one(col, grad=True), lambda x: x.mean(-1), grad=True),
    Case("amax", one(row), lambda x: x.amax(1)),
    Case("var", one(row), lambda x: x.var(1)),
    # softmax and log_softmax (a sharded softmax dim redistributes: not reusable, still exact)
    Case("softmax_grad", one(row, grad=True), lambda x: torch.softmax(x, -1), grad=True),
    Case("log_softmax_dim0", one(col), lambda x: torch.log_softmax(x, 0)),
    # layer_norm: normalized_shape follows the input's last dimension
    Case("layer_norm_grad", one(col, grad=True), lambda x: F.layer_norm(x, (x.shape[-1],)), grad=True,
         placements_1d=((R,), (S0,))),
    Case("layer_norm_affine",
         lambda n, p: [D((n, 8), p, grad=True), D((8,), tuple(R for _ in p), grad=True),
                       D((8,), tuple(R for _ in p), grad=True)],
         lambda x, w, b: F.layer_norm(x, (8,), w, b), grad=True, placements_1d=((R,), (S0,))),
    # matrix products
    Case("mm_grad", lambda n, p: [D((n, 8), p, grad=True), D((8, 4), tuple(R for _ in p), grad=True)],
         torch.mm, grad=True),
    Case("mm_colwise", lambda n, p: [D((n, 8), tuple(R for _ in p)), D((8, 8), p)], torch.mm),
    Case("bmm", lambda n, p: [D((4, n, 8), p), D((4, 8, n), p)], torch.bmm,
         placements_1d=((R,), (S0,))),
    Case("addmm", lambda n, p: [D((4,), tuple(R for _ in p)), D((n, 8), p), D((8, 4), tuple(R for _ in p))],
         torch.addmm),
    # row-wise: the replicated bias goes Replicate -> Partial, replayed per shape
    Case("addmm_rowwise",
         lambda n, p: [D((4,), tuple(R for _ in p)), D((n, 8), p),
                       D((8, 4), tuple(S0 if pl == S1 else R for pl in p))],
         torch.addmm, placements_1d=((S1,),), placements_2d=((R, S1), (S1, S1))),
    Case("linear_rowwise_bias_grad",
         lambda n, p: [D((2, n, 8), p, grad=True), D((4, 8), (S1,), grad=True), D((4,), (R,), grad=True)],
         F.linear, grad=True, placements_1d=((S2,),), placements_2d=()),
    Case("baddbmm", lambda n, p: [D((4, n, n), p), D((4, n, 8), p), D((4, 8, n), p)], torch.baddbmm,
         placements_1d=((R,), (S0,))),
    # embedding: the indices' shape varies
    Case("embedding", lambda n, p: [D((n, 3), tuple(R for _ in p), kind="index", high=10),
                                    D((10, 8), p)],
         F.embedding, placements_1d=((R,), (S1,)), placements_2d=((R, S1),)),
    # cat, stack, split, chunk
    Case("cat", two(row, row), lambda a, b: torch.cat([a, b], 0)),
    Case("cat_dim1", two(col, col), lambda a, b: torch.cat([a, b], 1)),
    Case("stack", two(row, row), lambda a, b: torch.stack([a, b], 1)),
    Case("split", one(col), lambda x: x.split(3, 1)),
    Case("chunk", one(row), lambda x: x.chunk(2, 1)),
    # views
    Case("transpose", one(row), lambda x: x.transpose(0, 1) * 1),
    Case("permute", lambda n, p: [D((n, 4, 8), p)], lambda x: x.permute(2, 0, 1)),
    Case("t_noncontiguous", one(row), lambda x: x.t().contiguous() + x.t()),
    Case("unsqueeze_squeeze", one(row), lambda x: x.unsqueeze(1).squeeze(1)),
    Case("view", lambda n, p: [D((n, 4, 8), p)], lambda x: x.view(x.shape[0], 4, 2, 4)),
    Case("reshape_flat", lambda n, p: [D((n, 4, 8), p)], lambda x: x.reshape(x.shape[0] * 4, 8)),
    # a view's shape argument is keyed by how it regroups the input's dimensions: the
    # flatten and unflatten inside F.linear, -1, size-1 dimensions; a sharded dimension
    # the view keeps runs with its local size, rebuilt per shape; a sharded dimension
    # the view splits or merges is stock's every time (its plan reads sizes)
    Case("view_flatten", lambda n, p: [D((2, n, 8), p)], lambda x: x.view(2 * n_of(x), 8),
         placements_1d=((R,), (S0,), (S1,), (S2,), (P,)), placements_2d=((S0, S2), (R, S2), (S1, P))),
    Case("view_unflatten", lambda n, p: [D((2 * n, 8), p)], lambda x: x.view(2, x.shape[0] // 2, 8),
         placements_1d=((R,), (S0,), (S1,), (P,)), placements_2d=((S0, S1), (R, S1))),
    Case("view_infer_size", lambda n, p: [D((n, 4, 8), p)], lambda x: x.view(-1, 8),
         placements_1d=((R,), (S0,), (S2,)), placements_2d=((S0, S2), (R, S2))),
    Case("view_size_one_dims", lambda n, p: [D((n, 1, 8), p)], lambda x: x.view(1, x.shape[0], 8, 1),
         placements_1d=((R,), (S0,), (S2,)), placements_2d=((S0, S2), (R, S0))),
    Case("linear_3d_colwise_grad",
         lambda n, p: [D((2, n, 8), tuple(R for _ in p), grad=True), D((4, 8), p, grad=True)],
         F.linear, grad=True, placements_1d=((S0,), (R,)), placements_2d=((R, S0),)),
    Case("linear_3d_rowwise_grad", lambda n, p: [D((2, n, 8), p, grad=True), D((4, 8), (S1,), grad=True)],
         F.linear, grad=True, placements_1d=((S2,),), placements_2d=()),
    Case("expand", lambda n, p: [D((n, 1), p)], lambda x: x.expand(x.shape[0], 8) + 0,
         placements_1d=((R,), (S0,)), placements_2d=((S0, R), (R, S0))),
    # foreach
    Case("foreach_add", lambda n, p: [L((D((n, 8), p), D((8, n), p))), L((D((n, 8), p), D((8, n), p)))],
         lambda a, b: torch._foreach_add(a, b)),
    Case("foreach_mul_scalar", lambda n, p: [L((D((n, 8), p), D((n, 4), p)))],
         lambda a: torch._foreach_mul(a, 0.5)),
]


def n_of(x: Any) -> int:
    """The varying size of a (2, n, ...) input."""
    return x.shape[1]


def _placements(case: Case, mesh_name: str) -> tuple[tuple[Any, ...], ...]:
    return case.placements_1d if mesh_name == "1d" else case.placements_2d


PARAMS = [
    pytest.param(case, mesh_name, placements, id=f"{case.name}-{mesh_name}-{placements_id(placements)}")
    for case in CASES
    for mesh_name in ("1d", "2d")
    for placements in _placements(case, mesh_name)
]


def _fresh_stock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, emptying stock's caches first whenever it runs on stock."""

    def run(*args: Any) -> Any:
        if not torchshard.is_enabled():
            clear_stock_caches()
        return fn(*args)

    return run


def sweep(case: Case, mesh: DeviceMesh, placements: tuple[Any, ...]) -> dict[str, Any]:
    """Every size through the harness; torchshard's counters over the sweep.

    Stock's runs come first, all of them (``disabled()`` empties torchshard's caches, so
    torchshard's runs must not be interleaved with them); then torchshard's, one size
    after the other, each a new shape for it.
    """
    inputs = {n: Inputs(case.inputs(n, placements), mesh, seed=n) for n in SIZES}
    fn = _fresh_stock(case.fn)
    with torchshard.disabled():
        stock = {n: run_side(inputs[n], fn, enabled=False, grad=case.grad) for n in SIZES}
    torchshard.clear_cache()
    torchshard.reset_stats()
    ours = {n: run_side(inputs[n], fn, enabled=True, grad=case.grad) for n in SIZES}
    counters = torchshard.stats()
    for n in SIZES:
        assert_same_runs(stock[n], ours[n])
    return counters


@pytest.mark.slow
@pytest.mark.parametrize(("case", "mesh_name", "placements"), PARAMS)
def test_new_shapes_match_fresh_stock(case: Case, mesh_name: str, placements: tuple[Any, ...],
                                      mesh_1d: DeviceMesh, mesh_2d: DeviceMesh) -> None:
    with decision_verification("never"):
        counters = sweep(case, mesh_1d if mesh_name == "1d" else mesh_2d, placements)
    assert counters["native_calls"] > 0, counters
    # Not every pattern can reuse (a sharded softmax dim redistributes), but every
    # family must show reuse under some of its placements: collected below.
    _REUSE[case.name] = _REUSE.get(case.name, 0) + counters["decision_hits"]
    assert counters["miss_reasons"].get("conflict", 0) == 0


_REUSE: dict[str, int] = {}


@pytest.mark.slow
def test_every_family_reused_decisions(mesh_1d: DeviceMesh, mesh_2d: DeviceMesh) -> None:
    """Each case reuses decisions on at least one placement (run after the sweep, or alone)."""
    missing = []
    for case in CASES:
        if case.name not in _REUSE:
            hits = 0
            with decision_verification("never"):
                for mesh_name, mesh in (("1d", mesh_1d), ("2d", mesh_2d)):
                    for placements in _placements(case, mesh_name):
                        hits += sweep(case, mesh, placements)["decision_hits"]
            _REUSE[case.name] = hits
        if _REUSE[case.name] == 0:
            missing.append(case.name)
    assert not missing, f"no decision reused for: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize(("case", "mesh_name", "placements"), PARAMS)
def test_every_reuse_agrees_with_stock_propagation(case: Case, mesh_name: str,
                                                   placements: tuple[Any, ...],
                                                   mesh_1d: DeviceMesh, mesh_2d: DeviceMesh) -> None:
    with decision_verification("always"):
        counters = sweep(case, mesh_1d if mesh_name == "1d" else mesh_2d, placements)
    reasons = counters["miss_reasons"]
    assert reasons.get("conflict", 0) == 0, reasons
    assert counters["decision_hits"] == 0, "with 'always' every reuse is checked"


# ---------------------------------------------------------------------- the safety net


def test_verification_catches_a_decision_key_that_is_too_coarse(
        mesh_1d: DeviceMesh, caplog: pytest.LogCaptureFixture) -> None:
    """Decision keys without size classes make a (1, 8) * (1, 8) call share the decision
    of (8, 8) * (1, 8), where stock decides otherwise (a size-1 dimension cannot stay
    sharded over a mesh of 4). With the default policy the first reuse is checked: the
    conflict is counted, logged once with the op and both answers, stock's answer is
    returned, and the decision is never reused again."""
    def call(n: int) -> Any:
        x = distribute_tensor(torch.arange(n * 8.0).reshape(n, 8), mesh_1d, [S0])
        y = distribute_tensor(torch.arange(8.0).reshape(1, 8), mesh_1d, [R])
        return x * y

    sizes = (8, 1, 1, 12)
    with torchshard.disabled():
        expected = []
        for n in sizes:
            clear_stock_caches()
            expected.append(call(n))
    torchshard.clear_cache()
    torchshard.reset_stats()
    with decision_verification("first"), coarse_decision_keys(), caplog.at_level(logging.WARNING, "torchshard"):
        results = [call(n) for n in sizes]
    torchshard.clear_cache()  # the coarse decisions must not outlive the test
    for n, stock, ours in zip(sizes, expected, results):
        assert_same_result(stock, ours, path=f"n={n}")
    reasons = torchshard.stats()["miss_reasons"]
    # 8: a new layout; 1: the first reuse, checked, conflicts; 1 again: exact hit;
    # 12: the retired decision is not reused.
    assert reasons == {"new_layout": 1, "conflict": 1, "retired_decision": 1}, reasons
    conflicts = [r for r in caplog.records if "disagreed" in r.getMessage()]
    assert len(conflicts) == 1, [r.getMessage() for r in caplog.records]
    assert "aten::mul.Tensor" in conflicts[0].getMessage()


def test_verification_never_trusts_the_coarse_key(mesh_1d: DeviceMesh) -> None:
    """The same coarse key with verification off reuses the wrong decision: the check
    above is what stands between such a key and a wrong placement (this test shows the
    conflict is real, not an artefact of the check)."""
    def call(n: int) -> Any:
        x = distribute_tensor(torch.arange(n * 8.0).reshape(n, 8), mesh_1d, [S0])
        y = distribute_tensor(torch.arange(8.0).reshape(1, 8), mesh_1d, [R])
        return x * y

    with torchshard.disabled():
        clear_stock_caches()
        stock = call(1)
    torchshard.clear_cache()
    with decision_verification("never"), coarse_decision_keys():
        call(8)
        ours = call(1)
    torchshard.clear_cache()
    assert ours.placements != stock.placements, (ours.placements, stock.placements)


# ------------------------------------------------------------------ the silent-miss alarm


@pytest.mark.slow
def test_persistent_misses_after_warm_up_warn_once(mesh_1d: DeviceMesh) -> None:
    """After a warm-up window of 10,000 calls, a window in which more than half of a
    thread's calls ran stock's propagation issues one TorchshardWarning naming the top ops
    and the reasons; later windows do not warn again. (A fresh thread, so its windows
    start with the test; shape-generic decisions off, so every new shape misses.)"""
    window = 10_000
    x = distribute_tensor(torch.ones(4, 4), mesh_1d, [S0])
    outcome: dict[str, Any] = {}

    def calls() -> None:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(window):  # warm-up: hits after the first call
                x + x
            outcome["after_warm_up"] = len(caught)
            for i in range(window):  # 60% new shapes
                n = 8 + i if i % 5 < 3 else 4
                (x if n == 4 else DTensor.from_local(torch.ones(2, 4), mesh_1d, [S0], run_check=False,
                                                     shape=(n, 4), stride=(4, 1))).add(1)
            outcome["after_misses"] = [str(w.message) for w in caught if w.category is torchshard.TorchshardWarning]
            for i in range(window):  # still missing: no second warning
                DTensor.from_local(torch.ones(2, 4), mesh_1d, [S0], run_check=False,
                                   shape=(window + i, 4), stride=(4, 1)).add(1)
            outcome["at_end"] = [w for w in caught if w.category is torchshard.TorchshardWarning]

    before = torchshard.shape_generic()
    torchshard.set_shape_generic(False)
    try:
        with miss_alarm_armed():
            thread = threading.Thread(target=calls)
            thread.start()
            thread.join()
    finally:
        torchshard.set_shape_generic(before)
    assert outcome["after_warm_up"] == 0
    (message,) = outcome["after_misses"]
    assert "ran stock's sharding propagation" in message
    assert "aten::add.Tensor" in message and "op_not_shape_generic=" in message
    assert len(outcome["at_end"]) == 1
