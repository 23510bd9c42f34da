// Plans calls whose sharding decision needs redistribution
// (OutputSharding.needs_redistribute) the way stock's
// OpDispatcher.redistribute_local_args serves them, into a RunLocally step
// with changed arguments (applied on hits by hit/redistribution.h):
//
//  - a DTensor argument (or list item, for the foreach ops stock flattens
//    with pytree) whose spec differs from the suggested one is redistributed
//    from its spec to the suggested one: a single Partial -> Replicate as the
//    native all_reduce (all_reduce_planner.h), anything else through stock's
//    own redistribute_local_tensor;
//  - with use_val_from_redistribute_schema, non-tensor arguments take the
//    suggested schema's values (a view's shape becomes the local shape).
//
// What stock would do differently declines (kNeedsRedistribute): a rewritten
// op, arguments nested deeper than one list level, out= ops, an in-place op's
// written argument, replaced values the key does not pin down.
//
// Requires the GIL; runs on a cache miss only.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"
#include "csrc/python/cache/op_descriptor.h"

#include <Python.h>

namespace torchshard {

Outcome<RunLocally> plan_redistribution(const OpDescriptor& op, py::handle op_info,
                                        py::handle sharding, PyObject* args, PyObject* kwargs);

} // namespace torchshard
