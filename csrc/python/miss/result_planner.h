// Plans how a call's results are returned (the ResultStep of its NativePlan)
// from stock's OutputSharding.output_spec, as stock's OpDispatcher.wrap and
// _dispatch_fast_path_python_tail (torch/distributed/tensor/_dispatch.py)
// would return them, and what a rank outside the op's mesh stands in with.
// Anything stock wraps specially (a None spec where a DTensor is due, a
// layout that does not match the schema's returns) declines.
//
// Requires the GIL; runs on a cache miss only.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

namespace torchshard {

Outcome<ResultStep> plan_result_step(const OpDescriptor& op, py::handle output_spec,
                                     PyObject* args, PyObject* kwargs, bool participating);

// The local step of a rank outside the op's mesh: stock's stand-in results
// for functional and view ops, nothing for in-place and out= ops.
Outcome<LocalStep> plan_off_mesh_step(const OpDescriptor& op, const ResultStep& result);

} // namespace torchshard
