"""``python -m torchshard.bench dispatch``: run the dispatch suite and write its outputs."""

from __future__ import annotations

import argparse
import dataclasses

from torchshard.bench import report
from torchshard.bench.cases import build_cases
from torchshard.bench.dispatch import Settings, measure_case, summarize
from torchshard.bench.fake_world import fake_world, machine_description
from torchshard.bench.timing import Progress

# --quick: one case per op family on the 1-D mesh, a few hundred calls each.
QUICK = Settings(rounds=20, batch=5, warmup=2, miss_rounds=5, probe_iterations=500)


def run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else Settings()
    overrides = {"rounds": args.rounds, "batch": args.batch, "miss_rounds": args.miss_rounds}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    filters = [text.strip() for text in args.cases.split(",") if text.strip()]
    with fake_world(args.world_size):
        cases = [c for c in build_cases(args.world_size) if not filters or any(f in c.name for f in filters)]
        if args.quick:
            seen: set[str] = set()
            cases = [c for c in cases if c.mesh == "1-D" and not (c.op in seen or seen.add(c.op))]
        if args.list:
            print("\n".join(case.name for case in cases))
            return 0
        if not cases:
            raise SystemExit(f"no case matches --cases {args.cases!r} (see --list)")
        progress = Progress(len(cases), "dispatch", enabled=not args.no_progress)
        results = []
        for case in cases:
            results.append(measure_case(case, settings))
            progress.step(case.name)
    summary = summarize(results)
    table = report.dispatch_table(results)
    payload = {
        "suite": "dispatch",
        "machine": machine_description(),
        "settings": dataclasses.asdict(settings),
        "world_size": args.world_size,
        "summary": summary,
        "results": results,
    }
    text = table + "\n\n" + report.dispatch_summary(summary)
    report.print_and_write(args, text, payload, report.dispatch_chart)
    return 0
