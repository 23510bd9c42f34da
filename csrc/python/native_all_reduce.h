// Partial -> Replicate on one mesh dimension, run from C++ exactly as stock's
// redistribute_local_tensor runs it in eager mode: Partial._reduce_value is
// funcol.all_reduce(local, reduce_op, (mesh, dim)), i.e.
// _c10d_functional.all_reduce(local, reduce_op.lower(), group_name) whose
// AsyncCollectiveTensor stock then waits on (_c10d_functional.wait_tensor).
//
// Planned on a cache miss (the group name is resolved once per entry); any
// other transition, a Partial subclass (which may override _reduce_value),
// mixed placements that stock might reorder or reject, a size-1 mesh dim and
// a rank outside the mesh keep going through stock's redistribute_local_tensor.
//
// Requires the GIL.
#pragma once

#include <ATen/core/Tensor.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <string>

namespace torchshard {

namespace py = pybind11;

struct NativeAllReduce {
  std::string reduce_op;   // lower-cased, as funcol passes it
  std::string group_name;  // the process group of (mesh, mesh_dim)
};

// The native plan for redistributing from `from_spec` to `to_spec`
// (DTensorSpecs), or nullopt when stock must run it.
std::optional<NativeAllReduce> plan_native_all_reduce(py::handle from_spec, py::handle to_spec);

// Whether stock would take its tracing branch (_are_we_tracing) for reasons
// the dispatch rule does not already decline on (dispatch modes): then the
// caller runs stock's redistribute_local_tensor instead.
bool native_all_reduce_unavailable();

// all_reduce + wait_tensor of `local`, through the dispatcher.
at::Tensor run_native_all_reduce(const NativeAllReduce& plan, const at::Tensor& local);

} // namespace torchshard
