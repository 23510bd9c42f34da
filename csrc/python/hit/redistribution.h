// Applies a RunLocally step's changed arguments on a hit (planned by
// miss/redistribution_planner.h), the way stock's
// OpDispatcher.redistribute_local_args does: replaced values are passed as
// planned, and each redistributed DTensor's local tensor is moved to its
// target spec, by the native all_reduce (all_reduce.h) or by stock's own
// redistribute_local_tensor (the collectives are stock's, run from C++).
//
// An open ExplicitRedistributionContext must observe (and may refuse) every
// implicit redistribution, so such a call declines (kNeedsRedistribute).
//
// Requires the GIL.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"

#include <Python.h>

#include <vector>

namespace torchshard {

// The positional values the local call takes instead of the caller's (null:
// the caller's), `step.positional_count` of them.
Outcome<std::vector<py::object>> changed_local_arguments(const RunLocally& step, PyObject* args);

} // namespace torchshard
