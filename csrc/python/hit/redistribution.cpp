#include "csrc/python/hit/redistribution.h"

#include "csrc/python/hit/all_reduce.h"
#include "csrc/python/hit/collective_output.h"
#include "csrc/python/interop/py_refs.h"
#include "csrc/python/interop/python_errors.h"

#include <torch/csrc/autograd/python_variable.h>

#include <array>

namespace torchshard {
namespace {

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

// The argument's local tensor, moved to its target spec.
py::object redistributed_local(const Redistribution& redistribution, PyObject* dtensor) {
  release_let_go_outputs();
  if (redistribution.all_reduce && !native_all_reduce_unavailable()) {
    const at::Tensor& local = THPVariable_Unpack(dtensor_local_tensor(dtensor));
    return py::reinterpret_steal<py::object>(
        THPVariable_Wrap(run_native_all_reduce(*redistribution.all_reduce, local)));
  }
  PyObject* input_local = dtensor_local_tensor(dtensor);
  std::array<PyObject*, 3> call_args = {input_local, redistribution.from_spec.ptr(),
                                        redistribution.to_spec.ptr()};
  auto local = py::reinterpret_steal<py::object>(PyObject_Vectorcall(
      py_refs().redistribute_local_tensor, call_args.data(), call_args.size(), nullptr));
  if (!local) {
    throw py::error_already_set();
  }
  // The hit drops `local` microseconds after the collective's wait returned,
  // often before the backend's thread has let go of its output.
  return local_safe_to_drop(std::move(local), input_local);
}

// Sets overrides[position] (a local tensor, or for a list argument a copy of
// the caller's list with this item replaced: the local call unwraps DTensor
// and plain items alike).
void apply_redistribution(const Redistribution& redistribution, PyObject* args,
                          std::vector<py::object>& overrides) {
  PyObject* arg = PyTuple_GET_ITEM(args, static_cast<Py_ssize_t>(redistribution.position));
  PyObject* dtensor = redistribution.item ? PySequence_Fast_ITEMS(arg)[*redistribution.item] : arg;
  py::object local = redistributed_local(redistribution, dtensor);
  py::object& slot = overrides[redistribution.position];
  if (!redistribution.item) {
    slot = std::move(local);
    return;
  }
  if (!slot) {
    slot = py::reinterpret_steal<py::object>(PySequence_List(arg));
    if (!slot) {
      throw py::error_already_set();
    }
  }
  if (PyList_SetItem(slot.ptr(), static_cast<Py_ssize_t>(*redistribution.item), local.release().ptr()) != 0) {
    throw py::error_already_set();
  }
}

} // namespace

Outcome<std::vector<py::object>> changed_local_arguments(const RunLocally& step, PyObject* args) {
  return catch_python_errors([&]() -> Outcome<std::vector<py::object>> {
    std::vector<py::object> overrides(step.positional_count);
    bool context_checked = false;
    for (const ChangedArgument& changed : step.changed_arguments) {
      if (const auto* replacement = std::get_if<Replacement>(&changed)) {
        overrides[replacement->position] = replacement->value;
        continue;
      }
      if (!context_checked) {
        if (explicit_redistribution_active()) {
          return Failure::decline(DeclineReason::kNeedsRedistribute);
        }
        context_checked = true;
      }
      apply_redistribution(std::get<Redistribution>(changed), args, overrides);
    }
    return overrides;
  });
}

} // namespace torchshard
