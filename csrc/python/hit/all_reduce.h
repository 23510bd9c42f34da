// Runs a planned Partial -> Replicate all-reduce (NativeAllReduce, planned by
// miss/all_reduce_planner.h) from C++: _c10d_functional.all_reduce +
// wait_tensor through the dispatcher, as stock's funcol path runs them.
//
// Requires the GIL (released around the collective).
#pragma once

#include "csrc/python/cache/cache_entry.h"

#include <ATen/core/Tensor.h>

namespace torchshard {

// Throws if the functional collectives are not registered with the
// dispatcher, so a plan is never made that could not run.
void require_all_reduce_ops();

// Whether stock would take its tracing branch (_are_we_tracing) for reasons
// the dispatch rule does not already decline on (dispatch modes): then the
// caller runs stock's redistribute_local_tensor instead.
bool native_all_reduce_unavailable();

// all_reduce + wait_tensor of `local`; throws what the collective throws.
// The result shares the output's storage but not its TensorImpl, which the
// backend's work may still hold (collective_output.h).
at::Tensor run_native_all_reduce(const NativeAllReduce& plan, const at::Tensor& local);

} // namespace torchshard
