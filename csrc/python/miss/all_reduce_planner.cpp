#include "csrc/python/miss/all_reduce_planner.h"

#include "csrc/core/cache_config.h"
#include "csrc/python/hit/all_reduce.h"
#include "csrc/python/interop/python_errors.h"

namespace torchshard {
namespace {

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

std::optional<NativeAllReduce> plan(py::handle from_spec, py::handle to_spec) {
  if (!native_all_reduce_enabled()) {
    return std::nullopt;
  }
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
  require_all_reduce_ops();  // fail here, on the miss, if the ops are not registered
  return NativeAllReduce{
      placement.attr("reduce_op").attr("lower")().cast<std::string>(),
      funcol.attr("_resolve_group_name")(py::make_tuple(mesh, *dim)).cast<std::string>()};
}

} // namespace

Outcome<std::optional<NativeAllReduce>> plan_native_all_reduce(py::handle from_spec,
                                                               py::handle to_spec) {
  return catch_python_errors(
      [&]() -> Outcome<std::optional<NativeAllReduce>> { return plan(from_spec, to_spec); });
}

} // namespace torchshard
