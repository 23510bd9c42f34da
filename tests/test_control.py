"""torchshard's rules get control before torch's built-in C++ DTensor path (docs/design.md)."""

import torch
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

import torchshard

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
