#!/usr/bin/env python3
"""Loop the gloo FSDP2 + TP world-4 training job under CPU load, to catch a rare abort.

The job is the one of ``tests/test_workloads.py::test_loss_curve_bit_identical_gloo_fsdp_tp_world4``:
4 spawned gloo ranks (``tests/gloo_ranks.py::run_ranks``), ``benchmarks/workloads.py``'s
``fsdp_tp`` on a (2, 2) mesh, AdamW training steps. Each attempt is a fresh interpreter
(this script with ``--attempt``) that spawns the 4 ranks; the attempts alternate the
optimizer (foreach, fused) and interleave the modes round-robin, so every mode sees
the same load:

* ``torchshard``    the test's own worker (``test_workloads._gloo_worker``): stock then
                    torchshard training in each rank, results checked as the test does
                    (``_assert_bit_identical``).
* ``no-native-ar``  the same, with ``TORCHSHARD_NATIVE_ALL_REDUCE=0`` (Partial -> Replicate
                    through stock's redistribution instead of torchshard's native
                    all-reduce).
* ``stock``         ranks that never import torchshard (``run_ranks`` drops
                    ``TORCHSHARD_DISABLE`` from the ranks' environment, so the switch
                    cannot be used): the same two trainings, both stock DTensor,
                    checked for bitwise equal losses and parameters.

Load: ``--busy`` background ``while True: pass`` interpreters, started here and killed at
the end; ``--jobs`` attempts at a time (at most 2). Run the whole thing under ``nice``
so other work on the machine keeps priority (the busy loops inherit the niceness).

Every rank runs with ``PYTHONFAULTHANDLER=1`` (Python stacks on SIGABRT/SIGSEGV) and
``RLIMIT_CORE`` unlimited in the attempt's own directory (the cwd: check
``/proc/sys/kernel/core_pattern`` is ``core``). A failed attempt keeps its directory
(stdout, stderr, result.json, core files, and ``gdb -batch -ex 'thread apply all bt'``
of each core in ``<core>.bt.txt``); a passing one is deleted. Each attempt is one line
of ``<out>/attempts.jsonl``; ``<out>/summary.json`` and the printed table count them.

    nice -n 10 python3 scripts/gloo_abort_loop.py --runs 200 --jobs 2 --busy 2
    python3 scripts/gloo_abort_loop.py --summarize --out /tmp/gloo_loop
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import glob
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "tests"
BENCHMARKS_DIR = ROOT / "benchmarks"
WORKLOAD = "fsdp_tp"
WORLD = 4
OPTIMIZERS = ("foreach", "fused")  # test_workloads.GLOO_OPTIMIZERS
MODES = {
    "torchshard": {},
    "no-native-ar": {"TORCHSHARD_NATIVE_ALL_REDUCE": "0"},
    "stock": {},
}
ALARMS = ("terminate called", "Fatal Python error", "Segmentation fault", "Aborted",
          "AddressSanitizer", "core dumped")


# --------------------------------------------------------------------------------------
# One attempt (a fresh interpreter): spawn the 4 ranks, check their results.
# --------------------------------------------------------------------------------------


def _import_test_module(steps: int) -> Any:
    for path in (str(ROOT), str(TESTS_DIR), str(BENCHMARKS_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)  # spawned ranks inherit sys.path
    import test_workloads

    test_workloads.GLOO_STEPS = steps  # read by _train and _assert_bit_identical
    return test_workloads


def _stock_worker(rank: int, world: int, init_file: str, optimizer: str, out_dir: str,
                  steps: int) -> None:
    """``test_workloads._gloo_worker`` without torchshard: two stock trainings."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    tw = _import_test_module(steps)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        workloads = tw._import_workloads()
        first_losses, first_params = tw._train(workloads, WORKLOAD, optimizer)
        second_losses, second_params = tw._train(workloads, WORKLOAD, optimizer)
        result = {
            "losses": [float(x).hex() for x in first_losses],
            "losses_equal": [float(x).hex() for x in second_losses]
            == [float(x).hex() for x in first_losses],
            "params": len(first_params),
            "param_mismatches": [
                n for (n, a), (_, b) in zip(first_params, second_params)
                if not torch.equal(tw._bits(a), tw._bits(b))
            ],
            "torchshard_imported": "torchshard" in sys.modules,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _torchshard_worker(rank: int, world: int, init_file: str, optimizer: str, out_dir: str,
                       steps: int) -> None:
    tw = _import_test_module(steps)
    tw._gloo_worker(rank, world, init_file, [(WORKLOAD, optimizer)], out_dir)
    import torchshard  # imported by the worker; record the switch the mode sets

    Path(out_dir, f"rank{rank}.switch").write_text(str(torchshard._C.native_all_reduce_enabled()))


def _check_stock(per_rank: list[dict[str, Any]], steps: int) -> None:
    for rank, r in enumerate(per_rank):
        assert not r["torchshard_imported"], f"rank {rank} imported torchshard"
        assert len(r["losses"]) == steps and len(set(r["losses"])) > 1, (rank, r["losses"])
        assert r["losses_equal"] and not r["param_mismatches"] and r["params"] > 0, (rank, r)
    assert len({tuple(r["losses"]) for r in per_rank}) > 1, "every rank saw the same data"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _classify(message: str) -> tuple[str, str]:
    """run_ranks' AssertionError -> (outcome, detail)."""
    m = re.search(r"rank (\d+) exited with code (-?\d+)", message)
    if m:
        rank, code = int(m.group(1)), int(m.group(2))
        if code < 0:
            return f"rank_signal_{_signal_name(-code)}", f"rank {rank}"
        return f"rank_exit_{code}", f"rank {rank}"
    if "still running after" in message:
        return "rank_timeout", message.splitlines()[0]
    m = re.search(r"rank (\d+) failed", message)
    if m:
        return "rank_exception", message.strip().splitlines()[-1][:300]
    return "run_ranks_error", message[:300]


def attempt_main(mode: str, optimizer: str, steps: int) -> int:
    """Runs in the attempt's directory; writes result.json there."""
    tw = _import_test_module(steps)
    from gloo_ranks import run_ranks

    result: dict[str, Any] = {"mode": mode, "optimizer": optimizer, "steps": steps}
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        worker = _stock_worker if mode == "stock" else _torchshard_worker
        try:
            # settle_s=0: the ranks exit as soon as their worker returns, as a job does.
            run_ranks(worker, (WORLD, init_file, optimizer, tmp, steps), WORLD, tw.GLOO_TIMEOUT_S,
                      settle_s=0)
            per_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(WORLD)]
            if mode == "stock":
                _check_stock(per_rank, steps)
            else:
                switches = {Path(tmp, f"rank{r}.switch").read_text() for r in range(WORLD)}
                expected = str(mode != "no-native-ar")
                assert switches == {expected}, f"native all-reduce switch {switches}, want {expected}"
                case = f"{WORKLOAD}/{optimizer}"
                tw._assert_bit_identical({case: [ranks[case] for ranks in per_rank]},
                                         WORKLOAD, optimizer)
            result.update(outcome="pass", detail="")
        except AssertionError as exc:
            text = str(exc)
            if "exited with code" in text or "failed:" in text or "still running" in text:
                result["outcome"], result["detail"] = _classify(text)
            else:
                result.update(outcome="result_mismatch", detail=text[:2000])
            print(text, file=sys.stderr)
        except Exception:  # noqa: BLE001 -- recorded as the attempt's outcome
            result.update(outcome="driver_exception", detail=traceback.format_exc()[-2000:])
            print(result["detail"], file=sys.stderr)
    result["ranks_s"] = time.monotonic() - start
    Path("result.json").write_text(json.dumps(result))
    return 0 if result["outcome"] == "pass" else 1


# --------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------


def _unlimited_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _backtrace(core: str, out: str) -> None:
    gdb = shutil.which("gdb")
    if gdb is None:
        Path(out).write_text("gdb not installed\n")
        return
    with open(out, "w") as f:
        subprocess.run([gdb, "-batch", "-ex", "thread apply all bt", sys.executable, core],
                       stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False)


def run_attempt(index: int, mode: str, optimizer: str, args: argparse.Namespace,
                cores_kept: list[int], lock: threading.Lock) -> dict[str, Any]:
    adir = Path(args.out, "attempts", f"{index:04d}-{mode}-{optimizer}")
    adir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSHARD_")}
    env.update(MODES[mode])
    env["PYTHONFAULTHANDLER"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in
                                         env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--attempt", mode, optimizer,
           "--steps", str(args.steps)]
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    with open(adir / "stdout.txt", "w") as out, open(adir / "stderr.txt", "w") as err:
        try:
            proc = subprocess.run(cmd, cwd=adir, env=env, stdout=out, stderr=err,
                                  preexec_fn=_unlimited_core, timeout=args.timeout, check=False)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    wall = time.monotonic() - t0
    record: dict[str, Any] = {"index": index, "mode": mode, "optimizer": optimizer,
                              "started": started.isoformat(timespec="seconds"),
                              "wall_s": round(wall, 2), "driver_rc": rc}
    result_file = adir / "result.json"
    if rc is None:
        record.update(outcome="driver_timeout", detail=f"> {args.timeout} s")
    elif result_file.exists():
        result = json.loads(result_file.read_text())
        record.update(outcome=result["outcome"], detail=result["detail"][:300],
                      ranks_s=round(result["ranks_s"], 2))
    elif rc < 0:
        record.update(outcome=f"driver_signal_{_signal_name(-rc)}", detail="")
    else:
        record.update(outcome=f"driver_exit_{rc}", detail="no result.json")
    stderr_text = (adir / "stderr.txt").read_text(errors="replace")
    record["alarms"] = [a for a in ALARMS if a in stderr_text]
    cores = sorted(glob.glob(str(adir / "core*")))
    record["cores"] = [os.path.basename(c) for c in cores]
    for core in cores:
        _backtrace(core, core + ".bt.txt")
        with lock:
            keep = len(cores_kept) < args.keep_cores
            if keep:
                cores_kept.append(index)
        if not keep:
            os.remove(core)
    if record["outcome"] == "pass" and not record["alarms"] and not cores:
        shutil.rmtree(adir)
    else:
        record["kept"] = str(adir)
    return record


def summarize(out: str) -> dict[str, Any]:
    records = [json.loads(line) for line in Path(out, "attempts.jsonl").read_text().splitlines()
               if line.strip()]
    modes: dict[str, Any] = {}
    for mode in list(MODES) + sorted({r["mode"] for r in records} - set(MODES)):
        rs = [r for r in records if r["mode"] == mode]
        if not rs:
            continue
        walls = [r["wall_s"] for r in rs]
        outcomes = collections.Counter(r["outcome"] for r in rs)
        modes[mode] = {
            "runs": len(rs),
            "passes": outcomes.get("pass", 0),
            "failures": {k: v for k, v in outcomes.items() if k != "pass"},
            "by_optimizer": dict(collections.Counter(r["optimizer"] for r in rs)),
            "stderr_alarms": sum(bool(r["alarms"]) for r in rs),
            "cores": sum(len(r["cores"]) for r in rs),
            "wall_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls),
                       "mean": round(statistics.fmean(walls), 2)},
        }
    first = min((r["started"] for r in records), default=None)
    last = max((r["started"] for r in records), default=None)
    summary = {"attempts": len(records), "first_start": first, "last_start": last, "modes": modes,
               "failed": [r for r in records if r["outcome"] != "pass" or r["alarms"] or r["cores"]]}
    Path(out, "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{'mode':<14}{'runs':>6}{'pass':>6}  failures{'':<22}wall s (median/min/max)")
    for mode, m in modes.items():
        fails = ", ".join(f"{k}: {v}" for k, v in m["failures"].items()) or "-"
        w = m["wall_s"]
        print(f"{mode:<14}{m['runs']:>6}{m['passes']:>6}  {fails:<30}"
              f"{w['median']:.1f}/{w['min']:.1f}/{w['max']:.1f}")
    for r in summary["failed"]:
        print(f"  #{r['index']} {r['mode']}/{r['optimizer']}: {r['outcome']} {r['detail'][:120]}"
              f" alarms={r['alarms']} cores={r['cores']} kept={r.get('kept')}")
    return summary


def loop_main(args: argparse.Namespace) -> int:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        print(f"note: core_pattern is {pattern!r}: cores do not land in the attempt's directory",
              file=sys.stderr)
    stop_at = dt.datetime.fromisoformat(args.stop_at).replace(tzinfo=dt.timezone.utc) \
        if args.stop_at else None
    # Round-robin over modes; the optimizer alternates per round.
    schedule = iter([(args.first_index + i * len(modes) + j, mode, OPTIMIZERS[i % 2])
                     for i in range(args.runs) for j, mode in enumerate(modes)])
    lock = threading.Lock()
    cores_kept: list[int] = []
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    log = open(Path(args.out, "attempts.jsonl"), "a")
    print(f"busy loops: {[p.pid for p in busy]}, jobs {args.jobs}, niceness {os.nice(0)}, "
          f"core_pattern {pattern!r}", flush=True)

    def worker() -> None:
        while True:
            with lock:
                if stop_at and dt.datetime.now(dt.timezone.utc) >= stop_at:
                    return
                task = next(schedule, None)
            if task is None:
                return
            record = run_attempt(*task, args, cores_kept, lock)
            with lock:
                log.write(json.dumps(record) + "\n")
                log.flush()
                print(f"{record['started']} #{record['index']} {record['mode']}/"
                      f"{record['optimizer']}: {record['outcome']} {record['wall_s']:.1f} s"
                      f"{' alarms=' + str(record['alarms']) if record['alarms'] else ''}"
                      f"{' cores=' + str(record['cores']) if record['cores'] else ''}",
                      flush=True)

    try:
        threads = [threading.Thread(target=worker) for _ in range(args.jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for p in busy:
            p.kill()
            p.wait()
        log.close()
    summarize(args.out)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="attempts per mode")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: "
                        + ", ".join(MODES))
    parser.add_argument("--jobs", type=int, default=2, choices=(1, 2),
                        help="attempts at a time")
    parser.add_argument("--busy", type=int, default=2, help="background busy loops")
    parser.add_argument("--steps", type=int, default=5,
                        help="training steps per training (the test: 5; at least 2)")
    parser.add_argument("--timeout", type=float, default=360, help="per attempt, seconds")
    parser.add_argument("--keep-cores", type=int, default=5,
                        help="core files kept in all (each core's backtrace is always kept)")
    parser.add_argument("--stop-at", help="UTC time (YYYY-MM-DDTHH:MM) after which no "
                        "attempt starts; counts stay within one round of each other")
    parser.add_argument("--first-index", type=int, default=0,
                        help="index of the first attempt (to continue a loop into the same --out)")
    parser.add_argument("--out", default="/tmp/gloo_loop", help="results directory")
    parser.add_argument("--summarize", action="store_true", help="only print the summary of --out")
    parser.add_argument("--attempt", nargs=2, metavar=("MODE", "OPTIMIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the check needs the loss to change)")
    if args.attempt:
        return attempt_main(args.attempt[0], args.attempt[1], args.steps)
    if args.summarize:
        summarize(args.out)
        return 0
    return loop_main(args)


if __name__ == "__main__":
    sys.exit(main())
