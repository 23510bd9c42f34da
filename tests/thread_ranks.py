"""Run a function on thread ranks, once on stock DTensor and once with torchshard.

torch's threaded process group (torch.testing._internal.distributed.multi_threaded_pg)
runs the ranks as threads of this process with real collectives between them, as
upstream's ``DTensorOpTestBase`` does, and every rank thread has its own torchshard
cache. ``torchshard.disable()``/``enable()`` switch the whole process, so the run is in
two passes: all ranks on stock, then all ranks with torchshard; the main thread switches
between them while the ranks wait at a barrier.

Shared by test_thread_ranks.py (OpInfo subset) and test_upstream_differences.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.testing._internal.distributed.multi_threaded_pg import (
    ProcessLocalGroup,
    _install_threaded_pg,
    _uninstall_threaded_pg,
)

import torchshard

__all__ = ["RankPasses", "run_stock_then_torchshard"]


@dataclass
class RankPasses:
    """One rank's results of the two passes."""

    stock: Any = None
    torchshard: Any = None
    native_calls: int = 0  # this rank thread's native calls during the torchshard pass
    error: BaseException | None = None


def _native_calls() -> int:
    thread = torchshard.stats()["threads"].get(threading.get_ident())
    return 0 if thread is None else thread["native_calls"]


def _rank(rank: int, world: int, store: dist.Store, body: Callable[[int, DeviceMesh, bool], Any],
          passes: threading.Barrier, result: RankPasses) -> None:
    dist.init_process_group("threaded", rank=rank, world_size=world, store=store)
    try:
        mesh = init_device_mesh("cpu", (world,))
        for stock in (True, False):
            passes.wait()  # the main thread switches torchshard off, then on
            passes.wait()
            before = _native_calls()
            value = body(rank, mesh, stock)
            if stock:
                result.stock = value
            else:
                result.torchshard = value
                result.native_calls = _native_calls() - before
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        result.error = exc
        passes.abort()
        ProcessLocalGroup.exception_handle(exc)  # wakes ranks waiting in a collective
    finally:
        dist.destroy_process_group()


def run_stock_then_torchshard(body: Callable[[int, DeviceMesh, bool], Any], *, world: int,
                              timeout_s: float) -> list[RankPasses]:
    """``body(rank, mesh, stock)`` on ``world`` rank threads (a 1-D CPU mesh of all of
    them), first with torchshard disabled (``stock=True``), then enabled; torchshard is
    enabled again afterwards. Raises AssertionError from the first rank that raised, or
    when a rank thread is still running after ``timeout_s``."""
    results = [RankPasses() for _ in range(world)]
    passes = threading.Barrier(world + 1)
    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    _install_threaded_pg()
    try:
        store = dist.HashStore()
        threads = [threading.Thread(target=_rank, args=(r, world, store, body, passes, results[r]))
                   for r in range(world)]
        for thread in threads:
            thread.start()
        try:
            for switch in (torchshard.disable, torchshard.enable):
                passes.wait(timeout=timeout_s)
                switch()
                passes.wait(timeout=timeout_s)
        except threading.BrokenBarrierError:
            pass  # a rank failed; its error is raised below
        for thread in threads:
            thread.join(timeout_s)
        assert not any(thread.is_alive() for thread in threads), "rank threads still running"
    finally:
        torchshard.enable()
        _uninstall_threaded_pg()
        ProcessLocalGroup.reset()
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
    for rank, result in enumerate(results):
        if result.error is not None:
            raise AssertionError(f"rank {rank} failed") from result.error
    return results
