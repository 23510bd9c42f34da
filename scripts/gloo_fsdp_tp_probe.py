#!/usr/bin/env python3
"""Two measurements of the gloo FSDP2 + TP world-4 job (docs/reliability.md, "The gloo
FSDP2+TP world-4 abort"), each on 4 spawned gloo ranks (a (2, 2) mesh).

``all-reduce``: where the job's all-reduces come from. ``test_workloads._train``
(``fsdp_tp``, the test's 5 steps, then every parameter's ``full_tensor()``) runs once
per optimizer with torchshard enabled; per rank it counts ``_c10d_functional::all_reduce``
calls (torch profiler: ``dispatcher``) and calls of
``torch.distributed._functional_collectives.all_reduce`` (``python``; stock's
redistribution and the TP/FSDP hooks go through it). torchshard's native Partial ->
Replicate all-reduce (``csrc/python/hit/all_reduce.cpp``) calls the op from C++
without that function, so ``dispatcher - python`` counts native all-reduces. A control
(three ``lerp_`` calls of a Replicate DTensor with a ``Partial`` one, 1-D mesh of 4, as
in ``test_native_all_reduce_gloo.py``) must report 3 native.

``threads``: the threads of each rank after the test's own worker
(``test_workloads._gloo_worker``, fsdp_tp / foreach, 2 steps) has returned, i.e. after
its ``destroy_process_group()``, and again in an ``atexit`` handler: Python threads
(name, daemon) and OS threads (``/proc/self/task/*/comm``).

    python3 scripts/gloo_fsdp_tp_probe.py all-reduce
    python3 scripts/gloo_fsdp_tp_probe.py threads
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)  # spawned ranks inherit sys.path

WORLD = 4


def _all_reduce_worker(rank: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate
    from torch.profiler import ProfilerActivity, profile

    import test_workloads as tw
    import torchshard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    python_calls = 0
    original = funcol.all_reduce

    def counting(*args, **kwargs):
        nonlocal python_calls
        python_calls += 1
        return original(*args, **kwargs)

    def counted(run) -> dict[str, int]:
        nonlocal python_calls
        python_calls = 0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        dispatcher = sum(e.name == "_c10d_functional::all_reduce" for e in prof.events())
        return {"dispatcher": dispatcher, "python": python_calls,
                "native": dispatcher - python_calls}

    def control() -> None:
        mesh = init_device_mesh("cpu", (WORLD,))
        for _ in range(3):
            x = DTensor.from_local(torch.ones(4), mesh, [Replicate()])
            x.lerp_(DTensor.from_local(torch.ones(4), mesh, [Partial()]), 0.5)

    funcol.all_reduce = counting
    try:
        assert torchshard.is_enabled()
        workloads = tw._import_workloads()
        result = {"native_all_reduce_enabled": torchshard._C.native_all_reduce_enabled()}
        for optimizer in tw.GLOO_OPTIMIZERS:
            result[optimizer] = counted(lambda: tw._train(workloads, "fsdp_tp", optimizer))
        result["control_lerp_partial"] = counted(control)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _threads() -> dict[str, Any]:
    import threading

    names = []
    for task in sorted(os.listdir("/proc/self/task")):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return {"python": [(t.name, t.daemon) for t in threading.enumerate()],
            "os": dict(collections.Counter(names))}


def _threads_worker(rank: int, init_file: str, out_dir: str) -> None:
    import atexit

    import test_workloads as tw

    tw.GLOO_STEPS = 2
    info: dict[str, Any] = {}

    def at_exit() -> None:
        info["at_exit"] = _threads()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(info))

    atexit.register(at_exit)
    case_dir = Path(out_dir, f"case{rank}")
    case_dir.mkdir()
    tw._gloo_worker(rank, WORLD, init_file, [("fsdp_tp", "foreach")], str(case_dir))
    info["after_worker"] = _threads()


def main() -> int:
    from gloo_ranks import run_ranks

    kinds = {"all-reduce": _all_reduce_worker, "threads": _threads_worker}
    if len(sys.argv) != 2 or sys.argv[1] not in kinds:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        run_ranks(kinds[sys.argv[1]], (os.path.join(tmp, "rendezvous"), tmp), WORLD, 240)
        for rank in range(WORLD):
            print(f"rank {rank}: {Path(tmp, f'rank{rank}.json').read_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
