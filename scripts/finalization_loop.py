"""Counts how a process ends when daemon threads are still dispatching DTensor ops at
interpreter finalization (issue 13 item 2; docs/reliability.md).

Each run is a fresh interpreter: 4 daemon threads, each past its first call, loop
``torch.relu(x + x).sum(dim=1)`` on a Shard(0) DTensor (fake process group, world 4)
while the main thread returns. Prints the count per exit status and per first stderr
line, and keeps every run's stderr under --out.

    python3 scripts/finalization_loop.py --runs 100                 # torchshard
    python3 scripts/finalization_loop.py --runs 100 --stock         # TORCHSHARD_DISABLE=1
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lifetime_scenarios import DAEMON_THREADS_AT_FINALIZATION, PRELUDE  # noqa: E402

SCENARIO = PRELUDE + DAEMON_THREADS_AT_FINALIZATION  # the lifetime test's, run many times


def outcome(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"exit {returncode}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--stock", action="store_true", help="run with TORCHSHARD_DISABLE=1")
    parser.add_argument("--out", type=Path, default=None, help="where each run's stderr goes")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="finalization_loop."))
    out.mkdir(parents=True, exist_ok=True)
    script = out / "scenario.py"
    script.write_text(SCENARIO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSHARD_")}
    if args.stock:
        env["TORCHSHARD_DISABLE"] = "1"
    endings: collections.Counter[str] = collections.Counter()
    first_lines: collections.Counter[str] = collections.Counter()
    for run in range(args.runs):
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                              timeout=120)
        (out / f"stderr.{run}").write_text(proc.stderr)
        endings[outcome(proc.returncode)] += 1
        first_lines[(proc.stderr.splitlines() or ["(empty)"])[0][:80]] += 1
    side = "stock" if args.stock else "torchshard"
    print(f"{side}, {args.runs} runs (stderr of each in {out}):")
    for ending, count in endings.most_common():
        print(f"  {ending}: {count}")
    print("first stderr line:")
    for line, count in first_lines.most_common():
        print(f"  {count}x {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
