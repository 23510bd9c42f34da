"""torchshard's benchmark suite, run from a checkout: ``python3 benchmarks/run.py``.

Subcommands (``python3 benchmarks/run.py <command> --help`` for options), one
module each in benchmarks/ with a ``run(args)``:

- ``dispatch`` (the default): per op and placement, the plain local op, the rule
  floor, stock DTensor and torchshard, on cache hits and on cache misses, plus the
  internal key-build + lookup time (dispatch.py);
- ``scaling``: hit cost against cache size, DTensor list length, thread count, and
  a cold cache (scaling.py);
- ``training``: tensor-parallel and FSDP2 training steps, stock vs torchshard
  (training.py);
- ``shapes``: calls and steps at shapes never seen before (shape-generic decisions):
  per-op new-shape calls, a decode loop with a growing KV cache, a variable-length
  TP block and an MoE-like step, stock vs torchshard (shapes.py);
- ``callgrind``: instruction counts per call of each variant, and of the stages of
  a torchshard hit, under valgrind (callgrind.py).

Everything runs in one process on the built-in ``fake`` process group: collectives
are no-ops and local compute is real, so the figures are DTensor's CPU cost.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
COMMANDS = ("dispatch", "scaling", "training", "shapes", "callgrind")  # each the name of its module


def use_checkout_build() -> None:
    """Measure this checkout's torchshard where it is built here.

    A script's sys.path starts with its own folder (benchmarks/), not the checkout, so
    without this an in-place build (``setup.py build_ext --inplace``) would lose to
    whichever torchshard is installed. An unbuilt checkout leaves the installed one.
    """
    if any((CHECKOUT / "torchshard").glob("_C*.so")) and str(CHECKOUT) not in sys.path:
        sys.path.insert(1, str(CHECKOUT))


def _add_output_options(parser: argparse.ArgumentParser, world_size: int = 8) -> None:
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    parser.add_argument("--png", metavar="PATH", help="write a chart (needs matplotlib)")
    parser.add_argument("--world-size", type=int, default=world_size,
                        help=f"fake process group size (default {world_size})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 benchmarks/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")

    dispatch = commands.add_parser("dispatch", help="per-op hit and miss cost (default)")
    dispatch.add_argument("--cases", default="", metavar="TEXT[,TEXT]",
                          help="only cases whose name contains one of these (e.g. 'add,mm')")
    dispatch.add_argument("--rounds", type=int, help="interleaved rounds (default 200)")
    dispatch.add_argument("--batch", type=int, help="calls per timed batch (default 10)")
    dispatch.add_argument("--miss-rounds", type=int, help="cold-cache calls per variant (default 100)")
    dispatch.add_argument("--quick", action="store_true", help="a smoke run: few cases, few iterations")
    dispatch.add_argument("--list", action="store_true", help="list the cases and exit")
    _add_output_options(dispatch)

    scaling = commands.add_parser("scaling", help="hit cost against cache size, list length, threads")
    scaling.add_argument("--quick", action="store_true", help="a smoke run: few points, few iterations")
    _add_output_options(scaling)

    training = commands.add_parser("training", help="TP and FSDP2 training steps, stock vs torchshard")
    training.add_argument("--workloads", default="tp_mlp,tp_block,fsdp,fsdp_tp")
    training.add_argument("--optimizers", default="foreach,fused,for-loop")
    training.add_argument("--shapes", default="small,medium")
    training.add_argument("--rounds", type=int, default=8, help="interleaved rounds per case")
    training.add_argument("--steps", type=int, default=10, help="steps per timed round")
    training.add_argument("--warmup", type=int, default=3, help="untimed steps after each switch")
    training.add_argument("--quick", action="store_true", help="a smoke run: one workload, few steps")
    _add_output_options(training)

    shapes = commands.add_parser("shapes", help="new-shape calls and variable-shape steps, stock vs torchshard")
    shapes.add_argument("--rounds", type=int, help="timed new-shape calls per variant and op case (default 200)")
    shapes.add_argument("--steps", type=int, help="timed steps per variant of each loop (default 48)")
    shapes.add_argument("--quick", action="store_true", help="a smoke run: few calls and steps")
    _add_output_options(shapes, world_size=4)  # the 1-D mesh of 4 the targets are stated for

    callgrind = commands.add_parser("callgrind", help="instruction counts per call (needs valgrind)")
    callgrind.add_argument("--cases", default="", metavar="NAME[;NAME]",
                           help="exact case names, ';'-separated (see dispatch --list); default: six "
                                "representative cases")
    callgrind.add_argument("--workload", metavar="NAME:OPTIMIZER:SHAPES",
                           help="count training steps instead (e.g. tp_block:foreach:small)")
    callgrind.add_argument("--iterations", type=int, default=500,
                           help="calls (or steps) per variant (default 500)")
    callgrind.add_argument("--quick", action="store_true", help="20 calls per variant")
    _add_output_options(callgrind)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "dispatch")
    args = _parser().parse_args(argv)
    use_checkout_build()
    started = time.monotonic()
    code = importlib.import_module(args.command).run(args)
    print(f"\n({args.command} finished in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
