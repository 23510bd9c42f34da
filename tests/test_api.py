"""torchshard's public Python API: enable/disable, disabled(), enabled_ops(), stats,
cache capacity, and following ops registered after import."""

from __future__ import annotations

import threading

import pytest
import torch
from torch._library.simple_registry import find_torch_dispatch_rule
from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

import torchshard
from dtensor_compare import assert_same_dtensor
from dtensor_cases import seeded_dtensor

aten = torch.ops.aten


@pytest.fixture(autouse=True)
def _restore_torchshard():
    """Each test starts enabled with default-ish state and must not leak changes."""
    capacity = torchshard.cache_capacity()
    if not torchshard.is_enabled():
        torchshard.enable()
    torchshard.clear_cache()
    torchshard.reset_stats()
    yield
    leaked_disabled = not torchshard.is_enabled()
    leaked_capacity = torchshard.cache_capacity() != capacity
    torchshard.enable()
    torchshard.set_cache_capacity(capacity)
    assert not leaked_disabled, "test left torchshard disabled"
    assert not leaked_capacity, "test left the cache capacity changed"


def rule_for(op):
    return find_torch_dispatch_rule(op, DTensor)


# --- public names ----------------------------------------------------------------------


def test_public_names_are_exported():
    """Guards the API surface: __all__ names each public entry point once, every one of
    them exists, and the explain() API (explain, ExplainReport, OpReport) is part of it."""
    exported = torchshard.__all__
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(torchshard, name), name
    for name in ("explain", "ExplainReport", "OpReport"):
        assert name in exported, name
    assert callable(torchshard.explain)
    assert isinstance(torchshard.ExplainReport, type)
    assert isinstance(torchshard.OpReport, type)


# --- enable / disable / disabled() -------------------------------------------------


def test_enabled_after_import():
    """Guards the import default (TORCHSHARD_DISABLE unset): enabled, with rules."""
    assert torchshard.is_enabled() is True
    assert rule_for(aten.add.Tensor) is not None


def test_enable_and_disable_are_idempotent():
    """Guards idempotence: repeated enable()/disable() keep a consistent state."""
    ops_before = torchshard.enabled_ops()
    torchshard.enable()
    torchshard.enable()
    assert torchshard.is_enabled()
    assert torchshard.enabled_ops() == ops_before
    torchshard.disable()
    torchshard.disable()
    assert torchshard.is_enabled() is False
    assert torchshard.enabled_ops() == frozenset()
    torchshard.enable()
    assert torchshard.is_enabled()
    assert torchshard.enabled_ops() == ops_before


def test_disabled_context_nesting_restores_each_level():
    """Guards disabled(): nested blocks are stock inside and restore the outer state."""
    assert torchshard.is_enabled()
    with torchshard.disabled():
        assert not torchshard.is_enabled()
        assert rule_for(aten.add.Tensor) is None
        with torchshard.disabled():
            assert not torchshard.is_enabled()
        assert not torchshard.is_enabled(), "inner block re-enabled inside the outer one"
    assert torchshard.is_enabled()
    assert rule_for(aten.add.Tensor) is not None


def test_disabled_context_when_already_disabled_stays_disabled():
    """Guards disabled() restoring the *previous* state, which may be disabled."""
    torchshard.disable()
    with torchshard.disabled():
        assert not torchshard.is_enabled()
    assert not torchshard.is_enabled()
    torchshard.enable()


def test_enable_inside_disabled_block_is_kept_consistent():
    """Guards disabled() when the block itself calls enable(): afterwards enabled."""
    with torchshard.disabled():
        torchshard.enable()
        assert torchshard.is_enabled()
    assert torchshard.is_enabled()
    assert rule_for(aten.add.Tensor) is not None


def test_disabled_restores_state_when_block_raises():
    """Guards disabled()'s finally: an exception inside still re-enables."""

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with torchshard.disabled():
            assert not torchshard.is_enabled()
            raise Boom
    assert torchshard.is_enabled()
    assert rule_for(aten.add.Tensor) is not None


def test_disable_removes_rules_and_results_still_equal(mesh):
    """Guards disable(): no torchshard rule remains for add.Tensor; results unchanged,
    and no native calls are counted while disabled."""
    a = seeded_dtensor(mesh)
    b = seeded_dtensor(mesh, seed=1)
    ours = a + b
    ours = a + b
    assert torchshard.stats()["native_calls"] == 2
    torchshard.disable()
    assert rule_for(aten.add.Tensor) is None
    assert rule_for(aten.mm.default) is None
    torchshard.reset_stats()
    stock = a + b
    assert torchshard.stats()["native_calls"] == 0
    assert_same_dtensor(stock, ours)
    torchshard.enable()
    assert rule_for(aten.add.Tensor) is not None
    assert_same_dtensor(stock, a + b)


def _disable_then_enable() -> None:
    torchshard.disable()
    assert torchshard.stats()["entries"] == 0
    torchshard.enable()


@pytest.mark.parametrize(
    "drop_entries",
    [torchshard.clear_cache, _disable_then_enable],
    ids=["clear_cache", "disable_enable"],
)
def test_dropped_entries_miss_once_then_serve_natively(mesh, drop_entries):
    """Guards clear_cache() and disable() dropping every entry: the next call misses,
    the one after hits, and both are served natively."""
    a = seeded_dtensor(mesh)
    a + a
    assert torchshard.stats()["entries"] == 1
    drop_entries()
    assert torchshard.stats()["entries"] == 0
    torchshard.reset_stats()
    a + a
    a + a
    stats = torchshard.stats()
    assert (stats["misses"], stats["hits"], stats["native_calls"]) == (1, 1, 2)


def test_enabled_ops_contents():
    """Guards enabled_ops(): a frozenset of OpOverloads including add and mm, each of
    which has a DTensor rule registered."""
    ops = torchshard.enabled_ops()
    assert isinstance(ops, frozenset)
    assert aten.add.Tensor in ops
    assert aten.mm.default in ops
    assert all(isinstance(op, torch._ops.OpOverload) for op in ops)
    assert len(ops) > 500
    for op in (aten.add.Tensor, aten.mm.default, aten.sum.dim_IntList):
        assert type(rule_for(op)).__name__ == "NativeRule"
    # Mutating the returned set is impossible, and the set is a snapshot.
    with pytest.raises(AttributeError):
        ops.add(aten.renorm.default)  # type: ignore[attr-defined]


def test_enable_does_not_override_foreign_rule():
    """Guards _install(): an existing (op, DTensor) rule owned by someone else is kept."""
    op = aten.renorm.default
    assert op not in torchshard.enabled_ops()
    lib = torch.library.Library("aten", "FRAGMENT")
    try:

        def foreign(cls, func, types, args, kwargs):
            return NotImplemented

        torch.library.register_torch_dispatch(op, DTensor, foreign, lib=lib)
        torchshard.disable()
        torchshard.enable()
        assert rule_for(op) is foreign
        assert op not in torchshard.enabled_ops()
    finally:
        lib._destroy()
    assert rule_for(op) is None


# --- cache capacity -------------------------------------------------------------------


def test_default_capacity():
    """Guards the documented default capacity (env var unset)."""
    assert torchshard.cache_capacity() == 16384
    assert torchshard.stats()["capacity"] == 16384


def test_set_cache_capacity_rejects_negative():
    """Guards set_cache_capacity(): negative values raise ValueError, nothing changes."""
    before = torchshard.cache_capacity()
    with pytest.raises(ValueError):
        torchshard.set_cache_capacity(-1)
    assert torchshard.cache_capacity() == before


def test_capacity_zero_declines_with_cache_disabled(mesh):
    """Guards capacity 0: every call declines as "cache_disabled", nothing is cached,
    results equal stock's."""
    a = seeded_dtensor(mesh)
    w = seeded_dtensor(mesh, shape=(8, 4), placements=(Replicate(),), seed=2)
    with torchshard.disabled():
        expected = [a + a, torch.mm(a, w), a.sum(dim=0)]
    capacity = torchshard.cache_capacity()
    torchshard.set_cache_capacity(0)
    try:
        assert torchshard.cache_capacity() == 0
        torchshard.reset_stats()
        ours = [a + a, torch.mm(a, w), a.sum(dim=0)]
        stats = torchshard.stats()
    finally:
        torchshard.set_cache_capacity(capacity)
    assert stats["capacity"] == 0
    assert stats["native_calls"] == 0
    assert stats["entries"] == 0
    assert stats["hits"] == 0 and stats["misses"] == 0
    assert stats["declines"].get("cache_disabled", 0) >= 3
    assert stats["declined"] == sum(stats["declines"].values())
    for e, o in zip(expected, ours):
        assert_same_dtensor(e, o)


def test_capacity_bound_flushes_when_full(mesh):
    """Guards the per-thread bound: capacity 3 with 5 distinct calls keeps entries <= 3
    and counts evictions (flush when full); results equal stock's."""
    xs = [seeded_dtensor(mesh, shape=(4 + n, 8), seed=n) for n in range(5)]
    with torchshard.disabled():
        expected = [x.sum(dim=1) for x in xs]
    capacity = torchshard.cache_capacity()
    torchshard.set_cache_capacity(3)
    try:
        torchshard.clear_cache()
        torchshard.reset_stats()
        max_entries = 0
        ours = []
        for x in xs:
            ours.append(x.sum(dim=1))
            max_entries = max(max_entries, torchshard.stats()["entries"])
        stats = torchshard.stats()
    finally:
        torchshard.set_cache_capacity(capacity)
    mine = stats["threads"][threading.get_ident()]
    assert stats["capacity"] == 3
    assert max_entries <= 3
    assert mine["entries"] <= 3
    assert stats["evictions"] > 0
    assert stats["misses"] == 5
    assert stats["native_calls"] == 5
    for e, o in zip(expected, ours):
        assert_same_dtensor(e, o)


def test_shrinking_capacity_bounds_existing_cache(mesh):
    """Guards set_cache_capacity() on a warm cache: after shrinking, the cache never
    holds more than the new bound once it is used again."""
    xs = [seeded_dtensor(mesh, shape=(4 + n, 8), seed=n) for n in range(6)]
    for x in xs:
        x.sum(dim=1)
    assert torchshard.stats()["entries"] == 6
    capacity = torchshard.cache_capacity()
    torchshard.set_cache_capacity(2)
    try:
        for x in xs:
            x.sum(dim=0)
        entries = torchshard.stats()["entries"]
    finally:
        torchshard.set_cache_capacity(capacity)
    assert entries <= 2


# --- stats ---------------------------------------------------------------------------


def test_stats_keys_and_types(mesh):
    """Guards the documented stats() shape."""
    a = seeded_dtensor(mesh)
    a + a
    stats = torchshard.stats()
    for key in ("calls", "hits", "misses", "native_calls", "declined", "evictions", "entries",
                "capacity"):
        assert isinstance(stats[key], int), key
    assert isinstance(stats["declines"], dict)
    assert isinstance(stats["threads"], dict)
    mine = stats["threads"][threading.get_ident()]
    for key in ("calls", "hits", "misses", "native_calls", "declined", "declines", "evictions",
                "entries"):
        assert key in mine, key


def test_reset_stats_zeroes_counters_but_keeps_entries(mesh):
    """Guards reset_stats(): counters go to zero, cached entries stay (next call hits)."""
    a = seeded_dtensor(mesh)
    with torchshard.disabled():
        expected = a + a
    a + a
    a + a
    plain = torch.randn(8, 8)
    with pytest.raises(RuntimeError):
        a + plain  # a decline, so "declines" is non-empty
    before = torchshard.stats()
    assert before["hits"] > 0 and before["declined"] > 0
    torchshard.reset_stats()
    stats = torchshard.stats()
    assert stats["hits"] == 0
    assert stats["misses"] == 0
    assert stats["native_calls"] == 0
    assert stats["declined"] == 0
    assert stats["evictions"] == 0
    assert sum(stats["declines"].values()) == 0
    assert stats["entries"] == before["entries"] > 0
    ours = a + a
    stats = torchshard.stats()
    assert stats["hits"] == 1 and stats["misses"] == 0
    assert_same_dtensor(expected, ours)


def test_decline_reason_names_are_unique_strings():
    """Guards decline_reason_names(): the documented names, each once."""
    names = torchshard._C.decline_reason_names()
    assert len(names) == len(set(names))
    assert "cache_disabled" in names
    assert all(isinstance(name, str) and name for name in names)


# --- ops registered after import -------------------------------------------------------


def _unregister_strategy(op) -> None:
    """Undo a test's register_op_strategy(op), and re-enable so its rule goes too."""
    propagator = DTensor._op_dispatcher.sharding_propagator
    propagator.op_strategy_funcs.pop(op, None)
    propagator.op_to_schema_info.pop(op, None)
    propagator.propagate_op_sharding.cache_clear()
    torchshard.disable()
    torchshard.enable()


def test_op_registered_later_gets_a_rule(mesh):
    """Guards following registrations: an op that gets a DTensor strategy after import
    (via torch's own register_op_strategy helper) gets a torchshard rule, and its
    results match stock's. The registration is removed again afterwards."""
    from torch.distributed.tensor._ops.utils import register_op_strategy, replicate_op_strategy

    propagator = DTensor._op_dispatcher.sharding_propagator
    op = aten.count_nonzero.dim_IntList
    assert op not in propagator.op_strategy_funcs
    assert op not in propagator.op_single_dim_strategy_funcs
    assert op not in propagator.op_to_rules
    assert op not in torchshard.enabled_ops()
    assert rule_for(op) is None

    x = distribute_tensor((torch.randn(8, 8) > 0).float(), mesh, [Replicate()])
    try:
        register_op_strategy(op)(replicate_op_strategy)
        assert op in torchshard.enabled_ops()
        assert type(rule_for(op)).__name__ == "NativeRule"
        with torchshard.disabled():
            expected = torch.count_nonzero(x, dim=[0])
        torchshard.reset_stats()
        ours = torch.count_nonzero(x, dim=[0])
        ours_again = torch.count_nonzero(x, dim=[0])
        stats = torchshard.stats()
        assert stats["native_calls"] == 2, stats
        assert_same_dtensor(expected, ours)
        assert_same_dtensor(expected, ours_again)

        # The rule also survives disable()/enable() while the strategy exists.
        torchshard.disable()
        torchshard.enable()
        assert op in torchshard.enabled_ops()
    finally:
        _unregister_strategy(op)
    assert op not in torchshard.enabled_ops()
    assert rule_for(op) is None


def test_op_registered_while_disabled_gets_rule_on_enable(mesh):
    """Guards registration while disabled: no rule is installed then, and enable()
    picks the op up."""
    from torch.distributed.tensor._ops.utils import register_op_strategy, replicate_op_strategy

    propagator = DTensor._op_dispatcher.sharding_propagator
    op = aten.count_nonzero.dim_IntList
    assert op not in propagator.op_strategy_funcs
    try:
        torchshard.disable()
        register_op_strategy(op)(replicate_op_strategy)
        assert rule_for(op) is None
        assert op not in torchshard.enabled_ops()
        torchshard.enable()
        assert op in torchshard.enabled_ops()
        assert rule_for(op) is not None
    finally:
        _unregister_strategy(op)
    assert op not in torchshard.enabled_ops()
