#include "csrc/python/local_redistribution.h"

#include "csrc/python/py_refs.h"

#include <torch/csrc/autograd/python_variable.h>

#include <array>

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

// Whether an ExplicitRedistributionContext is open on this thread.
bool explicit_redistribution_active() {
  const PyRefs& refs = py_refs();
  PyObject* active = PyObject_GetAttr(refs.explicit_redistribution_state, refs.str_active);
  if (active == nullptr) {
    PyErr_Clear();  // never entered on this thread: no _active attribute yet
    return false;
  }
  const bool open = active != Py_None;
  Py_DECREF(active);
  return open;
}

PyObject* leaf_value(PyObject* args, const Leaf& leaf) {
  PyObject* arg = PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(leaf.position));
  return leaf.item ? PySequence_Fast_ITEMS(arg)[*leaf.item] : arg;
}

} // namespace

std::optional<DeclineReason> plan_local_redistribution(const OpDescriptor& op, py::handle op_info,
                                                       py::handle sharding, PyObject* args,
                                                       PyObject* kwargs, CacheEntry& entry) {
  constexpr auto kDecline = DeclineReason::kNeedsRedistribute;
  if (op.kind() == OpKind::kOutVariant) {
    return kDecline;
  }
  py::object suggested = sharding.attr("redistribute_schema");
  if (suggested.is_none() || suggested.attr("op").ptr() != op.overload()) {
    return kDecline;  // no schema, or the op was rewritten (squeeze -> squeeze.dims)
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
    return kDecline;
  }
  PyTypeObject* spec_type = py_refs().dtensor_spec_type;
  for (size_t i = 0; i < target.size(); ++i) {
    py::handle to = target[i];
    if (i >= current.size()) {  // an argument the suggested schema appends
      if (!keyed_by_value(op, i) || op.argument_value(args, kwargs, i) != nullptr) {
        return kDecline;
      }
      entry.local_arguments.push_back({i, std::nullopt, py::reinterpret_borrow<py::object>(to), {}, {}, {}});
      continue;
    }
    py::handle from = current[i];
    const Leaf& leaf = leaves[i];
    if (Py_TYPE(from.ptr()) == spec_type) {
      if (!from.equal(to)) {
        if (Py_TYPE(leaf_value(args, leaf)) != py_refs().dtensor_type) {
          return kDecline;  // a plain tensor stock replicated implicitly
        }
        if (leaf.position == 0 && op.kind() == OpKind::kInplace) {
          return kDecline;  // the written tensor itself would be replaced
        }
        entry.local_arguments.push_back({leaf.position, leaf.item, {},
                                         py::reinterpret_borrow<py::object>(from),
                                         py::reinterpret_borrow<py::object>(to),
                                         plan_native_all_reduce(from, to)});
      }
    } else if (use_values && !from.equal(to)) {
      if (leaf.item || !keyed_by_value(op, i)) {
        return kDecline;
      }
      entry.local_arguments.push_back({i, std::nullopt, py::reinterpret_borrow<py::object>(to), {}, {}, {}});
    }
  }
  entry.local_positional_count = flattened ? static_cast<size_t>(PyTuple_GET_SIZE(args)) : target.size();
  return std::nullopt;
}

bool local_arguments_for_call(const CacheEntry& entry, PyObject* args,
                              std::vector<py::object>& overrides, DeclineReason* reason) {
  const PyRefs& refs = py_refs();
  overrides.assign(entry.local_positional_count, py::object());
  bool context_checked = false;
  for (const LocalArgument& argument : entry.local_arguments) {
    if (argument.replacement) {
      overrides[argument.position] = argument.replacement;
      continue;
    }
    if (!context_checked) {
      // An open ExplicitRedistributionContext must observe (and may refuse)
      // every implicit redistribution: leave the call to stock.
      if (explicit_redistribution_active()) {
        *reason = DeclineReason::kNeedsRedistribute;
        return false;
      }
      context_checked = true;
    }
    PyObject* arg = PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(argument.position));
    PyObject* dtensor = argument.item ? PySequence_Fast_ITEMS(arg)[*argument.item] : arg;
    py::object local;
    if (argument.native_all_reduce && !native_all_reduce_unavailable()) {
      local = py::reinterpret_steal<py::object>(THPVariable_Wrap(
          run_native_all_reduce(*argument.native_all_reduce, THPVariable_Unpack(dtensor_local_tensor(dtensor)))));
    } else {
      std::array<PyObject*, 3> call_args = {dtensor_local_tensor(dtensor), argument.from_spec.ptr(),
                                            argument.to_spec.ptr()};
      local = py::reinterpret_steal<py::object>(PyObject_Vectorcall(
          refs.redistribute_local_tensor, call_args.data(), call_args.size(), nullptr));
    }
    if (!local) {
      throw py::error_already_set();
    }
    if (!argument.item) {
      overrides[argument.position] = std::move(local);
      continue;
    }
    // A list argument: a copy of the caller's list with this item replaced
    // (the local call unwraps DTensor and plain items alike).
    py::object& list = overrides[argument.position];
    if (!list) {
      list = py::reinterpret_steal<py::object>(PySequence_List(arg));
      if (!list) {
        throw py::error_already_set();
      }
    }
    if (PyList_SetItem(list.ptr(), static_cast<Py_ssize_t>(*argument.item), local.release().ptr()) != 0) {
      throw py::error_already_set();
    }
  }
  return true;
}

} // namespace torchshard
