#!/usr/bin/env python3
"""Count rank aborts when a process exits right after DTensor redistributions on gloo.

The reproducer of the gloo abort (docs/reliability.md, "The gloo abort: cause and
fix"). Each attempt spawns 2 gloo ranks; each rank makes 4 ``lerp_`` calls of a
Replicate DTensor with a Partial one (a Partial -> Replicate all-reduce each, the
first a miss and the rest hits where torchshard serves them) and returns at once, so
interpreter finalization follows the last collective by a few milliseconds. A rank
that dies by a signal is a failure. Modes, interleaved round-robin so each sees the
same load:

* ``torchshard``    torchshard imported (the native all-reduce on hits);
* ``no-native-ar``  the same with ``TORCHSHARD_NATIVE_ALL_REDUCE=0`` (hits run stock's
                    ``redistribute_local_tensor`` from C++);
* ``stock``         ranks that never import torchshard.

Ranks inherit an unlimited core size; with ``/proc/sys/kernel/core_pattern`` set to
``core`` a failed attempt leaves its core in ``--out/<attempt>/``, and the script
writes ``gdb -batch -ex "thread apply all bt"`` of it next to it.

    python3 scripts/exit_after_collective_loop.py --runs 100 --busy 1 [--minutes 60]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The core-dump helpers of the world-4 loop beside this file.
from gloo_abort_loop import _backtrace, _unlimited_core

MODES = ("torchshard", "no-native-ar", "stock")
CALLS = 4


def _rank(rank: int, init_file: str, mode: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    if mode != "stock":
        import torchshard  # noqa: F401 -- serves the calls below
    from torch.distributed.tensor import DTensor, Partial, Replicate, init_device_mesh

    mesh = init_device_mesh("cpu", (2,))
    for _ in range(CALLS):
        end = DTensor.from_local(torch.randn(4, 6), mesh, [Replicate()], run_check=False)
        partial = DTensor.from_local(torch.randn(4, 6), mesh, [Partial()], run_check=False)
        end.lerp_(partial, 0.3)
    if mode != "stock":
        assert torchshard.stats()["hits"] == CALLS - 1, torchshard.stats()
    # Return at once: process exit follows the last collective.


def attempt(mode: str, directory: Path) -> list[int | None]:
    """Exit codes of the 2 ranks (None: still running after 120 s, then killed)."""
    import torch.multiprocessing as mp

    env_before = dict(os.environ)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop("TORCHSHARD_DISABLE", None)
    if mode == "no-native-ar":
        os.environ["TORCHSHARD_NATIVE_ALL_REDUCE"] = "0"
    cwd = os.getcwd()
    os.chdir(directory)  # the ranks' cores land here
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = mp.start_processes(_rank, args=(os.path.join(tmp, "rendezvous"), mode), nprocs=2,
                                     join=False, start_method="spawn")
            codes: list[int | None] = []
            for process in ctx.processes:
                process.join(120)
                if process.exitcode is None:
                    process.kill()
                codes.append(process.exitcode)
            return codes
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env_before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="attempts per mode")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--busy", type=int, default=0, help="background busy loops")
    parser.add_argument("--minutes", type=float, help="start no round after this many minutes")
    parser.add_argument("--out", default="/tmp/exit_after_collective", help="failed attempts' files")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        parser.error(f"modes are {', '.join(MODES)}")
    _unlimited_core()  # the ranks inherit it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    failures: dict[str, int] = collections.Counter()
    runs: dict[str, int] = collections.Counter()
    started = time.monotonic()
    try:
        for index in range(args.runs):
            if args.minutes is not None and time.monotonic() - started > args.minutes * 60:
                break
            for mode in modes:
                directory = out / f"{index:04d}-{mode}"
                directory.mkdir(exist_ok=True)
                codes = attempt(mode, directory)
                runs[mode] += 1
                cores = sorted(glob.glob(str(directory / "core*")))
                for core in cores:
                    _backtrace(core, core + ".bt.txt")
                if any(code != 0 for code in codes):
                    failures[mode] += 1
                    print(f"#{index} {mode}: rank exit codes {codes}, cores {len(cores)} in {directory}",
                          flush=True)
                elif not cores:
                    shutil.rmtree(directory)
    finally:
        for process in busy:
            process.kill()
    print(f"{time.monotonic() - started:.0f} s; busy loops {args.busy}")
    for mode in modes:
        print(f"{mode:<14}{failures[mode]:>4} failures in {runs[mode]} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
