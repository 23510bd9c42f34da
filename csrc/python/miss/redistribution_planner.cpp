#include "csrc/python/miss/redistribution_planner.h"

#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"
#include "csrc/python/miss/all_reduce_planner.h"

namespace torchshard {
namespace {

// Whether a replaced non-tensor value at `position` is pinned down by the
// key (keyed by value), so every hit of this entry passes the same one.
bool keyed_by_value(const OpDescriptor& op, size_t position) {
  return op.is_static_positional(position) && !op.value_blind_scalars();
}

// Where each leaf of stock's flattened arguments comes from: a positional
// argument, or an item of a list/tuple argument when stock flattened them
// with pytree (foreach ops). Empty if the arguments nest deeper than that.
struct Leaf {
  size_t position;
  std::optional<size_t> item;
};

std::vector<Leaf> argument_leaves(PyObject* args, bool flattened) {
  std::vector<Leaf> leaves;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); ++i) {
    PyObject* arg = PyTuple_GET_ITEM(args, i);
    if (!flattened || !(PyList_Check(arg) || PyTuple_Check(arg))) {
      leaves.push_back({static_cast<size_t>(i), std::nullopt});
      continue;
    }
    for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(arg); ++j) {
      PyObject* item = PySequence_Fast_ITEMS(arg)[j];
      if (PyList_Check(item) || PyTuple_Check(item) || PyDict_Check(item)) {
        return {};
      }
      leaves.push_back({static_cast<size_t>(i), static_cast<size_t>(j)});
    }
  }
  return leaves;
}

PyObject* leaf_value(PyObject* args, const Leaf& leaf) {
  PyObject* arg = PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(leaf.position));
  return leaf.item ? PySequence_Fast_ITEMS(arg)[*leaf.item] : arg;
}

Outcome<RunLocally> plan(const OpDescriptor& op, py::handle op_info, py::handle sharding,
                         PyObject* args, PyObject* kwargs) {
  const auto decline = Failure::decline(DeclineReason::kNeedsRedistribute);
  if (op.kind() == OpKind::kOutVariant) {
    return decline;
  }
  py::object suggested = sharding.attr("redistribute_schema");
  if (suggested.is_none() || suggested.attr("op").ptr() != op.overload()) {
    return decline;  // no schema, or the op was rewritten (squeeze -> squeeze.dims)
  }
  const bool flattened = !op_info.attr("args_tree_spec").is_none();
  const bool use_values = sharding.attr("use_val_from_redistribute_schema").cast<bool>();
  auto current = py::tuple(op_info.attr("flat_args_schema"));
  auto target = py::tuple(suggested.attr("args_schema"));
  if (flattened) {
    target = py::tuple(py::module_::import("torch.utils._pytree").attr("tree_leaves")(target));
  }
  const std::vector<Leaf> leaves = argument_leaves(args, flattened);
  if (leaves.size() != current.size() || target.size() < current.size() ||
      ((!use_values || flattened) && target.size() != current.size()) ||
      target.size() > op.schema().arguments().size() + (flattened ? current.size() : 0)) {
    return decline;
  }
  PyTypeObject* spec_type = py_refs().dtensor_spec_type;
  std::vector<ChangedArgument> changed;
  for (size_t i = 0; i < target.size(); ++i) {
    py::handle to = target[i];
    if (i >= current.size()) {  // an argument the suggested schema appends
      if (!keyed_by_value(op, i) || op.argument_value(args, kwargs, i) != nullptr) {
        return decline;
      }
      changed.emplace_back(Replacement{i, py::reinterpret_borrow<py::object>(to)});
      continue;
    }
    py::handle from = current[i];
    const Leaf& leaf = leaves[i];
    if (Py_TYPE(from.ptr()) == spec_type) {
      if (from.equal(to)) {
        continue;
      }
      if (Py_TYPE(leaf_value(args, leaf)) != py_refs().dtensor_type) {
        return decline;  // a plain tensor stock replicated implicitly
      }
      if (leaf.position == 0 && op.kind() == OpKind::kInplace) {
        return decline;  // the written tensor itself would be replaced
      }
      Outcome<std::optional<NativeAllReduce>> all_reduce = plan_native_all_reduce(from, to);
      if (!all_reduce) {
        return all_reduce.failure();
      }
      changed.emplace_back(Redistribution{leaf.position, leaf.item,
                                          py::reinterpret_borrow<py::object>(from),
                                          py::reinterpret_borrow<py::object>(to),
                                          std::move(all_reduce).value()});
    } else if (use_values && !from.equal(to)) {
      if (leaf.item || !keyed_by_value(op, i)) {
        return decline;
      }
      changed.emplace_back(Replacement{i, py::reinterpret_borrow<py::object>(to)});
    }
  }
  const size_t positional_count =
      flattened ? static_cast<size_t>(PyTuple_GET_SIZE(args)) : target.size();
  return RunLocally::redistributed(std::move(changed), positional_count);
}

} // namespace

Outcome<RunLocally> plan_redistribution(const OpDescriptor& op, py::handle op_info,
                                        py::handle sharding, PyObject* args, PyObject* kwargs) {
  return catch_python_errors([&] { return plan(op, op_info, sharding, args, kwargs); });
}

} // namespace torchshard
