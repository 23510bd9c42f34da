"""torchshard's rules get control before torch's built-in C++ DTensor path (docs/design.md)."""

import pytest
import torch
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

import torchshard

pytestmark = pytest.mark.usefixtures("fresh_torchshard")

builtin_cache_stats = torch._C._get_DTensor_sharding_propagator_cache_stats


def test_native_rule_answers_before_builtin_path(mesh_1d):
    x = distribute_tensor(torch.randn(8, 8), mesh_1d, [Shard(0)])
    torch._C._clear_DTensor_sharding_propagator_cache()
    torchshard.reset_stats()
    before = builtin_cache_stats()
    for _ in range(3):
        x + x
    assert builtin_cache_stats() == before, "built-in DTensor path ran although torchshard answered"
    assert torchshard.stats()["native_calls"] == 3


def test_disabled_calls_reach_builtin_path(mesh_1d):
    x = distribute_tensor(torch.randn(8, 8), mesh_1d, [Shard(0)])
    torch._C._clear_DTensor_sharding_propagator_cache()
    with torchshard.disabled():
        hits, misses = builtin_cache_stats()
        for _ in range(3):
            x + x
        assert builtin_cache_stats() == (hits + 2, misses + 1)


def test_not_implemented_falls_through_to_stock(mesh_1d):
    """A rule returning NotImplemented lets stock DTensor run the call unchanged."""
    op = torch.ops.aten.sub.Tensor
    calls = []

    def decline(cls, func, types, args, kwargs):
        calls.append(func)
        return NotImplemented

    x = distribute_tensor(torch.randn(8, 8), mesh_1d, [Shard(0)])
    with torchshard.disabled():
        expected = x - 1.5
        lib = torch.library.Library("aten", "FRAGMENT")
        try:
            torch.library.register_torch_dispatch(op, DTensor, decline, lib=lib)
            result = x - 1.5
        finally:
            lib._destroy()
    assert calls == [op]
    assert result.placements == expected.placements
    assert torch.equal(result._local_tensor, expected._local_tensor)


def test_reregistered_strategy_gets_a_rebuilt_rule(mesh_1d):
    """Re-registering an op's strategy rebuilds its rule (its schema info may have changed)."""
    from torch._library.simple_registry import find_torch_dispatch_rule

    op = torch.ops.aten.mul.Tensor
    propagator = DTensor._op_dispatcher.sharding_propagator
    strategy = propagator.op_strategy_funcs.get(op) or propagator.op_single_dim_strategy_funcs.get(op)
    assert strategy is not None
    old_rule = find_torch_dispatch_rule(op, DTensor)
    assert type(old_rule).__name__ == "NativeRule"
    if op in propagator.op_strategy_funcs:
        propagator.register_op_strategy(op, strategy, propagator.op_to_schema_info.get(op))
    else:
        propagator.register_single_dim_op_strategy(
            op, strategy, propagator.op_to_schema_info_for_single_dim_strategy.get(op)
        )
    new_rule = find_torch_dispatch_rule(op, DTensor)
    assert type(new_rule).__name__ == "NativeRule" and new_rule is not old_rule
    x = distribute_tensor(torch.randn(8, 8), mesh_1d, [Shard(0)])
    with torchshard.disabled():
        expected = x * x
    result = x * x
    assert result.placements == expected.placements
    assert torch.equal(result._local_tensor, expected._local_tensor)
