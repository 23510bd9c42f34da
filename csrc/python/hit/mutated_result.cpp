#include "csrc/python/hit/mutated_result.h"

#include "csrc/core/assertions.h"
#include "csrc/python/interop/py_refs.h"

#include <array>

namespace torchshard {
namespace {

// DTensor._spec = spec, as a plain slot store (what `dt._spec = spec` does).
void set_dtensor_spec(PyObject* dtensor, PyObject* spec) {
  PyObject** slot = slot_address(dtensor, py_refs().spec_offset);
  Py_INCREF(spec);
  Py_XSETREF(*slot, spec);
}

Outcome<py::object> steal_result(PyObject* result) {
  if (result == nullptr) {
    return Failure::python_error();
  }
  return py::reinterpret_steal<py::object>(result);
}

} // namespace

Outcome<py::object> inplace_result(const ReturnInplace& plan, PyObject* func, PyObject* args,
                                   PyObject* kwargs) {
  if (plan.kind == ReturnInplace::Kind::kNone) {
    return py::none();
  }
  PyObject* self = PyTuple_GET_ITEM(args, 0);
  if (plan.kind == ReturnInplace::Kind::kSelf) {
    return py::reinterpret_borrow<py::object>(self);
  }
  set_dtensor_spec(self, plan.new_spec.ptr());
  // Rare (the placements of an in-place op's input changed): hand the result
  // to the very function stock uses, which also fixes inplace_view metadata.
  auto kwargs_dict = kwargs != nullptr ? py::reinterpret_borrow<py::object>(kwargs)
                                       : py::reinterpret_steal<py::object>(PyDict_New());
  if (!kwargs_dict) {
    return Failure::python_error();
  }
  std::array<PyObject*, 4> call_args = {func, args, kwargs_dict.ptr(), self};
  return steal_result(PyObject_Vectorcall(py_refs().return_and_correct_aliasing, call_args.data(),
                                          call_args.size(), nullptr));
}

Outcome<py::object> out_arguments_result(const OpDescriptor& op, const ReturnOutArguments& plan,
                                         PyObject* args, PyObject* kwargs) {
  const auto& out_arguments = op.out_arguments();
  TORCHSHARD_ASSERT(plan.specs.size() == out_arguments.size());
  const auto count = static_cast<Py_ssize_t>(out_arguments.size());
  py::object tuple;
  if (count != 1) {
    tuple = py::reinterpret_steal<py::object>(PyTuple_New(count));
    if (!tuple) {
      return Failure::python_error();
    }
  }
  PyObject* out = nullptr;
  for (Py_ssize_t i = 0; i < count; ++i) {
    // The miss checked that every out= argument is a DTensor keyword
    // argument; the key (which encodes keyword names and specs) keeps it so.
    out = op.argument_value(args, kwargs, out_arguments[i]);
    TORCHSHARD_ASSERT(out != nullptr && Py_TYPE(out) == py_refs().dtensor_type);
    set_dtensor_spec(out, plan.specs[i].ptr());
    if (tuple) {
      PyTuple_SET_ITEM(tuple.ptr(), i, Py_NewRef(out));
    }
  }
  return tuple ? tuple : py::reinterpret_borrow<py::object>(out);
}

} // namespace torchshard
