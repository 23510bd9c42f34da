#include "csrc/python/local_redistribution.h"

#include "csrc/python/py_refs.h"

#include <array>

namespace torchshard {
namespace {

// Whether a replaced non-tensor value at `position` is pinned down by the
// key (keyed by value), so every hit of this entry passes the same one.
bool keyed_by_value(const OpDescriptor& op, size_t position) {
  return op.is_static_positional(position) && !op.value_blind_scalars();
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
  if (!op_info.attr("args_tree_spec").is_none()) {
    return kDecline;  // pytree-flattened arguments (lists)
  }
  const bool use_values = sharding.attr("use_val_from_redistribute_schema").cast<bool>();
  auto current = py::tuple(op_info.attr("flat_args_schema"));
  auto target = py::tuple(suggested.attr("args_schema"));
  if (target.size() < current.size() || (!use_values && target.size() != current.size()) ||
      current.size() != static_cast<size_t>(PyTuple_GET_SIZE(args)) ||
      target.size() > op.schema().arguments().size()) {
    return kDecline;
  }
  PyTypeObject* spec_type = py_refs().dtensor_spec_type;
  for (size_t i = 0; i < target.size(); ++i) {
    py::handle to = target[i];
    if (i >= current.size()) {  // an argument the suggested schema appends
      if (!keyed_by_value(op, i) || op.argument_value(args, kwargs, i) != nullptr) {
        return kDecline;
      }
      entry.local_arguments.push_back({i, py::reinterpret_borrow<py::object>(to), {}, {}});
      continue;
    }
    py::handle from = current[i];
    if (Py_TYPE(from.ptr()) == spec_type) {
      if (!from.equal(to)) {
        if (Py_TYPE(PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(i))) != py_refs().dtensor_type) {
          return kDecline;  // a plain tensor stock replicated implicitly
        }
        if (i == 0 && op.kind() == OpKind::kInplace) {
          return kDecline;  // the written tensor itself would be replaced
        }
        entry.local_arguments.push_back(
            {i, {}, py::reinterpret_borrow<py::object>(from), py::reinterpret_borrow<py::object>(to)});
      }
    } else if (use_values && !from.equal(to)) {
      if (!keyed_by_value(op, i)) {
        return kDecline;
      }
      entry.local_arguments.push_back({i, py::reinterpret_borrow<py::object>(to), {}, {}});
    }
  }
  entry.local_positional_count = target.size();
  return std::nullopt;
}

bool local_arguments_for_call(const CacheEntry& entry, PyObject* args,
                              std::vector<py::object>& overrides, DeclineReason* reason) {
  const PyRefs& refs = py_refs();
  overrides.assign(entry.local_positional_count, py::object());
  for (const LocalArgument& argument : entry.local_arguments) {
    if (argument.replacement) {
      overrides[argument.position] = argument.replacement;
      continue;
    }
    // An active ExplicitRedistributionContext must observe (and may refuse)
    // every implicit redistribution: leave those calls to stock.
    PyObject* active = PyObject_GetAttr(refs.explicit_redistribution_state, refs.str_active);
    if (active == nullptr) {
      PyErr_Clear();
    } else {
      const bool observed = active != Py_None;
      Py_DECREF(active);
      if (observed) {
        *reason = DeclineReason::kNeedsRedistribute;
        return false;
      }
    }
    PyObject* dtensor = PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(argument.position));
    std::array<PyObject*, 3> call_args = {dtensor_local_tensor(dtensor), argument.from_spec.ptr(),
                                          argument.to_spec.ptr()};
    PyObject* local = PyObject_Vectorcall(refs.redistribute_local_tensor, call_args.data(),
                                          call_args.size(), nullptr);
    if (local == nullptr) {
      throw py::error_already_set();
    }
    overrides[argument.position] = py::reinterpret_steal<py::object>(local);
  }
  return true;
}

} // namespace torchshard
