// Benchmark-only probes: the torchshard._bench module, used by benchmarks/
// and never imported by torchshard itself. Nothing here is on the dispatch
// path; the probes exist so the benchmark can measure the
// parts of a hit that Python-level timing cannot separate:
//
//  - FloorRule: a torch_dispatch rule that returns a prebuilt result at once.
//    Registered for an op in place of torchshard's NativeRule, it measures
//    what reaching any native rule costs (argument parsing, autograd, the
//    Python dispatch key boxing the stack into Python objects,
//    find_torch_dispatch_rule, the vectorcall) — the floor no rule goes under.
//  - key_lookup_ns: build_op_key + ThreadCache::find for one call, timed in
//    C++ over many iterations on the calling thread's cache.
//  - rule_body_ns: the NativeRule called directly, without torch's dispatch
//    in front of it (key, lookup, local op, wrap).
//  - repeat_call: calls a Python callable N times; callgrind counts the
//    instructions of exactly those calls by toggling collection on it.
//  - fill_synthetic_entries: grows this thread's cache with keys no call can
//    produce, for the hit-cost-against-cache-size curve.
//
// All require the GIL.
#pragma once

#include <torch/csrc/utils/pybind.h>

namespace torchshard {

// Adds FloorRule, make_floor_rule and the probe functions to the module.
void init_bench_probe_bindings(py::module_& module);

} // namespace torchshard
