"""The native Partial -> Replicate all-reduce with real values (gloo, 2 ranks).

On the fake process group an all_reduce moves no data, so only real ranks show that
the native call reduces over the same group, with the same op, as stock's
redistribute_local_tensor: each rank runs the calls with torchshard disabled and
enabled (a miss, then hits) and requires bit-identical local results.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
from gloo_ranks import run_ranks

pytestmark = pytest.mark.multiprocess

WORLD = 2
CALLS = 3  # the first misses (stock runs it); the rest are native hits


def _calls(rank: int, mesh) -> list[torch.Tensor]:
    from torch.distributed.tensor import DTensor, Partial, Replicate

    results = []
    for call in range(CALLS):
        gen = torch.Generator().manual_seed(call)
        end = DTensor.from_local(torch.randn(4, 6, generator=gen), mesh, [Replicate()], run_check=False)
        partial = DTensor.from_local(torch.randn(4, 6, generator=gen) * (rank + 1), mesh, [Partial()],
                                     run_check=False)
        ends = [DTensor.from_local(torch.randn(5, generator=gen), mesh, [Replicate()], run_check=False)
                for _ in range(2)]
        grads = [DTensor.from_local(torch.randn(5, generator=gen) * (rank + 2), mesh, [Partial()],
                                    run_check=False) for _ in range(2)]
        end.lerp_(partial, 0.3)
        torch._foreach_add_(ends, grads, alpha=0.5)
        results += [end.to_local().clone()] + [e.to_local().clone() for e in ends]
    return results


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        import torchshard
        from torch.distributed.tensor import init_device_mesh

        mesh = init_device_mesh("cpu", (WORLD,))
        with torchshard.disabled():
            stock = _calls(rank, mesh)
        torchshard.reset_stats()
        ours = _calls(rank, mesh)
        stats = torchshard.stats()
        assert stats["hits"] > 0 and stats["declined"] == 0, stats
        for index, (s, o) in enumerate(zip(stock, ours)):
            assert torch.equal(s, o) and s.stride() == o.stride(), (rank, index, s, o)
    finally:
        dist.destroy_process_group()


def test_partial_to_replicate_matches_stock_on_gloo() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_ranks(_worker, (os.path.join(tmp, "rendezvous"),), WORLD, timeout_s=120)
