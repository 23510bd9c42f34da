// Serving calls whose sharding decision needs redistribution
// (OutputSharding.needs_redistribute), the way stock's
// OpDispatcher.redistribute_local_args does it, without going back to stock:
//
//  - a DTensor argument (or list item, for the foreach ops stock flattens
//    with pytree) whose spec differs from the suggested one is redistributed with stock's own redistribute_local_tensor(local, from,
//    to) (the collectives are stock's, run from C++), or, for a single
//    Partial -> Replicate, with the same all_reduce + wait_tensor stock runs,
//    called through the dispatcher (native_all_reduce.h);
//  - with use_val_from_redistribute_schema, non-tensor arguments take the
//    suggested schema's values (a view's shape becomes the local shape).
//
// Planned once on a cache miss into the entry; what stock would do
// differently is declined instead: a rewritten op, arguments nested deeper
// than one list level, out= ops, an in-place op's written argument (or list),
// ranks outside the mesh, replaced values
// the key does not pin down, and, at call time, an active
// ExplicitRedistributionContext (which must see the redistribution).
//
// Requires the GIL.
#pragma once

#include "csrc/python/cache_entry.h"
#include "csrc/python/op_descriptor.h"

#include <Python.h>

#include <optional>
#include <vector>

namespace torchshard {

// Fills entry.local_arguments from the propagation result, or says why not.
std::optional<DeclineReason> plan_local_redistribution(const OpDescriptor& op, py::handle op_info,
                                                       py::handle sharding, PyObject* args,
                                                       PyObject* kwargs, CacheEntry& entry);

// The positional values the local call takes instead of the caller's (null:
// the caller's), redistributing where planned. false with a decline reason
// set in *reason when the call must go to stock; throws
// py::error_already_set if a redistribution raises.
bool local_arguments_for_call(const CacheEntry& entry, PyObject* args,
                              std::vector<py::object>& overrides, DeclineReason* reason);

} // namespace torchshard
