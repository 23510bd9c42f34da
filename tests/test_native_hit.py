"""Cache behaviour of torchshard's native path, observed through ``torchshard.stats()``.

Every result is also compared with stock DTensor (torchshard disabled) on the same inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import torchshard
from dtensor_compare import assert_same_dtensor

aten = torch.ops.aten


pytestmark = pytest.mark.usefixtures("fresh_torchshard")


def stock(fn, *args):
    with torchshard.disabled():
        return fn(*args)


def assert_counters(**expected: int) -> None:
    """The named torchshard.stats() totals have exactly these values."""
    stats = torchshard.stats()
    assert {name: stats[name] for name in expected} == expected


def this_thread(stats: dict) -> dict:
    import threading

    return stats["threads"][threading.get_ident()]


def test_second_identical_call_is_a_native_hit(mesh):
    """Guards the hit path: a repeated call must be served from the cache, not re-propagated."""
    a = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    b = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])

    first = a + b
    after_first = torchshard.stats()
    assert after_first["misses"] == 1
    assert after_first["native_calls"] == 1
    assert after_first["entries"] == 1

    second = a + b
    after_second = torchshard.stats()
    assert after_second["hits"] == after_first["hits"] + 1
    assert after_second["native_calls"] == after_first["native_calls"] + 1
    assert after_second["misses"] == after_first["misses"]
    assert after_second["entries"] == after_first["entries"]
    assert after_second["declined"] == 0

    expected = stock(lambda: a + b)
    assert_same_dtensor(expected, first)
    assert_same_dtensor(expected, second)


def test_per_thread_counters_match_totals_for_single_thread(mesh):
    """Guards stats() bookkeeping: with only this thread dispatching, its entry equals the totals."""
    a = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    for _ in range(3):
        torch.relu(a)
    stats = torchshard.stats()
    mine = this_thread(stats)
    assert (mine["hits"], mine["misses"], mine["native_calls"], mine["entries"]) == (2, 1, 3, 1)
    assert (stats["hits"], stats["misses"], stats["native_calls"]) == (2, 1, 3)


def test_hit_with_new_tensor_values_same_spec(mesh):
    """Guards against caching values: same specs, different data must hit and compute fresh results."""
    x1 = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    w1 = distribute_tensor(torch.randn(8, 4), mesh, [Replicate()])
    x2 = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    w2 = distribute_tensor(torch.randn(8, 4), mesh, [Replicate()])

    ours1 = torch.mm(x1, w1)
    ours2 = torch.mm(x2, w2)
    stats = torchshard.stats()
    assert stats["misses"] == 1 and stats["hits"] == 1 and stats["entries"] == 1

    assert_same_dtensor(stock(torch.mm, x1, w1), ours1)
    assert_same_dtensor(stock(torch.mm, x2, w2), ours2)


def test_different_static_args_are_different_entries(mesh):
    """Guards the key: sum(dim=0) and sum(dim=1) must not share an entry (different output specs)."""
    x = distribute_tensor(torch.randn(8, 12), mesh, [Shard(0)])

    ours_dim0 = x.sum(dim=0)
    ours_dim1 = x.sum(dim=1)
    assert_counters(entries=2, misses=2, hits=0)

    # Repeats hit their own entries.
    again_dim0 = x.sum(dim=0)
    again_dim1 = x.sum(dim=1)
    assert_counters(entries=2, hits=2, native_calls=4)

    expected_dim0 = stock(lambda: x.sum(dim=0))
    expected_dim1 = stock(lambda: x.sum(dim=1))
    # The two results really differ in layout, so a collision would be visible.
    assert expected_dim0.shape != expected_dim1.shape
    assert_same_dtensor(expected_dim0, ours_dim0)
    assert_same_dtensor(expected_dim0, again_dim0)
    assert_same_dtensor(expected_dim1, ours_dim1)
    assert_same_dtensor(expected_dim1, again_dim1)


def test_keepdim_is_part_of_the_key(mesh):
    """Guards the key: keepdim True/False change the output shape and must not collide."""
    x = distribute_tensor(torch.randn(8, 12), mesh, [Shard(1)])
    ours_keep = x.sum(dim=0, keepdim=True)
    ours_drop = x.sum(dim=0, keepdim=False)
    assert torchshard.stats()["entries"] == 2
    assert_same_dtensor(stock(lambda: x.sum(dim=0, keepdim=True)), ours_keep)
    assert_same_dtensor(stock(lambda: x.sum(dim=0, keepdim=False)), ours_drop)


def test_step_varying_non_static_scalar_does_not_grow_entries(mesh):
    """Guards against one cache entry per optimizer step.

    add.Tensor has stock's value-blind pointwise strategy, so its ``alpha`` keyword is
    keyed by kind: a changing learning rate must reuse one entry, while each result
    still uses its own lr.
    """
    from torchshard._hook import _has_value_blind_strategy

    assert _has_value_blind_strategy(aten.add.Tensor), "precondition: add.Tensor is pointwise"
    p = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    g = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])

    lrs = [0.1, 0.05, 0.025, 1e-3, 3.0]
    ours = [torch.add(p, g, alpha=-lr) for lr in lrs]
    stats = torchshard.stats()
    assert stats["entries"] == 1
    assert stats["misses"] == 1
    assert stats["hits"] == len(lrs) - 1

    for lr, result in zip(lrs, ours):
        assert_same_dtensor(stock(lambda: torch.add(p, g, alpha=-lr)), result)


def test_step_varying_addcmul_value_does_not_grow_entries(mesh):
    """Guards the same for addcmul's kwarg-only ``value`` (Adam-style update)."""
    p = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    m = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    v = distribute_tensor(torch.rand(8, 8) + 0.5, mesh, [Shard(0)])

    values = [-0.1, -0.01, -0.5]
    ours = [torch.addcmul(p, m, v, value=value) for value in values]
    assert torchshard.stats()["entries"] == 1
    for value, result in zip(values, ours):
        assert_same_dtensor(stock(lambda: torch.addcmul(p, m, v, value=value)), result)


def test_static_positional_scalar_results_use_their_own_value(mesh):
    """Guards ``x * lr``: whether or not the scalar is keyed, each call uses its own lr.

    (In this torch, DTensor registers mul.Tensor with static_argnum=0, so the scalar is
    static for stock as well; entries may grow, results must not be stale.)
    """
    x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    lrs = [0.5, 0.25, 0.5, 2.0]
    ours = [x * lr for lr in lrs]
    assert torchshard.stats()["native_calls"] == len(lrs)
    for lr, result in zip(lrs, ours):
        assert_same_dtensor(stock(lambda: x * lr), result)


def test_int_and_float_scalars_do_not_collide(mesh):
    """Guards the key: ``x * 2`` and ``x * 2.0`` differ in result dtype for int tensors."""
    x = distribute_tensor(torch.arange(64).reshape(8, 8), mesh, [Shard(0)])
    ours_int = x * 2
    ours_float = x * 2.0
    ours_bool = x * True
    assert ours_int.dtype == torch.int64
    assert_same_dtensor(stock(lambda: x * 2), ours_int)
    assert_same_dtensor(stock(lambda: x * 2.0), ours_float)
    assert_same_dtensor(stock(lambda: x * True), ours_bool)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda x, lo, hi: torch.clamp(x, None, hi), id="clamp(x, None, hi)"),
        pytest.param(lambda x, lo, hi: torch.clamp(x, lo, None), id="clamp(x, lo, None)"),
        pytest.param(lambda x, lo, hi: torch.clamp(x, lo, hi), id="clamp(x, lo, hi)"),
        pytest.param(lambda x, lo, hi: torch.clamp(x, max=hi), id="clamp(x, max=hi)"),
        pytest.param(lambda x, lo, hi: torch.clamp(x, min=lo), id="clamp(x, min=lo)"),
        pytest.param(lambda x, lo, hi: torch.clamp(x, min=hi), id="clamp(x, min=hi)"),
    ],
)
def test_optional_argument_positions_do_not_collide(mesh, call):
    """Guards the key: None in different optional positions (min vs max) must not share an entry.

    All variants run in one cache, in an order where a collision would reuse the wrong
    entry; each result is compared with stock.
    """
    x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    lo = distribute_tensor(torch.full((8, 8), -0.3), mesh, [Shard(0)])
    hi = distribute_tensor(torch.full((8, 8), 0.3), mesh, [Shard(0)])
    # Warm the cache with every other variant first.
    torch.clamp(x, None, hi)
    torch.clamp(x, lo, None)
    torch.clamp(x, lo, hi)

    ours = call(x, lo, hi)
    assert_same_dtensor(stock(call, x, lo, hi), ours)
    assert torchshard.stats()["native_calls"] >= 3


def test_optional_scalar_positions_do_not_collide(mesh):
    """Guards the key: clamp(x, None, 0.5) vs clamp(x, 0.5, None) (scalar optionals)."""
    x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    ours_max = torch.clamp(x, None, 0.5)
    ours_min = torch.clamp(x, 0.5, None)
    ours_max_again = torch.clamp(x, None, 0.5)
    assert_same_dtensor(stock(lambda: torch.clamp(x, None, 0.5)), ours_max)
    assert_same_dtensor(stock(lambda: torch.clamp(x, 0.5, None)), ours_min)
    assert_same_dtensor(stock(lambda: torch.clamp(x, None, 0.5)), ours_max_again)
    assert not torch.equal(ours_max.full_tensor(), ours_min.full_tensor())


def test_different_placements_are_different_entries(mesh):
    """Guards the key: same op and shapes, Shard(0) vs Shard(1) vs Replicate inputs."""
    base = torch.randn(8, 8)
    results = {}
    for placement in (Shard(0), Shard(1), Replicate()):
        x = distribute_tensor(base, mesh, [placement])
        results[placement] = (x, torch.relu(x))
    assert torchshard.stats()["entries"] == 3
    for placement, (x, ours) in results.items():
        assert_same_dtensor(stock(torch.relu, x), ours)


def test_different_dtypes_are_different_entries(mesh):
    """Guards the key: the same op on float32 and float64 inputs must not share an entry."""
    x32 = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    x64 = distribute_tensor(torch.randn(8, 8, dtype=torch.float64), mesh, [Shard(0)])
    ours32 = x32 + x32
    ours64 = x64 + x64
    assert torchshard.stats()["entries"] == 2
    assert_same_dtensor(stock(lambda: x32 + x32), ours32)
    assert_same_dtensor(stock(lambda: x64 + x64), ours64)


def test_different_shapes_are_different_entries(mesh):
    """Guards the key: uneven vs even shards of different global shapes."""
    x = distribute_tensor(torch.randn(8, 8), mesh, [Shard(0)])
    y = distribute_tensor(torch.randn(10, 8), mesh, [Shard(0)])  # uneven shards
    ours_x = x.sum(dim=1)
    ours_y = y.sum(dim=1)
    assert torchshard.stats()["entries"] == 2
    assert_same_dtensor(stock(lambda: x.sum(dim=1)), ours_x)
    assert_same_dtensor(stock(lambda: y.sum(dim=1)), ours_y)


def test_every_keyword_value_is_keyed(mesh):
    """Guards the key against stock's stale-spec bug: ``dtype=`` is not in sum's
    static_kwargkey, yet it decides the output spec. torchshard keys every keyword
    value, so each call gets the spec of its own result; stock, started clean before
    each call, agrees on every field."""
    x = distribute_tensor(torch.randn(8, 12), mesh, [Shard(0)])
    calls = [
        lambda: x.sum(1, dtype=torch.float64),
        lambda: x.sum(1),
        lambda: x.sum(1, dtype=torch.float32),
        lambda: x.sum(1, dtype=torch.float64),
    ]
    ours = [call() for call in calls]
    stats = torchshard.stats()
    assert stats["entries"] == 3  # dtype=float64, no dtype, dtype=float32
    assert stats["hits"] == 1
    for call, result in zip(calls, ours):
        assert result._spec.tensor_meta.dtype == result._local_tensor.dtype
        torch._C._clear_DTensor_sharding_propagator_cache()
        assert_same_dtensor(stock(call), result)
