"""Run a worker function on N spawned gloo ranks and turn a rank failure into a test failure.

Shared by the multi-process tests (``test_parity_values.py``, ``test_workloads.py``,
``test_opinfo_gloo.py``).
Ranks rendezvous through a file (no ports); each gets ``OMP_NUM_THREADS=1`` (several
ranks share a small machine) and an environment without ``TORCHSHARD_DISABLE``.
In the worker, ``gloo_group`` holds the rank's default process group for a block.

After its worker returns, a rank waits ``settle_s`` (0.2 s) with the GIL released before
its interpreter finalizes. gloo's worker threads drop their last references to finished
collectives' tensors a little after the waits have returned, and a drop that releases a
tensor's Python object needs the GIL: one that comes after finalization has begun
aborts the process, with stock DTensor as with torchshard (upstream's race;
docs/reliability.md, "The gloo abort: cause and fix"). These tests check values, so
their ranks let those threads finish; the loops in ``scripts/`` that measure the race
pass ``settle_s=0``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["gloo_group", "run_ranks", "run_ranks_with_rendezvous"]

SETTLE_S = 0.2


def _worker_with_return_marker(rank: int, worker: Callable[..., None], marker_dir: str,
                               settle_s: float, args: tuple[Any, ...]) -> None:
    """Runs ``worker(rank, *args)`` and leaves a file saying it returned, so a rank that
    dies afterwards (in process exit) is told apart from one that died inside it; then
    sleeps ``settle_s`` (see the module's docstring)."""
    worker(rank, *args)
    with open(os.path.join(marker_dir, f"rank{rank}.returned"), "w"):
        pass
    time.sleep(settle_s)


def _where_it_died(marker_dir: str, rank: int) -> str:
    if os.path.exists(os.path.join(marker_dir, f"rank{rank}.returned")):
        return "after its worker returned (in process exit)"
    return "inside its worker"


def run_ranks(worker: Callable[..., None], args: tuple[Any, ...], world: int, timeout_s: float,
              settle_s: float = SETTLE_S) -> None:
    """``worker(rank, *args)`` on ``world`` spawned processes; raises AssertionError with
    the first failing rank's traceback, or when the ranks run past ``timeout_s``. A rank
    killed by a signal is reported with where it died: inside the worker or after it
    returned. Each rank sleeps ``settle_s`` between its worker's return and its exit."""
    env_before = {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "TORCHSHARD_DISABLE")}
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop("TORCHSHARD_DISABLE", None)
    marker_dir = tempfile.mkdtemp(prefix="gloo_ranks.")
    try:
        ctx = mp.start_processes(_worker_with_return_marker, args=(worker, marker_dir, settle_s, args),
                                 nprocs=world, join=False, start_method="spawn")
        try:
            deadline = time.monotonic() + timeout_s
            while not ctx.join(timeout=2):
                if time.monotonic() > deadline:
                    for proc in ctx.processes:
                        proc.kill()
                    raise AssertionError(f"gloo ranks still running after {timeout_s} s")
        except mp.ProcessRaisedException as exc:
            # exc carries the child's formatted traceback in its message.
            raise AssertionError(f"rank {exc.error_index} failed:\n{exc}") from None
        except mp.ProcessExitedException as exc:
            raise AssertionError(f"rank {exc.error_index} exited with code {exc.exit_code} "
                                 f"{_where_it_died(marker_dir, exc.error_index)}") from None
    finally:
        shutil.rmtree(marker_dir, ignore_errors=True)
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_ranks_with_rendezvous(worker: Callable[..., None], world: int, timeout_s: float) -> None:
    """``worker(rank, init_method, tests_dir)`` on ``world`` spawned processes: a
    ``file://`` rendezvous in a fresh temporary directory, and this tests directory
    (for the worker's imports)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        init_method = "file://" + os.path.join(tmp, "rendezvous")
        run_ranks(worker, (init_method, tests_dir), world, timeout_s)


@contextlib.contextmanager
def gloo_group(init_method: str, rank: int, world: int, timeout_s: float) -> Iterator[None]:
    """In a worker: this rank's default gloo process group for the block, destroyed after
    it (also when the block raises)."""
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()
