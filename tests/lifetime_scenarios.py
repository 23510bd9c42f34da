"""Scenario scripts shared by the lifetime tests (test_lifetime.py) and the loops in
scripts/ that repeat them many times (scripts/finalization_loop.py): one copy of each,
so a loop counts exactly what the test checks.
"""

from __future__ import annotations

import textwrap

# What every scenario starts with: a fake process group of world 4, a 1-D mesh, and
# ``same``, the field-by-field comparison of a stock result with torchshard's.
PRELUDE = textwrap.dedent(
    """
    import sys, threading, time
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    import torchshard
    mesh = init_device_mesh("cpu", (4,))

    def same(stock, ours):
        assert type(ours) is DTensor, type(ours)
        assert ours.placements == stock.placements, (ours.placements, stock.placements)
        assert ours.shape == stock.shape and ours.stride() == stock.stride()
        assert ours.dtype == stock.dtype
        assert torch.equal(ours.to_local(), stock.to_local())
    """
)


# Daemon threads still dispatching DTensor ops when the interpreter finalizes: 4 threads,
# each past its first call, loop relu(x + x).sum(1) on a Shard(0) DTensor while the main
# thread returns (issue 13 item 2; docs/reliability.md).
DAEMON_THREADS_AT_FINALIZATION = textwrap.dedent(
    """
    x = distribute_tensor(torch.randn(64, 64), mesh, [Shard(0)])
    go = threading.Barrier(5, timeout=60)
    def work():
        torch.relu(x + x).sum(dim=1)
        go.wait()
        while True:
            torch.relu(x + x).sum(dim=1)
    for _ in range(4):
        threading.Thread(target=work, daemon=True).start()
    go.wait()
    time.sleep(0.2)
    print("enabled", torchshard.is_enabled(), flush=True)
    """
)
