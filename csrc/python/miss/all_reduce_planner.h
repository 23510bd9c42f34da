// Plans Partial -> Replicate on one mesh dimension as the native all_reduce
// (NativeAllReduce in cache/cache_entry.h; run by hit/all_reduce.h), exactly
// as stock's redistribute_local_tensor runs it in eager mode:
// Partial._reduce_value is funcol.all_reduce(local, reduce_op, (mesh, dim)),
// i.e. _c10d_functional.all_reduce(local, reduce_op.lower(), group_name),
// whose AsyncCollectiveTensor stock then waits on.
//
// The group name is resolved once, here, on the miss. Any other transition, a
// Partial subclass (which may override _reduce_value), mixed placements that
// stock might reorder or reject, a size-1 mesh dim and a rank outside the mesh
// keep going through stock's redistribute_local_tensor.
//
// Requires the GIL; runs on a cache miss only.
#pragma once

#include "csrc/core/outcome.h"
#include "csrc/python/cache/cache_entry.h"

#include <optional>

namespace torchshard {

// The native plan for redistributing from `from_spec` to `to_spec`
// (DTensorSpecs), or nullopt when stock's redistribute_local_tensor must run it.
Outcome<std::optional<NativeAllReduce>> plan_native_all_reduce(py::handle from_spec,
                                                               py::handle to_spec);

} // namespace torchshard
