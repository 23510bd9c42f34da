// torchshard._bench: the benchmark probes (bench_probes.h), a module of their
// own so that no user of torchshard imports them. Links against torchshard._C
// and reaches its state only through what _C exports (TORCHSHARD_API).
#include "csrc/bench/bench_probes.h"

PYBIND11_MODULE(_bench, module) {
  module.doc() = "torchshard benchmark probes (benchmarks/ only; not an API)";
  torchshard::init_bench_probe_bindings(module);
}
