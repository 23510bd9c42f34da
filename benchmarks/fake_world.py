"""The single-process world every suite runs in: the ``fake`` process group."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore

import torchshard


@contextlib.contextmanager
def fake_world(world_size: int) -> Iterator[None]:
    """A fake process group of `world_size` ranks (this process is rank 0).

    Collectives are no-ops and local compute is real, so timings are DTensor's
    CPU cost. One intra-op thread: dispatch cost, not kernel parallelism.
    """
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    elif dist.get_world_size() != world_size:
        raise RuntimeError(f"a process group of world size {dist.get_world_size()} is already running")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            dist.destroy_process_group()


def machine_description() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchshard": str(Path(torchshard.__file__).parent),  # which build was measured
        "torch_threads": 1,
        "platform": platform.platform(),
    }
