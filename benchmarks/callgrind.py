"""``python3 benchmarks/run.py callgrind``: instruction counts per call under callgrind.

Instruction counts do not move with machine load, so they guide optimisation where
timings on a shared machine cannot. One valgrind run executes, for each selected
case, ``--iterations`` calls of each variant (plain, floor, stock, torchshard; see
dispatch.py) inside ``_bench.repeat_call``; callgrind collects only inside that
function and dumps a profile as it returns (a client request; the extension must be
built where valgrind's headers are installed), so each dump is exactly one variant's
calls. Torchshard's dumps also give the inclusive cost of the hit path's stages.

With ``--workload NAME:OPTIMIZER:SHAPES`` it counts whole training steps instead
(workloads.py), stock then torchshard, and how many of a step's instructions run
inside stock's C++ DTensor path or inside torchshard's rule.

The command it runs, per the docs (docs/benchmarks.md)::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*repeat_call*' \\
        --callgrind-out-file=OUT/callgrind.out \\
        python3 benchmarks/callgrind.py --target --cases CASES --iterations N

with PYTHONPATH naming the folder of the torchshard the parent imported, so the target
measures the same build.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import charts
import report
from fake_world import machine_description

VARIANTS = ("plain", "floor", "stock", "torchshard")
CASE_SEPARATOR = ";"  # case names contain commas ("mul(x, 2.5) ...")
DEFAULT_CASES = (
    "add S(0)+S(0) 1-D",
    "mul(x, 2.5) [py scalar] S(0) 1-D",
    "mm S(0) @ R 1-D",
    "t [view] S(0) 1-D",
    "add_ [in-place] S(0) 1-D",
    "_foreach_add_ x8 [in-place] S(0) 1-D",
)
# Stages of a torchshard hit, by the function whose inclusive cost measures it.
STAGES = {
    "rule (whole body)": "native_rule_vectorcall",
    "key build": "build_op_key",
    "lookup": "ThreadCache::find",
    "local op (callBoxed)": "run_local_op",
    "wrap outputs": "wrap_local_results",
    "in-place result": "inplace_result",
}


def run_target(case_names: list[str], iterations: int, world_size: int) -> None:
    """Inside valgrind: each case's variants, one _bench.repeat_call each, in order."""
    import torchshard
    from torchshard import _bench

    from cases import build_cases
    from fake_world import fake_world
    from variants import VariantSwitch, record_calls

    with fake_world(world_size):
        cases = {case.name: case for case in build_cases(world_size)}
        for name in case_names:
            case = cases[name]
            torchshard.enable()
            switch = VariantSwitch(record_calls(case.run))
            for variant in VARIANTS:
                if variant != "plain":
                    switch.switch(variant)
                call = case.run_plain if variant == "plain" else case.run
                for _ in range(20):
                    call()
                _bench.repeat_call(call, iterations, f"{name} / {variant}")
            switch.close()


STEP_VARIANTS = ("stock", "torchshard")
# Where the DTensor op path's instructions go inside a training step.
STEP_STAGES = {
    "stock's C++ DTensor path": "dispatchDTensorOp",
    "torchshard's rule": "native_rule_vectorcall",
    "rule: local op": "run_local_op",
    "rule: wrap": "wrap_local_results",
    "rule: key build": "build_op_key",
}


def run_step_target(workload_spec: str, iterations: int, world_size: int) -> None:
    """Inside valgrind: `iterations` training steps of one workload, stock then torchshard."""
    import itertools

    import torchshard
    from torchshard import _bench

    import workloads
    from fake_world import fake_world

    name, optimizer, shapes = workload_spec.split(":")
    with fake_world(world_size):
        workload = workloads.build(name, {"small": workloads.SMALL, "medium": workloads.MEDIUM}[shapes],
                                   optimizer=optimizer)
        steps = itertools.count()
        for variant in STEP_VARIANTS:
            (torchshard.disable if variant == "stock" else torchshard.enable)()
            for _ in range(3):  # warm caches and optimizer state
                workload.step(next(steps))
            _bench.repeat_call(lambda: workload.step(next(steps)), iterations, f"{workload_spec} / {variant}")
        torchshard.enable()


def _totals(path: str) -> int:
    with open(path) as handle:
        for line in handle:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def _inclusive(path: str, stages: dict[str, str] = STAGES) -> dict[str, int]:
    """Inclusive Ir of each `stages` function in one dump."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    costs: dict[str, int] = {}
    for stage, function in stages.items():
        for line in text.splitlines():
            match = re.match(r"\s*([\d,]+)\s.*?(\S*" + re.escape(function) + r")\(", line)
            if match:
                costs[stage] = int(match.group(1).replace(",", ""))
                break
    return costs


# How the payloads name the target (the valgrind options before it are the real ones).
TARGET_COMMAND = "python3 benchmarks/callgrind.py --target ..."


def _target_environment() -> dict[str, str]:
    """This environment, with the torchshard this process would import first on PYTHONPATH."""
    package_dir = Path(importlib.util.find_spec("torchshard").origin).parent
    path = os.pathsep.join(filter(None, [str(package_dir.parent), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def _run_valgrind(target_args: list[str], out_dir: str, expected_dumps: int) -> tuple[list[str], list[str]]:
    """Runs the target under callgrind; returns the command and its dumps, in order."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    out_file = os.path.join(out_dir, "callgrind.out")
    command = [
        "valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=*repeat_call*",
        f"--callgrind-out-file={out_file}", sys.executable, str(Path(__file__).resolve()),
        "--target", *target_args,
    ]
    print("running: " + " ".join(command), file=sys.stderr, flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, env=_target_environment())
    if proc.returncode != 0:
        raise SystemExit(f"valgrind failed:\n{proc.stderr[-3000:]}")
    dumps = sorted(glob.glob(out_file + ".*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    dumps = [d for d in dumps if _totals(d) > 0]
    if len(dumps) != expected_dumps:
        raise SystemExit(f"expected {expected_dumps} dumps, found {len(dumps)} (was the extension built "
                         "with valgrind's headers installed?)")
    return command, dumps


def run_steps(args: argparse.Namespace) -> int:
    """Instructions per training step, stock vs torchshard, and the DTensor path's share."""
    iterations = 2 if args.quick else args.iterations
    with tempfile.TemporaryDirectory() as out_dir:
        command, dumps = _run_valgrind(
            ["--workload", args.workload, "--iterations", str(iterations), "--world-size", str(args.world_size)],
            out_dir, len(STEP_VARIANTS))
        per_step = {v: _totals(d) / iterations for v, d in zip(STEP_VARIANTS, dumps)}
        stages = {v: {k: c / iterations for k, c in _inclusive(d, STEP_STAGES).items()}
                  for v, d in zip(STEP_VARIANTS, dumps)}
    rows = [[v, f"{per_step[v]:,.0f}", *(f"{stages[v].get(s, 0):,.0f}" for s in STEP_STAGES)]
            for v in STEP_VARIANTS]
    table = report.markdown_table(["variant", "Ir per step", *STEP_STAGES], rows, numeric_from=1)
    table += f"\n\nstep instruction ratio stock / torchshard: {per_step['stock'] / per_step['torchshard']:.2f}x"
    payload = {"suite": "callgrind-steps", "machine": machine_description(), "workload": args.workload,
               "iterations": iterations, "ir_per_step": per_step, "stages": stages,
               "command": " ".join([*command[:5], TARGET_COMMAND])}
    report.print_and_write(args, table, payload, lambda payload, path: None)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.workload:
        return run_steps(args)
    cases = [c.strip() for c in args.cases.split(CASE_SEPARATOR)] if args.cases else list(DEFAULT_CASES)
    iterations = 20 if args.quick else args.iterations
    with tempfile.TemporaryDirectory() as out_dir:
        command, dumps = _run_valgrind(
            ["--cases", CASE_SEPARATOR.join(cases), "--iterations", str(iterations), "--world-size", str(args.world_size)],
            out_dir, len(cases) * len(VARIANTS))
        results = []
        for index, name in enumerate(cases):
            per_variant = dumps[index * len(VARIANTS):(index + 1) * len(VARIANTS)]
            ir = {v: _totals(d) / iterations for v, d in zip(VARIANTS, per_variant)}
            stages = {k: v / iterations for k, v in _inclusive(per_variant[-1]).items()}
            results.append({"case": name, "ir_per_call": ir, "torchshard_stages": stages})
    rows = []
    for r in results:
        ir = r["ir_per_call"]
        ratio = (ir["torchshard"] - ir["floor"]) / (ir["stock"] - ir["floor"])
        r["overhead_ratio"] = ratio
        stages = r["torchshard_stages"]
        rows.append([r["case"], *(f"{ir[v]:,.0f}" for v in VARIANTS), f"{ratio:.2f}",
                     *(f"{stages[s]:,.0f}" if s in stages else "-" for s in STAGES)])
    table = report.markdown_table(
        ["case", *(f"{v} Ir" for v in VARIANTS), "overhead ratio", *STAGES], rows, numeric_from=1)
    payload = {"suite": "callgrind", "machine": machine_description(), "iterations": iterations,
               "command": " ".join([*command[:5], TARGET_COMMAND]),
               "results": results}
    report.print_and_write(args, table, payload, charts.callgrind)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="callgrind target (run by `python3 benchmarks/run.py callgrind`)")
    parser.add_argument("--target", action="store_true", required=True)
    parser.add_argument("--cases")
    parser.add_argument("--workload")
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--world-size", type=int, default=8)
    args = parser.parse_args()
    if args.workload:
        run_step_target(args.workload, args.iterations, args.world_size)
    else:
        run_target(args.cases.split(CASE_SEPARATOR), args.iterations, args.world_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
