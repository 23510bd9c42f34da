"""torchshard's benchmark suite: ``python -m torchshard.bench``.

Subcommands (``python -m torchshard.bench <command> --help`` for options):

- ``dispatch`` (the default): per op and placement, the plain local op, the rule
  floor, stock DTensor and torchshard, on cache hits and on cache misses, plus the
  internal key-build + lookup time (:mod:`torchshard.bench.dispatch`);
- ``scaling``: hit cost against cache size, DTensor list length, thread count, and
  a cold cache (:mod:`torchshard.bench.scaling`);
- ``training``: tensor-parallel and FSDP2 training steps, stock vs torchshard
  (:mod:`torchshard.bench.training`);
- ``callgrind``: instruction counts per call of each variant, and of the stages of
  a torchshard hit, under valgrind (:mod:`torchshard.bench.callgrind`).

Everything runs in one process on the built-in ``fake`` process group: collectives
are no-ops and local compute is real, so the figures are DTensor's CPU cost.
"""
