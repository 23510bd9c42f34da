#include "csrc/python/miss/argument_change_reuse.h"

#include "csrc/python/interop/int_sequence.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"
#include "csrc/python/interop/spec_factory.h"

#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>

namespace torchshard {
namespace {

// The input dimensions a Shard placement of `spec` shards (every placement
// of a decision key's layout is normalized: dims are non-negative).
absl::InlinedVector<int64_t, 4> sharded_dims(PyObject* spec) {
  absl::InlinedVector<int64_t, 4> dims;
  for (py::handle placement : py::tuple(py::handle(spec).attr(py_refs().str_placements))) {
    const int is_shard = PyObject_IsInstance(placement.ptr(), py_refs().shard_type);
    if (is_shard < 0) {
      throw py::error_already_set();  // before any further call into Python
    }
    if (is_shard == 1) {
      dims.push_back(placement.attr("dim").cast<int64_t>());
    }
  }
  return dims;
}

std::optional<ViewShape> view_shape_of(const OpDescriptor& op, PyObject* args) {
  const std::optional<size_t> index = op.view_shape_argument();
  if (!index || PyTuple_GET_SIZE(args) != static_cast<Py_ssize_t>(*index) + 1 ||
      Py_TYPE(PyTuple_GET_ITEM(args, 0)) != py_refs().dtensor_type) {
    return std::nullopt;
  }
  PyObject* self = PyTuple_GET_ITEM(args, 0);
  const std::optional<ViewShape> requested = exact_int_sequence(PyTuple_GET_ITEM(args, *index));
  if (!requested) {
    return std::nullopt;
  }
  const at::Tensor& global = THPVariable_Unpack(self);
  const at::Tensor& local = THPVariable_Unpack(dtensor_local_tensor(self));
  const std::optional<ViewShape> output = infer_view_shape(global.numel(), *requested);
  if (!output) {
    return std::nullopt;
  }
  const std::optional<ViewDimGroups> groups = view_dim_groups(global.sizes(), *output);
  if (!groups || local.dim() != global.dim()) {
    return std::nullopt;
  }
  const auto sharded = sharded_dims(dtensor_spec(self));
  ViewShape shape = *output;
  for (const ViewDimGroup& group : *groups) {
    if (group.keeps_dim()) {
      shape[group.output_begin] = local.size(group.input_begin);
      continue;
    }
    for (uint32_t i = group.input_begin; i < group.input_begin + group.input_count; ++i) {
      if (std::find(sharded.begin(), sharded.end(), static_cast<int64_t>(i)) != sharded.end()) {
        return std::nullopt;
      }
    }
  }
  return shape;
}

// Every placement of the spec is a Replicate.
bool replicated(py::handle spec) {
  for (py::handle placement : py::tuple(spec.attr(py_refs().str_placements))) {
    if (PyObject_IsInstance(placement.ptr(), py_refs().replicate_type) != 1) {
      if (PyErr_Occurred()) {
        throw py::error_already_set();
      }
      return false;
    }
  }
  return true;
}

// The DTensor a redistribution moves in this call, or nullptr.
PyObject* redistributed_dtensor(const Redistribution& redistribution, PyObject* args) {
  if (static_cast<Py_ssize_t>(redistribution.position) >= PyTuple_GET_SIZE(args)) {
    return nullptr;
  }
  PyObject* arg = PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(redistribution.position));
  if (redistribution.item) {
    if ((!PyList_Check(arg) && !PyTuple_Check(arg)) ||
        static_cast<Py_ssize_t>(*redistribution.item) >= PySequence_Fast_GET_SIZE(arg)) {
      return nullptr;
    }
    arg = PySequence_Fast_ITEMS(arg)[*redistribution.item];
  }
  return Py_TYPE(arg) == py_refs().dtensor_type ? arg : nullptr;
}

bool replayable(const OpDescriptor& op, const RunLocally& stock, PyObject* args) {
  if (stock.changed_arguments.size() == 1) {
    if (const auto* replacement = std::get_if<Replacement>(&stock.changed_arguments[0])) {
      if (op.view_shape_argument() != replacement->position) {
        return false;
      }
      const std::optional<ViewShape> ours = view_shape_of(op, args);
      return ours && exact_int_sequence(replacement->value.ptr()) == ours;
    }
  }
  if (op.has_size_arguments()) {
    return false;
  }
  for (const ChangedArgument& change : stock.changed_arguments) {
    const auto* redistribution = std::get_if<Redistribution>(&change);
    if (redistribution == nullptr || !replicated(redistribution->from_spec)) {
      return false;
    }
  }
  return true;
}

std::optional<RunLocally> replayed(const OpDescriptor& op, const RunLocally& decided, PyObject* args) {
  std::vector<ChangedArgument> changed;
  changed.reserve(decided.changed_arguments.size());
  for (const ChangedArgument& change : decided.changed_arguments) {
    if (const auto* redistribution = std::get_if<Redistribution>(&change)) {
      PyObject* dtensor = redistributed_dtensor(*redistribution, args);
      if (dtensor == nullptr) {
        return std::nullopt;
      }
      py::handle from = dtensor_spec(dtensor);
      py::object to = spec_like(redistribution->to_spec, from.attr(py_refs().str_tensor_meta));
      changed.emplace_back(Redistribution{redistribution->position, redistribution->item,
                                          py::reinterpret_borrow<py::object>(from), std::move(to),
                                          redistribution->all_reduce});
      continue;
    }
    const std::optional<ViewShape> shape = view_shape_of(op, args);
    if (!shape) {
      return std::nullopt;
    }
    changed.emplace_back(Replacement{std::get<Replacement>(change).position, int_tuple(*shape)});
  }
  return RunLocally::redistributed(std::move(changed), decided.positional_count);
}

} // namespace

// In both, a Python error leaves the call to stock's propagation, unless it
// is an interrupt, which the call must raise.
Outcome<bool> changes_are_replayable(const OpDescriptor& op, const RunLocally& stock, PyObject* args) {
  Outcome<bool> answer = catch_python_errors([&]() -> Outcome<bool> { return replayable(op, stock, args); });
  if (answer || clear_unless_interrupt()) {
    return answer;
  }
  return false;
}

Outcome<std::optional<RunLocally>> replay_changes(const OpDescriptor& op, const RunLocally& decided,
                                                  PyObject* args) {
  if (decided.changed_arguments.empty()) {
    return std::optional<RunLocally>(RunLocally::as_called());
  }
  Outcome<std::optional<RunLocally>> changes = catch_python_errors(
      [&]() -> Outcome<std::optional<RunLocally>> { return replayed(op, decided, args); });
  if (changes || clear_unless_interrupt()) {
    return changes;
  }
  return std::optional<RunLocally>(std::nullopt);
}

} // namespace torchshard
