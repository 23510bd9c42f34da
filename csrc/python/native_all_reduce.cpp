#include "csrc/python/native_all_reduce.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace torchshard {
namespace {

const c10::OperatorHandle& all_reduce_op() {
  static const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("_c10d_functional::all_reduce", "");
  return handle;
}

const c10::OperatorHandle& wait_tensor_op() {
  static const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("_c10d_functional::wait_tensor", "");
  return handle;
}

// The mesh dimension where `from` is Partial (exactly that class) and `to` is
// Replicate, every other dimension being the same Replicate or Shard in both;
// nullopt for any other pair of placements.
std::optional<size_t> single_partial_to_replicate_dim(py::handle from, py::handle to) {
  auto placement_types = py::module_::import("torch.distributed.tensor.placement_types");
  py::handle partial = placement_types.attr("Partial");
  py::handle replicate = placement_types.attr("Replicate");
  py::handle shard = placement_types.attr("Shard");
  auto from_placements = py::tuple(from.attr("placements"));
  auto to_placements = py::tuple(to.attr("placements"));
  if (from_placements.size() != to_placements.size()) {
    return std::nullopt;
  }
  std::optional<size_t> reduced_dim;
  for (size_t i = 0; i < from_placements.size(); ++i) {
    py::handle source = from_placements[i];
    py::handle target = to_placements[i];
    py::handle source_type = reinterpret_cast<PyObject*>(Py_TYPE(source.ptr()));
    py::handle target_type = reinterpret_cast<PyObject*>(Py_TYPE(target.ptr()));
    if (source_type.is(partial) && target_type.is(replicate) && !reduced_dim) {
      reduced_dim = i;
    } else if (!((source_type.is(replicate) || source_type.is(shard)) && source.equal(target))) {
      return std::nullopt;
    }
  }
  return reduced_dim;
}

} // namespace

std::optional<NativeAllReduce> plan_native_all_reduce(py::handle from_spec, py::handle to_spec) {
  const std::optional<size_t> dim = single_partial_to_replicate_dim(from_spec, to_spec);
  if (!dim) {
    return std::nullopt;
  }
  py::object mesh = from_spec.attr("mesh");
  if (!mesh.equal(to_spec.attr("mesh")) ||
      !from_spec.attr("shard_order").equal(to_spec.attr("shard_order")) ||
      mesh.attr("size")(*dim).cast<int64_t>() <= 1 ||
      !mesh.attr("_is_current_rank_part_of_mesh")().cast<bool>()) {
    return std::nullopt;
  }
  auto funcol = py::module_::import("torch.distributed._functional_collectives");
  py::object placement = py::tuple(from_spec.attr("placements"))[*dim];
  NativeAllReduce plan{
      placement.attr("reduce_op").attr("lower")().cast<std::string>(),
      funcol.attr("_resolve_group_name")(py::make_tuple(mesh, *dim)).cast<std::string>()};
  all_reduce_op();  // fail here, on the miss, if the ops are not registered
  wait_tensor_op();
  return plan;
}

bool native_all_reduce_unavailable() {
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::PythonDispatcher);
}

at::Tensor run_native_all_reduce(const NativeAllReduce& plan, const at::Tensor& local) {
  torch::jit::Stack stack{local, plan.reduce_op, plan.group_name};
  // Without the GIL, as torch.ops calls run: the collective's work may need
  // Python on another thread (gloo's) before wait_tensor returns.
  py::gil_scoped_release no_gil;
  all_reduce_op().callBoxed(stack);
  wait_tensor_op().callBoxed(stack);
  return std::move(stack.back()).toTensor();
}

} // namespace torchshard
